"""Converters between protobuf messages and the domain's values, in both directions.

Requests' enums and timestamps are checked here (InvalidArgument for a value the domain
has no word for); replies are built from the domain's frozen values.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from toolvault import sandbox
from toolvault.server.domain.access import KeyInfo, Role
from toolvault.server.domain.agents import AgentDefinition, AgentInfo, Chain, ToolInfo
from toolvault.server.domain.audit import AuditEventInfo
from toolvault.server.domain.errors import InvalidArgument
from toolvault.server.domain.executions import ExecutionInfo, ExecutionStatus, FileDirection
from toolvault.server.domain.functions import FunctionInfo, Isolation, VersionInfo
from toolvault.server.domain.secrets import SecretInfo
from toolvault.server.domain.stats import FunctionStatsInfo
from toolvault.v1 import access_pb2, agent_pb2, execution_pb2, function_pb2, secret_pb2

_STATUS_PREFIX = "EXECUTION_STATUS_"
_ISOLATION_PREFIX = "ISOLATION_"


def timestamp(value: dt.datetime) -> Timestamp:
    """A datetime as a protobuf Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def optional_datetime(message: Message, field: str) -> dt.datetime | None:
    """A Timestamp field as an aware UTC datetime, or None when it is unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    try:
        return stamp.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError) as e:
        raise InvalidArgument(
            f"{field} is not a time between the years 1 and 9999 (seconds {stamp.seconds})"
        ) from e


def status_pb(status: ExecutionStatus) -> execution_pb2.ExecutionStatus.ValueType:
    """An execution status as its protobuf enum value."""
    return execution_pb2.ExecutionStatus.Value(_STATUS_PREFIX + status)


def status_filter(value: int) -> ExecutionStatus | None:
    """A request's status filter; None for EXECUTION_STATUS_UNSPECIFIED (any)."""
    if value == execution_pb2.EXECUTION_STATUS_UNSPECIFIED:
        return None
    try:
        name = execution_pb2.ExecutionStatus.Name(value)  # type: ignore[arg-type]
    except ValueError as e:
        raise InvalidArgument(f"status {value} is not an ExecutionStatus") from e
    return ExecutionStatus(name.removeprefix(_STATUS_PREFIX))


def isolation(value: int) -> Isolation:
    """A publish request's isolation; ISOLATION_UNSPECIFIED is the default, warm."""
    if value == execution_pb2.ISOLATION_UNSPECIFIED:
        return Isolation.WARM
    try:
        name = execution_pb2.Isolation.Name(value)  # type: ignore[arg-type]
    except ValueError as e:
        raise InvalidArgument(
            f"isolation {value} is not an Isolation (ISOLATION_WARM or ISOLATION_FRESH)"
        ) from e
    return Isolation[name.removeprefix(_ISOLATION_PREFIX)]


def version_pb(info: VersionInfo, *, with_source: bool) -> function_pb2.FunctionVersion:
    """A version as a reply carries it; lists leave the source out."""
    content = info.content
    return function_pb2.FunctionVersion(
        name=info.name,
        version=info.version,
        sha256=info.sha256,
        source=content.source if with_source else "",
        entrypoint=content.entrypoint,
        description=content.description,
        input_schema_json=content.input_schema or "",
        output_schema_json=content.output_schema or "",
        limits=function_pb2.Limits(
            timeout_ms=content.limits.timeout_ms,
            memory_mb=content.limits.memory_mb,
            max_output_bytes=content.limits.max_output_bytes,
            max_concurrency=content.max_concurrency,
        ),
        allowed_imports=content.allowed_imports,
        create_time=timestamp(info.created_at),
        deterministic=content.deterministic,
        isolation=execution_pb2.Isolation.Value(_ISOLATION_PREFIX + content.isolation.name),
        egress=content.egress,
        secrets=content.secrets,
    )


def function_pb(info: FunctionInfo) -> function_pb2.Function:
    """A function as a reply carries it."""
    return function_pb2.Function(
        name=info.name,
        latest_version=info.latest_version,
        aliases=info.aliases,
        description=info.description,
        create_time=timestamp(info.created_at),
        update_time=timestamp(info.updated_at),
    )


def execution_pb(info: ExecutionInfo) -> execution_pb2.Execution:
    """An execution as a reply carries it (with an error unless it went OK)."""
    error = None
    if info.status != ExecutionStatus.OK:
        error = execution_pb2.ExecutionError(
            type=info.error_type, message=info.error_message, traceback=info.traceback
        )
    return execution_pb2.Execution(
        id=str(info.id),
        function_name=info.function_name,
        version=info.version,
        sha256=info.sha256,
        status=status_pb(info.status),
        args_json=info.args_json,
        result_json=info.result_json,
        stdout=info.stdout,
        stderr=info.stderr,
        error=error,
        start_time=timestamp(info.start_time),
        duration_ms=info.duration_ms,
        cpu_time_ms=info.cpu_time_ms,
        peak_memory_bytes=info.peak_memory_bytes,
        caller=info.context.caller,
        args_truncated=info.args_truncated,
        result_truncated=info.result_truncated,
        agent=info.context.agent,
        agent_revision=info.context.agent_revision,
        conversation_id=info.context.conversation_id,
        chain_depth=info.context.chain_depth,
        cached=info.cached,
        cached_from=str(info.cached_from) if info.cached_from else "",
        trace_id=info.trace_id,
        isolation=(
            execution_pb2.ISOLATION_UNSPECIFIED
            if info.isolation is None
            else execution_pb2.Isolation.Value(_ISOLATION_PREFIX + info.isolation.name)
        ),
        egress=[execution_pb2.EgressRequest(**vars(record)) for record in info.egress],
        files=[
            execution_pb2.ExecutionFile(
                direction=_FILE_DIRECTIONS[file.direction],
                name=file.name,
                size=file.size,
                sha256=file.sha256,
            )
            for file in info.files
        ],
    )


_FILE_DIRECTIONS = {
    FileDirection.IN: execution_pb2.FILE_DIRECTION_IN,
    FileDirection.OUT: execution_pb2.FILE_DIRECTION_OUT,
}


def files(messages: Iterable[execution_pb2.File]) -> tuple[sandbox.File, ...]:
    """The files of a request."""
    return tuple(sandbox.File(message.name, message.content) for message in messages)


def files_pb(files: Iterable[sandbox.File]) -> list[execution_pb2.File]:
    """Files as a reply carries them."""
    return [execution_pb2.File(name=file.name, content=file.content) for file in files]


def stats_pb(info: FunctionStatsInfo) -> function_pb2.FunctionStats:
    """Function statistics as a reply carries them."""
    return function_pb2.FunctionStats(
        name=info.name,
        version=info.version,
        start_time_from=timestamp(info.start_from),
        start_time_to=timestamp(info.start_to),
        calls=info.calls,
        status_counts=[
            function_pb2.StatusCount(status=status_pb(status), count=count)
            for status, count in info.status_counts.items()
        ],
        success_rate=info.success_rate,
        p50_duration_ms=info.p50_duration_ms,
        p95_duration_ms=info.p95_duration_ms,
        p99_duration_ms=info.p99_duration_ms,
        max_peak_memory_bytes=info.max_peak_memory_bytes,
        p95_peak_memory_bytes=info.p95_peak_memory_bytes,
        error_counts=[
            function_pb2.ErrorTypeCount(type=error_type, count=count)
            for error_type, count in info.error_counts
        ],
        recent_failures=[
            function_pb2.FunctionFailure(
                execution_id=str(f.id),
                start_time=timestamp(f.start_time),
                version=f.version,
                status=status_pb(f.status),
                error_type=f.error_type,
                error_message=f.error_message,
            )
            for f in info.recent_failures
        ],
        cached_calls=info.cached_calls,
    )


def definition(spec: agent_pb2.AgentSpec) -> AgentDefinition:
    """The agent definition a request's spec describes (unset fields: defaults)."""
    return AgentDefinition(
        name=spec.name,
        description=spec.description,
        system_prompt=spec.system_prompt,
        model_settings=spec.model_settings_json,
        input_schema=spec.input_schema_json,
        output_schema=spec.output_schema_json,
        tools=tuple(spec.tools),
        capabilities=tuple(spec.capabilities),
        max_chain_depth=spec.max_chain_depth if spec.HasField("max_chain_depth") else None,
        enabled=spec.enabled if spec.HasField("enabled") else True,
    )


def agent_pb(info: AgentInfo, default_depth: int) -> agent_pb2.Agent:
    """An agent revision as a reply carries it, its chain depth limit spelt out."""
    definition = info.definition
    depth = definition.max_chain_depth
    return agent_pb2.Agent(
        spec=agent_pb2.AgentSpec(
            name=definition.name,
            description=definition.description,
            system_prompt=definition.system_prompt,
            model_settings_json=definition.model_settings,
            input_schema_json=definition.input_schema or "",
            output_schema_json=definition.output_schema or "",
            tools=definition.tools,
            capabilities=definition.capabilities,
            max_chain_depth=default_depth if depth is None else depth,
            enabled=definition.enabled,
        ),
        revision=info.revision,
        create_time=timestamp(info.created_at),
    )


def tool_pb(tool: ToolInfo) -> agent_pb2.ToolSpec:
    """A tool as a reply carries it."""
    return agent_pb2.ToolSpec(
        name=tool.name,
        description=tool.description,
        input_schema_json=tool.input_schema,
        output_schema_json=tool.output_schema or "",
        ref=tool.ref,
        version=tool.version.version,
        sha256=tool.version.sha256,
        open_world=bool(tool.version.content.egress),
    )


def chain(chain: agent_pb2.ChainContext) -> Chain:
    """A request's chain context."""
    return Chain(depth=chain.depth, root_agent=chain.root_agent)


_STRATEGIES = {
    agent_pb2.ROUTING_STRATEGY_UNSPECIFIED: "round_robin",
    agent_pb2.ROUTING_STRATEGY_ROUND_ROBIN: "round_robin",
    agent_pb2.ROUTING_STRATEGY_LEAST_LOADED: "least_loaded",
    agent_pb2.ROUTING_STRATEGY_NAMED: "named",
}


def strategy(value: agent_pb2.RoutingStrategy.ValueType) -> str:
    """A routing strategy's name (unspecified: round robin)."""
    name = _STRATEGIES.get(value)
    if name is None:
        raise InvalidArgument(f"strategy {value} is not a RoutingStrategy")
    return name


def key_pb(info: KeyInfo) -> access_pb2.ApiKey:
    """A key as a reply lists it."""
    return access_pb2.ApiKey(
        prefix=info.prefix,
        role=access_pb2.Role.Value(f"ROLE_{info.role.name}"),
        namespaces=info.namespaces or (),
        agent=info.agent,
        description=info.description,
        create_time=timestamp(info.created_at),
        created_by=info.created_by,
        revoke_time=timestamp(info.revoked_at) if info.revoked_at else None,
    )


def role(value: int) -> Role:
    """The role a request names; InvalidArgument for none or an unknown one."""
    if value == access_pb2.ROLE_UNSPECIFIED:
        raise InvalidArgument("role is required: admin, publisher, invoker or agent")
    try:
        name = access_pb2.Role.Name(value)  # type: ignore[arg-type]
    except ValueError as e:
        raise InvalidArgument(f"role {value} is not a Role") from e
    return Role[name.removeprefix("ROLE_")]


def audit_event_pb(info: AuditEventInfo) -> access_pb2.AuditEvent:
    """An audit event as a reply carries it."""
    return access_pb2.AuditEvent(
        id=info.id,
        time=timestamp(info.time),
        actor=info.actor,
        peer=info.peer,
        action=info.action,
        namespace=info.namespace,
        target=info.target,
        details_json=json.dumps(info.details, sort_keys=True),
    )


def secret_pb(info: SecretInfo) -> secret_pb2.Secret:
    """A secret as a reply lists it: never its value."""
    return secret_pb2.Secret(
        name=info.name,
        create_time=timestamp(info.created_at),
        update_time=timestamp(info.updated_at),
        updated_by=info.updated_by,
    )
