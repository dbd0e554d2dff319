"""The gRPC servicers: decode the request, call a domain service, encode the reply.

Domain errors become status codes here, in one table (``_STATUS_CODES``); any other
exception becomes INTERNAL with a generic message, and its traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.exc import SQLAlchemyError

from toolvault.server import auth, metrics
from toolvault.server.agents import AgentDefinition, AgentInfo, Agents, Chain, ToolInfo
from toolvault.server.audit import Actor, AuditEventInfo, AuditFilter, AuditLog
from toolvault.server.auth import KeyInfo, Keys, Role
from toolvault.server.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from toolvault.server.functions import FunctionStore, PublishRequest
from toolvault.server.invocations import (
    CallContext,
    ExecutionFilter,
    ExecutionInfo,
    History,
    Invocations,
)
from toolvault.server.stats import FunctionStatistics, FunctionStatsInfo, StatsQuery
from toolvault.server.store import FunctionInfo, VersionInfo
from toolvault.v1 import (
    access_pb2,
    access_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    execution_pb2,
    function_pb2,
    function_pb2_grpc,
    history_pb2,
    history_pb2_grpc,
    invocation_pb2,
    invocation_pb2_grpc,
)

log = logging.getLogger(__name__)

_STATUS_CODES: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_STATUS_PREFIX = "EXECUTION_STATUS_"

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]


def _rpc(method: Handler[S, Req, Resp]) -> Handler[S, Req, Resp]:
    """Map domain errors to status codes and hide unexpected ones behind INTERNAL."""

    @functools.wraps(method)
    async def handle(self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            if field := _field_with_nul(request):  # type: ignore[arg-type]
                # No name, text or JSON has a use for one; PostgreSQL cannot store it.
                raise InvalidArgument(f"{field} contains a NUL character")
            return await method(self, request, context)
        except DomainError as e:
            await context.abort(_STATUS_CODES[type(e)], str(e))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as e:
            if isinstance(e, SQLAlchemyError):
                metrics.DB_ERRORS.inc()
            log.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error: see the server log")
        raise AssertionError("abort returned")

    return handle


def _actor(context: grpc.aio.ServicerContext[Any, Any]) -> Actor:
    return auth.principal().actor(context.peer())


def _caller(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    caller = auth.principal()
    return context.peer() if caller is auth.ANONYMOUS else f"{caller.key} {context.peer()}"


def _field_with_nul(message: Message, prefix: str = "") -> str:
    """The path of the first string field holding a NUL character, or ""."""
    for field, value in message.ListFields():
        path = prefix + field.name
        items = value if field.is_repeated else (value,)
        for index, item in enumerate(items):
            where = f"{path}[{index}]" if field.is_repeated else path
            if isinstance(item, str) and "\x00" in item:
                return where
            if isinstance(item, Message) and (found := _field_with_nul(item, where + ".")):
                return found
    return ""


def _timestamp(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _optional_datetime(message: Message, field: str) -> dt.datetime | None:
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


def _status_pb(status: str) -> execution_pb2.ExecutionStatus.ValueType:
    return execution_pb2.ExecutionStatus.Value(_STATUS_PREFIX + status)


def _status_filter(value: int) -> str:
    if value == execution_pb2.EXECUTION_STATUS_UNSPECIFIED:
        return ""
    try:
        return execution_pb2.ExecutionStatus.Name(value).removeprefix(_STATUS_PREFIX)  # type: ignore[arg-type]
    except ValueError as e:
        raise InvalidArgument(f"status {value} is not an ExecutionStatus") from e


def _version_pb(info: VersionInfo, *, with_source: bool) -> function_pb2.FunctionVersion:
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
        create_time=_timestamp(info.created_at),
        deterministic=content.deterministic,
    )


def _function_pb(info: FunctionInfo) -> function_pb2.Function:
    return function_pb2.Function(
        name=info.name,
        latest_version=info.latest_version,
        aliases=info.aliases,
        description=info.description,
        create_time=_timestamp(info.created_at),
        update_time=_timestamp(info.updated_at),
    )


def _execution_pb(info: ExecutionInfo) -> execution_pb2.Execution:
    error = None
    if info.status != "OK":
        error = execution_pb2.ExecutionError(
            type=info.error_type, message=info.error_message, traceback=info.traceback
        )
    return execution_pb2.Execution(
        id=str(info.id),
        function_name=info.function_name,
        version=info.version,
        sha256=info.sha256,
        status=_status_pb(info.status),
        args_json=info.args_json,
        result_json=info.result_json,
        stdout=info.stdout,
        stderr=info.stderr,
        error=error,
        start_time=_timestamp(info.start_time),
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
    )


def _stats_pb(info: FunctionStatsInfo) -> function_pb2.FunctionStats:
    return function_pb2.FunctionStats(
        name=info.name,
        version=info.version,
        start_time_from=_timestamp(info.start_from),
        start_time_to=_timestamp(info.start_to),
        calls=info.calls,
        status_counts=[
            function_pb2.StatusCount(status=_status_pb(status), count=count)
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
                start_time=_timestamp(f.start_time),
                version=f.version,
                status=_status_pb(f.status),
                error_type=f.error_type,
                error_message=f.error_message,
            )
            for f in info.recent_failures
        ],
        cached_calls=info.cached_calls,
    )


class FunctionServicer(function_pb2_grpc.FunctionServiceServicer):
    """FunctionService over :class:`FunctionStore` and :class:`FunctionStatistics`."""

    def __init__(self, functions: FunctionStore, statistics: FunctionStatistics) -> None:
        self._functions = functions
        self._statistics = statistics

    @_rpc
    async def PublishFunction(
        self,
        request: function_pb2.PublishFunctionRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.PublishFunctionRequest, function_pb2.PublishFunctionResponse
        ],
    ) -> function_pb2.PublishFunctionResponse:
        """See the .proto."""
        publish = PublishRequest(
            name=request.name,
            source=request.source,
            entrypoint=request.entrypoint,
            description=request.description,
            input_schema=request.input_schema_json,
            output_schema=request.output_schema_json,
            timeout_ms=request.limits.timeout_ms,
            memory_mb=request.limits.memory_mb,
            max_output_bytes=request.limits.max_output_bytes,
            allowed_imports=tuple(request.allowed_imports),
            max_concurrency=request.limits.max_concurrency,
            deterministic=request.deterministic,
        )
        version, created = await asyncio.to_thread(
            self._functions.publish, publish, actor=_actor(context)
        )
        return function_pb2.PublishFunctionResponse(
            version=_version_pb(version, with_source=True), created=created
        )

    @_rpc
    async def GetFunction(
        self,
        request: function_pb2.GetFunctionRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.GetFunctionRequest, function_pb2.GetFunctionResponse
        ],
    ) -> function_pb2.GetFunctionResponse:
        """See the .proto."""
        function, version = await asyncio.to_thread(self._functions.get, request.ref)
        return function_pb2.GetFunctionResponse(
            function=_function_pb(function), version=_version_pb(version, with_source=True)
        )

    @_rpc
    async def ListFunctions(
        self,
        request: function_pb2.ListFunctionsRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.ListFunctionsRequest, function_pb2.ListFunctionsResponse
        ],
    ) -> function_pb2.ListFunctionsResponse:
        """See the .proto."""
        functions, token = await asyncio.to_thread(
            self._functions.functions,
            scope=auth.principal().scope,
            size=request.page_size,
            token=request.page_token,
        )
        return function_pb2.ListFunctionsResponse(
            functions=[_function_pb(f) for f in functions], next_page_token=token
        )

    @_rpc
    async def ListFunctionVersions(
        self,
        request: function_pb2.ListFunctionVersionsRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.ListFunctionVersionsRequest, function_pb2.ListFunctionVersionsResponse
        ],
    ) -> function_pb2.ListFunctionVersionsResponse:
        """See the .proto."""
        versions, token = await asyncio.to_thread(
            self._functions.versions, request.name, size=request.page_size, token=request.page_token
        )
        return function_pb2.ListFunctionVersionsResponse(
            versions=[_version_pb(v, with_source=False) for v in versions], next_page_token=token
        )

    @_rpc
    async def SetAlias(
        self,
        request: function_pb2.SetAliasRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.SetAliasRequest, function_pb2.SetAliasResponse
        ],
    ) -> function_pb2.SetAliasResponse:
        """See the .proto."""
        function = await asyncio.to_thread(
            self._functions.set_alias,
            request.name,
            request.alias,
            request.version,
            actor=_actor(context),
        )
        return function_pb2.SetAliasResponse(function=_function_pb(function))

    @_rpc
    async def DeleteAlias(
        self,
        request: function_pb2.DeleteAliasRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.DeleteAliasRequest, function_pb2.DeleteAliasResponse
        ],
    ) -> function_pb2.DeleteAliasResponse:
        """See the .proto."""
        await asyncio.to_thread(
            self._functions.delete_alias, request.name, request.alias, actor=_actor(context)
        )
        return function_pb2.DeleteAliasResponse()

    @_rpc
    async def DeleteFunction(
        self,
        request: function_pb2.DeleteFunctionRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.DeleteFunctionRequest, function_pb2.DeleteFunctionResponse
        ],
    ) -> function_pb2.DeleteFunctionResponse:
        """See the .proto."""
        count = await asyncio.to_thread(self._functions.delete, request.name, actor=_actor(context))
        return function_pb2.DeleteFunctionResponse(deleted_versions=count)

    @_rpc
    async def GetFunctionStats(
        self,
        request: function_pb2.GetFunctionStatsRequest,
        context: grpc.aio.ServicerContext[
            function_pb2.GetFunctionStatsRequest, function_pb2.GetFunctionStatsResponse
        ],
    ) -> function_pb2.GetFunctionStatsResponse:
        """See the .proto."""
        query = StatsQuery(
            name=request.name,
            version=request.version,
            start_from=_optional_datetime(request, "start_time_from"),
            start_to=_optional_datetime(request, "start_time_to"),
            failure_limit=request.failure_limit,
        )
        info = await asyncio.to_thread(self._statistics.stats, query)
        return function_pb2.GetFunctionStatsResponse(stats=_stats_pb(info))


class InvocationServicer(invocation_pb2_grpc.InvocationServiceServicer):
    """InvocationService over :class:`Invocations`."""

    def __init__(self, invocations: Invocations) -> None:
        self._invocations = invocations

    @_rpc
    async def Invoke(
        self,
        request: invocation_pb2.InvokeRequest,
        context: grpc.aio.ServicerContext[
            invocation_pb2.InvokeRequest, invocation_pb2.InvokeResponse
        ],
    ) -> invocation_pb2.InvokeResponse:
        """See the .proto."""
        execution = await self._invocations.invoke(
            request.ref,
            request.args_json,
            CallContext(caller=_caller(context)),
            idempotency_key=request.idempotency_key,
        )
        return invocation_pb2.InvokeResponse(execution=_execution_pb(execution))


class HistoryServicer(history_pb2_grpc.HistoryServiceServicer):
    """HistoryService over :class:`History`."""

    def __init__(self, history: History) -> None:
        self._history = history

    @_rpc
    async def ListExecutions(
        self,
        request: history_pb2.ListExecutionsRequest,
        context: grpc.aio.ServicerContext[
            history_pb2.ListExecutionsRequest, history_pb2.ListExecutionsResponse
        ],
    ) -> history_pb2.ListExecutionsResponse:
        """See the .proto."""
        where = ExecutionFilter(
            function_name=request.function_name,
            status=_status_filter(request.status),
            version=request.version,
            start_from=_optional_datetime(request, "start_time_from"),
            start_to=_optional_datetime(request, "start_time_to"),
            agent=request.agent,
            conversation_id=request.conversation_id,
        )
        executions, token = await asyncio.to_thread(
            self._history.executions,
            where,
            scope=auth.principal().scope,
            size=request.page_size,
            token=request.page_token,
        )
        return history_pb2.ListExecutionsResponse(
            executions=[_execution_pb(e) for e in executions], next_page_token=token
        )

    @_rpc
    async def GetExecution(
        self,
        request: history_pb2.GetExecutionRequest,
        context: grpc.aio.ServicerContext[
            history_pb2.GetExecutionRequest, history_pb2.GetExecutionResponse
        ],
    ) -> history_pb2.GetExecutionResponse:
        """See the .proto."""
        execution = await asyncio.to_thread(
            self._history.get, request.id, scope=auth.principal().scope
        )
        return history_pb2.GetExecutionResponse(execution=_execution_pb(execution))


def _definition(spec: agent_pb2.AgentSpec) -> AgentDefinition:
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


def _agent_pb(info: AgentInfo, default_depth: int) -> agent_pb2.Agent:
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
        create_time=_timestamp(info.created_at),
    )


def _tool_pb(tool: ToolInfo) -> agent_pb2.ToolSpec:
    return agent_pb2.ToolSpec(
        name=tool.name,
        description=tool.description,
        input_schema_json=tool.input_schema,
        output_schema_json=tool.output_schema or "",
        ref=tool.ref,
        version=tool.version.version,
        sha256=tool.version.sha256,
    )


def _chain(chain: agent_pb2.ChainContext) -> Chain:
    return Chain(depth=chain.depth, root_agent=chain.root_agent)


_STRATEGIES = {
    agent_pb2.ROUTING_STRATEGY_UNSPECIFIED: "round_robin",
    agent_pb2.ROUTING_STRATEGY_ROUND_ROBIN: "round_robin",
    agent_pb2.ROUTING_STRATEGY_LEAST_LOADED: "least_loaded",
    agent_pb2.ROUTING_STRATEGY_NAMED: "named",
}


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """AgentService over :class:`Agents`."""

    def __init__(self, agents: Agents, default_depth: int) -> None:
        self._agents = agents
        self._default_depth = default_depth

    @_rpc
    async def CreateAgent(
        self,
        request: agent_pb2.CreateAgentRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.CreateAgentRequest, agent_pb2.CreateAgentResponse
        ],
    ) -> agent_pb2.CreateAgentResponse:
        """See the .proto."""
        info = await asyncio.to_thread(
            self._agents.create, _definition(request.spec), actor=_actor(context)
        )
        return agent_pb2.CreateAgentResponse(agent=_agent_pb(info, self._default_depth))

    @_rpc
    async def UpdateAgent(
        self,
        request: agent_pb2.UpdateAgentRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.UpdateAgentRequest, agent_pb2.UpdateAgentResponse
        ],
    ) -> agent_pb2.UpdateAgentResponse:
        """See the .proto."""
        info, changed = await asyncio.to_thread(
            self._agents.update,
            _definition(request.spec),
            allow_missing=request.allow_missing,
            actor=_actor(context),
        )
        return agent_pb2.UpdateAgentResponse(
            agent=_agent_pb(info, self._default_depth), changed=changed
        )

    @_rpc
    async def GetAgent(
        self,
        request: agent_pb2.GetAgentRequest,
        context: grpc.aio.ServicerContext[agent_pb2.GetAgentRequest, agent_pb2.GetAgentResponse],
    ) -> agent_pb2.GetAgentResponse:
        """See the .proto."""
        info = await asyncio.to_thread(self._agents.get, request.name, request.revision)
        return agent_pb2.GetAgentResponse(agent=_agent_pb(info, self._default_depth))

    @_rpc
    async def ListAgents(
        self,
        request: agent_pb2.ListAgentsRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.ListAgentsRequest, agent_pb2.ListAgentsResponse
        ],
    ) -> agent_pb2.ListAgentsResponse:
        """See the .proto."""
        infos, token = await asyncio.to_thread(
            self._agents.agents,
            capability=request.capability,
            scope=auth.principal().scope,
            size=request.page_size,
            token=request.page_token,
        )
        return agent_pb2.ListAgentsResponse(
            agents=[_agent_pb(i, self._default_depth) for i in infos], next_page_token=token
        )

    @_rpc
    async def ListAgentRevisions(
        self,
        request: agent_pb2.ListAgentRevisionsRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.ListAgentRevisionsRequest, agent_pb2.ListAgentRevisionsResponse
        ],
    ) -> agent_pb2.ListAgentRevisionsResponse:
        """See the .proto."""
        infos, token = await asyncio.to_thread(
            self._agents.revisions, request.name, size=request.page_size, token=request.page_token
        )
        return agent_pb2.ListAgentRevisionsResponse(
            agents=[_agent_pb(i, self._default_depth) for i in infos], next_page_token=token
        )

    @_rpc
    async def DeleteAgent(
        self,
        request: agent_pb2.DeleteAgentRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.DeleteAgentRequest, agent_pb2.DeleteAgentResponse
        ],
    ) -> agent_pb2.DeleteAgentResponse:
        """See the .proto."""
        count = await asyncio.to_thread(self._agents.delete, request.name, actor=_actor(context))
        return agent_pb2.DeleteAgentResponse(deleted_revisions=count)

    @_rpc
    async def ListAgentTools(
        self,
        request: agent_pb2.ListAgentToolsRequest,
        context: grpc.aio.ServicerContext[
            agent_pb2.ListAgentToolsRequest, agent_pb2.ListAgentToolsResponse
        ],
    ) -> agent_pb2.ListAgentToolsResponse:
        """See the .proto."""
        tools = await asyncio.to_thread(self._agents.tools, request.agent)
        return agent_pb2.ListAgentToolsResponse(tools=[_tool_pb(t) for t in tools])

    @_rpc
    async def CallTool(
        self,
        request: agent_pb2.CallToolRequest,
        context: grpc.aio.ServicerContext[agent_pb2.CallToolRequest, agent_pb2.CallToolResponse],
    ) -> agent_pb2.CallToolResponse:
        """See the .proto."""
        result = await self._agents.call_tool(
            request.agent,
            request.tool,
            request.arguments_json,
            conversation_id=request.conversation_id,
            chain=_chain(request.chain),
            caller=_caller(context),
        )
        return agent_pb2.CallToolResponse(
            execution=_execution_pb(result.execution), is_error=result.is_error, text=result.text
        )

    @_rpc
    async def RouteTask(
        self,
        request: agent_pb2.RouteTaskRequest,
        context: grpc.aio.ServicerContext[agent_pb2.RouteTaskRequest, agent_pb2.RouteTaskResponse],
    ) -> agent_pb2.RouteTaskResponse:
        """See the .proto."""
        strategy = _STRATEGIES.get(request.strategy)
        if strategy is None:
            raise InvalidArgument(f"strategy {request.strategy} is not a RoutingStrategy")
        info, chain = await asyncio.to_thread(
            self._agents.route,
            request.capability,
            request.input_json,
            strategy=strategy,
            named=request.agent,
            calling_agent=request.calling_agent,
            chain=_chain(request.chain),
            scope=auth.principal().scope,
        )
        return agent_pb2.RouteTaskResponse(
            agent=_agent_pb(info, self._default_depth),
            chain=agent_pb2.ChainContext(depth=chain.depth, root_agent=chain.root_agent),
        )


def _key_pb(info: KeyInfo) -> access_pb2.ApiKey:
    return access_pb2.ApiKey(
        prefix=info.prefix,
        role=access_pb2.Role.Value(f"ROLE_{info.role.name}"),
        namespaces=info.namespaces or (),
        agent=info.agent,
        description=info.description,
        create_time=_timestamp(info.created_at),
        created_by=info.created_by,
        revoke_time=_timestamp(info.revoked_at) if info.revoked_at else None,
    )


def _role(value: int) -> Role:
    if value == access_pb2.ROLE_UNSPECIFIED:
        raise InvalidArgument("role is required: admin, publisher, invoker or agent")
    try:
        name = access_pb2.Role.Name(value)  # type: ignore[arg-type]
    except ValueError as e:
        raise InvalidArgument(f"role {value} is not a Role") from e
    return Role[name.removeprefix("ROLE_")]


class KeyServicer(access_pb2_grpc.KeyServiceServicer):
    """KeyService over :class:`Keys`."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys

    @_rpc
    async def CreateKey(
        self,
        request: access_pb2.CreateKeyRequest,
        context: grpc.aio.ServicerContext[
            access_pb2.CreateKeyRequest, access_pb2.CreateKeyResponse
        ],
    ) -> access_pb2.CreateKeyResponse:
        """See the .proto."""
        secret, info = await asyncio.to_thread(
            self._keys.create,
            _role(request.role),
            namespaces=tuple(request.namespaces),
            agent=request.agent,
            description=request.description,
            actor=_actor(context),
        )
        return access_pb2.CreateKeyResponse(key=_key_pb(info), secret=secret)

    @_rpc
    async def ListKeys(
        self,
        request: access_pb2.ListKeysRequest,
        context: grpc.aio.ServicerContext[access_pb2.ListKeysRequest, access_pb2.ListKeysResponse],
    ) -> access_pb2.ListKeysResponse:
        """See the .proto."""
        keys, token = await asyncio.to_thread(
            self._keys.keys, size=request.page_size, token=request.page_token
        )
        return access_pb2.ListKeysResponse(keys=[_key_pb(k) for k in keys], next_page_token=token)

    @_rpc
    async def RevokeKey(
        self,
        request: access_pb2.RevokeKeyRequest,
        context: grpc.aio.ServicerContext[
            access_pb2.RevokeKeyRequest, access_pb2.RevokeKeyResponse
        ],
    ) -> access_pb2.RevokeKeyResponse:
        """See the .proto."""
        info = await asyncio.to_thread(self._keys.revoke, request.prefix, actor=_actor(context))
        return access_pb2.RevokeKeyResponse(key=_key_pb(info))


def _audit_event_pb(info: AuditEventInfo) -> access_pb2.AuditEvent:
    return access_pb2.AuditEvent(
        id=info.id,
        time=_timestamp(info.time),
        actor=info.actor,
        peer=info.peer,
        action=info.action,
        namespace=info.namespace,
        target=info.target,
        details_json=json.dumps(info.details, sort_keys=True),
    )


class AuditServicer(access_pb2_grpc.AuditServiceServicer):
    """AuditService over :class:`AuditLog`."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log

    @_rpc
    async def ListAuditEvents(
        self,
        request: access_pb2.ListAuditEventsRequest,
        context: grpc.aio.ServicerContext[
            access_pb2.ListAuditEventsRequest, access_pb2.ListAuditEventsResponse
        ],
    ) -> access_pb2.ListAuditEventsResponse:
        """See the .proto."""
        where = AuditFilter(
            actor=request.actor,
            action=request.action,
            target=request.target,
            start_from=_optional_datetime(request, "start_time_from"),
            start_to=_optional_datetime(request, "start_time_to"),
        )
        events, token = await asyncio.to_thread(
            self._log.events,
            where,
            scope=auth.principal().scope,
            size=request.page_size,
            token=request.page_token,
        )
        return access_pb2.ListAuditEventsResponse(
            events=[_audit_event_pb(e) for e in events], next_page_token=token
        )
