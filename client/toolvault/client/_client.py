"""The synchronous client: one method per operation, on top of the generated stubs.

`Client` builds request messages, sends them through `_call` (which, with `check_health`,
is the only place that catches `grpc.RpcError`, turning it into the SDK's exceptions),
follows page tokens for lists, and returns the frozen models of `_models` and
`_agent_models`. `check_health` probes a server the way an orchestrator does.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toolvault.client._access_models import ApiKey, AuditEvent, Role, Secret
from toolvault.client._agent_models import (
    Agent,
    AgentSpec,
    ChainContext,
    RoutedTask,
    RoutingStrategy,
    ToolResult,
    ToolSpec,
)
from toolvault.client._models import (
    Execution,
    ExecutionStatus,
    Function,
    FunctionStats,
    FunctionVersion,
    Isolation,
)
from toolvault.client.errors import InvalidArgument, from_rpc_error
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
    secret_pb2,
    secret_pb2_grpc,
)

__all__ = [
    "DEFAULT_MAX_ARGS_BYTES",
    "DEFAULT_MAX_SOURCE_BYTES",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_FILES_BYTES",
    "DEFAULT_TARGET",
    "TLS",
    "Client",
    "check_health",
]

DEFAULT_TARGET = "127.0.0.1:50051"
# The server caps pages at this size; asking for full pages saves round trips.
_MAX_PAGE_SIZE = 1000
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# The server's defaults of TOOLVAULT_MAX_ARGS_BYTES and TOOLVAULT_MAX_SOURCE_BYTES: larger
# arguments and sources are refused before they are sent, with the server's own message,
# instead of by the server's transport, whose message limit they can pass.
DEFAULT_MAX_ARGS_BYTES = 1024 * 1024
DEFAULT_MAX_SOURCE_BYTES = 256 * 1024
DEFAULT_MAX_FILES = 16
DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_FILES_BYTES = 8 * 1024 * 1024
# A target that resolves to several addresses (replicas behind a headless Service, or
# "ipv4:HOST:PORT,HOST:PORT") spreads calls over all of them; gRPC's default, pick_first,
# would send every call to one.
_LOAD_BALANCING: list[dict[str, Any]] = [{"round_robin": {}}]
# gRPC retries a call that failed with one of these codes before the server sent any
# response headers (so the server's handler did not answer it), with exponential backoff
# and its own jitter. Invoke is retried too: safe when the server refused the call before
# running it (UNAVAILABLE while starting or draining, RESOURCE_EXHAUSTED when full), and
# otherwise made safe by an idempotency key.
_RETRY_POLICY = [
    {
        "name": [
            {"service": service.full_name}
            for module in (
                function_pb2,
                invocation_pb2,
                history_pb2,
                agent_pb2,
                access_pb2,
                secret_pb2,
            )
            for service in module.DESCRIPTOR.services_by_name.values()
        ],
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
        },
    }
]


@dataclass(frozen=True)
class TLS:
    """How to reach a server over TLS: PEM bytes, as in `grpc.ssl_channel_credentials`.

    Attributes:
        root_certificates: The CA that signed the server's certificate; None trusts
            gRPC's default roots.
        certificate_chain: The client's certificate, for mutual TLS.
        private_key: The client certificate's key, for mutual TLS.
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None

    @classmethod
    def from_files(
        cls,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
    ) -> TLS:
        """Read the PEM files given (OSError if one cannot be read)."""
        return cls(*(Path(p).read_bytes() if p else None for p in (ca, cert, key)))


def _open_channel(
    target: str, *, tls: TLS | None = None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A channel to ``target``, over TLS when ``tls`` is given."""
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        tls.root_certificates, tls.private_key, tls.certificate_chain
    )
    return grpc.secure_channel(target, credentials, options=options)


def check_health(
    target: str = DEFAULT_TARGET,
    *,
    service: str = "",
    tls: TLS | None = None,
    timeout: float | None = None,
) -> str:
    """Ask a server's gRPC health service how it is: "SERVING", "NOT_SERVING", ...

    A probe, as an orchestrator's: no API key (health needs none), no retry policy, and
    one address of the target (gRPC's default, pick_first), unlike `Client`'s calls.

    Args:
        target: The server's address, "host:port", or any gRPC target.
        service: A service's full name, e.g. "toolvault.v1.InvocationService"; "" for
            the server as a whole.
        tls: Connect over TLS; None connects in plaintext.
        timeout: Seconds to wait for the answer; None waits without limit.

    Raises:
        Unavailable: The server cannot be reached.
        NotFound: The server has no such service.
    """
    request = health_pb2.HealthCheckRequest(service=service)
    try:
        with _open_channel(target, tls=tls) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error
    # The stubs type the enum wrapper's Name() as Any.
    status: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return status


# The stubs make the interceptor generic; at run time it is a plain class.
if TYPE_CHECKING:
    _UnaryInterceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
else:
    _UnaryInterceptor = grpc.UnaryUnaryClientInterceptor


class _Bearer(_UnaryInterceptor):
    """Adds the API key to every call's metadata, over plaintext and TLS alike."""

    def __init__(self, key: str) -> None:
        self._metadata = (("authorization", f"Bearer {key}"),)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = (*(details.metadata or ()), *self._metadata)
        return continuation(details._replace(metadata=metadata), request)


class _PageRequest(Protocol):
    page_token: str


_Request = TypeVar("_Request")
_PagedRequest = TypeVar("_PagedRequest", bound=_PageRequest)
_Response = TypeVar("_Response")


class Client:
    """A connection to a toolvault server.

    Use it as a context manager, or call `close()`, to release the channel:

        with Client("127.0.0.1:50051") as client:
            version = client.publish("add", source)
            execution = client.invoke(f"add@{version.version}", {"a": 1, "b": 2})

    Agents work the same way: `apply_agent(AgentSpec(...))` defines one, `agent_tools`
    returns its tool specs for a model, `call_tool` runs the tool calls the model makes.

    Failed requests raise `toolvault.client.errors.ToolvaultError` subclasses; a function
    that fails when invoked, or a tool that fails when called, does not raise: its
    `Execution` (or `ToolResult`) carries the status.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        tls: TLS | None = None,
        timeout: float | None = None,
        retries: bool = True,
        max_args_bytes: int | None = DEFAULT_MAX_ARGS_BYTES,
        max_source_bytes: int | None = DEFAULT_MAX_SOURCE_BYTES,
        max_files: int | None = DEFAULT_MAX_FILES,
        max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
        max_files_bytes: int | None = DEFAULT_MAX_FILES_BYTES,
    ) -> None:
        """Open a channel to the server (lazily: nothing is sent until the first call).

        Args:
            target: The server's address, "host:port", or any gRPC target; when it
                resolves to several addresses (``dns:///`` of a headless Service,
                ``ipv4:10.0.0.1:50051,10.0.0.2:50051``), calls go round-robin over them.
            api_key: The key to send with every call (`authorization: Bearer ...`), for a
                server that runs with `--auth required`.
            tls: Connect over TLS (and present a client certificate, for mutual TLS);
                None connects in plaintext.
            timeout: Default deadline of each call, in seconds; None waits without limit.
                A deadline covers all attempts of a retried call.
            retries: Retry calls that fail with UNAVAILABLE or RESOURCE_EXHAUSTED before
                the server answered them: up to 4 attempts, backing off exponentially
                from 0.1 s to 2 s with jitter. An invoke that the server may have
                started before the connection broke is retried too; pass an
                `idempotency_key` to make sure such a call runs once.
            max_args_bytes: The largest arguments (JSON-encoded) of `invoke` and
                `call_tool` sent; larger ones raise `InvalidArgument` with the message
                the server would give. The default is the server's default limit; set
                the server's TOOLVAULT_MAX_ARGS_BYTES when it differs, or None to leave
                the check to the server.
            max_source_bytes: The same for the source `publish` sends (the server's
                TOOLVAULT_MAX_SOURCE_BYTES).
            max_files: The same for the number of files `invoke` sends (the server's
                TOOLVAULT_MAX_FILES).
            max_file_bytes: The same for the size of each (TOOLVAULT_MAX_FILE_BYTES).
            max_files_bytes: The same for their size together
                (TOOLVAULT_MAX_FILES_BYTES).
        """
        # An Invoke reply can carry up to three times the server's output cap (stdout,
        # stderr, result); gRPC's default 4 MiB receive limit would refuse it.
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", int(retries)),
        ]
        service_config: dict[str, Any] = {"loadBalancingConfig": _LOAD_BALANCING}
        if retries:
            service_config["methodConfig"] = _RETRY_POLICY
        options.append(("grpc.service_config", json.dumps(service_config)))
        self._channel = _open_channel(target, tls=tls, options=options)
        if api_key is not None:
            self._channel = grpc.intercept_channel(self._channel, _Bearer(api_key))
        self._timeout = timeout
        self._max_args_bytes = max_args_bytes
        self._max_source_bytes = max_source_bytes
        self._max_files = max_files
        self._max_file_bytes = max_file_bytes
        self._max_files_bytes = max_files_bytes
        self._functions = function_pb2_grpc.FunctionServiceStub(self._channel)
        self._invocations = invocation_pb2_grpc.InvocationServiceStub(self._channel)
        self._history = history_pb2_grpc.HistoryServiceStub(self._channel)
        self._agents = agent_pb2_grpc.AgentServiceStub(self._channel)
        self._keys = access_pb2_grpc.KeyServiceStub(self._channel)
        self._audit = access_pb2_grpc.AuditServiceStub(self._channel)
        self._secrets = secret_pb2_grpc.SecretServiceStub(self._channel)

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def publish(
        self,
        name: str,
        source: str,
        *,
        entrypoint: str = "main",
        description: str | None = None,
        input_schema: Mapping[str, Any] | None = None,
        output_schema: Mapping[str, Any] | None = None,
        timeout_ms: int | None = None,
        memory_mb: int | None = None,
        max_output_bytes: int | None = None,
        allowed_imports: Iterable[str] | None = None,
        max_concurrency: int | None = None,
        deterministic: bool = False,
        isolation: Isolation | str | None = None,
        egress: Iterable[str] | None = None,
        secrets: Iterable[str] = (),
    ) -> FunctionVersion:
        """Validate and store a function version.

        Publishing content identical to an existing version returns that version with
        `created` False; any change stores version N+1. Options left as None take the
        server's defaults (the description defaults to the entrypoint's docstring).

        Args:
            name: The function's name, `[a-z][a-z0-9_]{0,63}`, optionally after
                `NAMESPACE/` (`[a-z][a-z0-9_-]{0,31}`); bare names are in `default`.
            source: The Python source.
            entrypoint: The function in the source to call.
            description: What the function does.
            input_schema: JSON Schema the arguments object must match.
            output_schema: JSON Schema the result must match.
            timeout_ms: Wall-clock limit of one run, in milliseconds.
            memory_mb: Memory limit of the sandbox process, in MiB.
            max_output_bytes: Cap on stdout, stderr and the JSON result, each.
            allowed_imports: Modules the code may import (a subset of the server's list).
            max_concurrency: Most calls of the function the server runs at once (more
                fail with `ResourceExhausted`); None or 0 means unlimited.
            deterministic: Declare that equal arguments always give the same result, so
                the server may answer calls from its result cache.
            isolation: "warm" (None's default: calls may share warm workers of this
                version, which keep module state between calls) or "fresh" (every
                call in a process of its own). Part of the content, so it changes the
                sha256.
            egress: Hosts its calls may reach, `HOST[:PORT]` (`api.example.com:443`,
                `*.example.org`; without a port, 80 and 443), within what the server
                allows the namespace. Code reaches them with `urllib.request` or
                `http.client`. Part of the content.
            secrets: Names of secrets of the function's namespace (`set_secret`) its
                calls may read, as `from toolvault import secrets` then
                `secrets["NAME"]`. They need not be set yet; a call fails while one is
                missing. Part of the content (the names, never the values).

        Returns:
            The stored version, with its number and sha256.

        Raises:
            InvalidArgument: The server rejected the name, source, schemas, limits or
                egress entries, or the source is larger than `max_source_bytes`
                (checked before sending).
            PermissionDenied: An egress entry is beyond what the namespace may reach.
            FailedPrecondition: Egress is off on the server.
            ValueError: `isolation` is not an isolation name.
        """
        _refuse_over("source", len(source.encode()), self._max_source_bytes)
        isolation_pb = (
            execution_pb2.ISOLATION_UNSPECIFIED
            if isolation is None
            else Isolation(isolation).to_proto()
        )
        request = function_pb2.PublishFunctionRequest(
            name=name,
            source=source,
            entrypoint=entrypoint,
            description=description or "",
            input_schema_json=json.dumps(input_schema) if input_schema is not None else "",
            output_schema_json=json.dumps(output_schema) if output_schema is not None else "",
            limits=function_pb2.Limits(
                timeout_ms=timeout_ms or 0,
                memory_mb=memory_mb or 0,
                max_output_bytes=max_output_bytes or 0,
                max_concurrency=max_concurrency or 0,
            ),
            allowed_imports=allowed_imports or (),
            deterministic=deterministic,
            isolation=isolation_pb,
            egress=egress or (),
            secrets=list(secrets),
        )
        response = self._call(self._functions.PublishFunction, request)
        return FunctionVersion.from_proto(response.version, created=response.created)

    def invoke(
        self,
        ref: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> Execution:
        """Run a function version in a sandbox and return the recorded run.

        Args:
            ref: "name" (the latest version), "name@3" or "name@alias".
            args: Keyword arguments for the entrypoint; must be JSON-serializable.
            timeout: Deadline of this call in seconds, instead of the client's default.
                When it passes, the server kills the run and records it as CANCELLED.
            idempotency_key: At most 128 characters naming this request: invoking again
                with the same key, ref and args returns the first call's recorded
                execution instead of running again (for the server's idempotency TTL,
                24 hours by default).
            files: Files by name (plain names, not "out") that the function finds in its
                working directory, read-only; `Execution.output_files` has those it
                leaves in `out/`.

        Returns:
            The execution; check `ok` or `status`, a failing function does not raise.

        Raises:
            NotFound: The reference names no version.
            InvalidArgument: The arguments do not match the input schema, or are larger
                than `max_args_bytes`, or the files are over `max_files`,
                `max_file_bytes` or `max_files_bytes` (checked before sending), or a
                file's name is not a plain file name.
            ResourceExhausted: The server or the function is at its concurrency limit.
            FailedPrecondition: The idempotency key was used for a different request.
            DeadlineExceeded: The timeout passed.
        """
        request = invocation_pb2.InvokeRequest(
            ref=ref,
            args_json=self._arguments(args, "args_json"),
            idempotency_key=idempotency_key or "",
            files=self._files(files or {}),
        )
        response = self._call(self._invocations.Invoke, request, timeout)
        return Execution.from_proto(response.execution, response.output_files)

    def get(self, ref: str) -> FunctionVersion:
        """Return the version a reference resolves to, with its source."""
        response = self._call(self._functions.GetFunction, function_pb2.GetFunctionRequest(ref=ref))
        return FunctionVersion.from_proto(response.version)

    def function(self, name: str) -> Function:
        """Return a function with its latest version number and aliases."""
        request = function_pb2.GetFunctionRequest(ref=name)
        return Function.from_proto(self._call(self._functions.GetFunction, request).function)

    def functions(self) -> list[Function]:
        """Return every function, ordered by name."""
        request = function_pb2.ListFunctionsRequest(page_size=_MAX_PAGE_SIZE)
        pages = self._pages(self._functions.ListFunctions, request, "functions")
        return [Function.from_proto(pb) for pb in pages]

    def versions(self, name: str) -> list[FunctionVersion]:
        """Return every version of a function, newest first, without their source."""
        request = function_pb2.ListFunctionVersionsRequest(name=name, page_size=_MAX_PAGE_SIZE)
        pages = self._pages(self._functions.ListFunctionVersions, request, "versions")
        return [FunctionVersion.from_proto(pb) for pb in pages]

    def set_alias(self, name: str, alias: str, version: int) -> Function:
        """Point an alias at a version, creating or moving it; return the updated function."""
        request = function_pb2.SetAliasRequest(name=name, alias=alias, version=version)
        return Function.from_proto(self._call(self._functions.SetAlias, request).function)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias; NotFound if it does not exist."""
        request = function_pb2.DeleteAliasRequest(name=name, alias=alias)
        self._call(self._functions.DeleteAlias, request)

    def delete(self, name: str) -> int:
        """Delete a function with its versions and aliases; return how many versions went.

        The function's execution history is kept.
        """
        request = function_pb2.DeleteFunctionRequest(name=name)
        return self._call(self._functions.DeleteFunction, request).deleted_versions

    def stats(
        self,
        name: str,
        *,
        version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        failures: int = 5,
    ) -> FunctionStats:
        """Summarize a function's recorded runs in a time window.

        Args:
            name: The function (its history outlives deletion).
            version: Only runs of this version number; None for all versions.
            since: Start of the window (naive means UTC); None: 24 hours before `until`.
            until: End of the window, exclusive (naive means UTC); None: now.
            failures: How many of the latest failures to return, 1 to 50.

        Raises:
            InvalidArgument: The name is invalid or the window is empty.
            ValueError: `failures` is not between 1 and 50.
        """
        if not 1 <= failures <= 50:
            raise ValueError(f"failures must be between 1 and 50, not {failures}")
        request = function_pb2.GetFunctionStatsRequest(
            name=name, version=version or 0, failure_limit=failures
        )
        if since is not None:
            request.start_time_from.FromDatetime(since)
        if until is not None:
            request.start_time_to.FromDatetime(until)
        return FunctionStats.from_proto(self._call(self._functions.GetFunctionStats, request).stats)

    def history(
        self,
        name: str | None = None,
        *,
        status: ExecutionStatus | str | None = None,
        version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 50,
        agent: str | None = None,
        conversation_id: str | None = None,
    ) -> list[Execution]:
        """Return recorded runs, newest first, matching every filter given.

        Args:
            name: Only runs of this function; None for all functions.
            status: Only runs with this status (an `ExecutionStatus` or its name, in any
                case).
            version: Only runs of this version number (needs `name`).
            since: Only runs that started at or after this time (naive means UTC).
            until: Only runs that started before this time (naive means UTC).
            limit: At most this many runs; None for all of them.
            agent: Only tool calls made for this agent.
            conversation_id: Only tool calls of this conversation.

        Raises:
            ValueError: `status` is not a status name.
        """
        request = history_pb2.ListExecutionsRequest(
            function_name=name or "",
            status=(
                ExecutionStatus(status).to_proto()
                if status is not None
                else execution_pb2.EXECUTION_STATUS_UNSPECIFIED
            ),
            version=version or 0,
            page_size=min(limit or _MAX_PAGE_SIZE, _MAX_PAGE_SIZE),
            agent=agent or "",
            conversation_id=conversation_id or "",
        )
        if since is not None:
            request.start_time_from.FromDatetime(since)
        if until is not None:
            request.start_time_to.FromDatetime(until)
        pages = self._pages(self._history.ListExecutions, request, "executions")
        return [Execution.from_proto(pb) for pb in itertools.islice(pages, limit)]

    def execution(self, execution_id: str, *, include_files: bool = False) -> Execution:
        """Return one recorded run by its id.

        With `include_files`, its `output_files` hold the bytes of the files it left in
        `out/` that the server still keeps (for its file retention, 7 days by default);
        `files` lists them all, kept or not.
        """
        request = history_pb2.GetExecutionRequest(id=execution_id, include_files=include_files)
        response = self._call(self._history.GetExecution, request)
        return Execution.from_proto(response.execution, response.output_files)

    def create_agent(self, spec: AgentSpec) -> Agent:
        """Create an agent; return its revision 1.

        Raises:
            AlreadyExists: The name is taken.
            InvalidArgument: A field is invalid or a tool ref does not resolve (named).
        """
        request = agent_pb2.CreateAgentRequest(spec=spec.to_proto())
        return Agent.from_proto(self._call(self._agents.CreateAgent, request).agent)

    def update_agent(self, spec: AgentSpec, *, allow_missing: bool = False) -> tuple[Agent, bool]:
        """Store a new revision of an agent's whole definition.

        Args:
            spec: The full new definition; fields left at their defaults take them.
            allow_missing: Create the agent when it does not exist instead of failing.

        Returns:
            The current revision, and whether it changed: False when the definition was
            identical to the current one, which is then kept.

        Raises:
            NotFound: The agent does not exist and `allow_missing` is False.
            InvalidArgument: A field is invalid or a tool ref does not resolve (named).
        """
        request = agent_pb2.UpdateAgentRequest(spec=spec.to_proto(), allow_missing=allow_missing)
        response = self._call(self._agents.UpdateAgent, request)
        return Agent.from_proto(response.agent), response.changed

    def apply_agent(self, spec: AgentSpec) -> tuple[Agent, bool]:
        """Create or update an agent to match `spec`; return it and whether it changed."""
        return self.update_agent(spec, allow_missing=True)

    def agent(self, name: str, *, revision: int = 0) -> Agent:
        """Return an agent's current revision, or the given one."""
        request = agent_pb2.GetAgentRequest(name=name, revision=revision)
        return Agent.from_proto(self._call(self._agents.GetAgent, request).agent)

    def agents(self, *, capability: str | None = None) -> list[Agent]:
        """Return the current revision of every agent (offering `capability`), by name."""
        request = agent_pb2.ListAgentsRequest(page_size=_MAX_PAGE_SIZE, capability=capability or "")
        pages = self._pages(self._agents.ListAgents, request, "agents")
        return [Agent.from_proto(pb) for pb in pages]

    def agent_revisions(self, name: str) -> list[Agent]:
        """Return every revision of an agent, newest first."""
        request = agent_pb2.ListAgentRevisionsRequest(name=name, page_size=_MAX_PAGE_SIZE)
        pages = self._pages(self._agents.ListAgentRevisions, request, "agents")
        return [Agent.from_proto(pb) for pb in pages]

    def delete_agent(self, name: str) -> int:
        """Delete an agent with all its revisions; return how many revisions went.

        The history of its tool calls is kept.
        """
        request = agent_pb2.DeleteAgentRequest(name=name)
        return self._call(self._agents.DeleteAgent, request).deleted_revisions

    def agent_tools(self, name: str) -> list[ToolSpec]:
        """Return an agent's tools as specs, in the order of its definition.

        Render them for a model with `ToolSpec.to_openai_chat()`, `to_openai_responses()`,
        `to_anthropic()` or `to_mcp()`.
        """
        request = agent_pb2.ListAgentToolsRequest(agent=name)
        return [
            ToolSpec.from_proto(pb) for pb in self._call(self._agents.ListAgentTools, request).tools
        ]

    def call_tool(
        self,
        agent: str,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        conversation_id: str = "",
        chain: ChainContext | None = None,
        timeout: float | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> ToolResult:
        """Run one of an agent's tools in a sandbox, as the agent's model asked.

        A tool that fails does not raise: the result has `is_error` set and a `text` that
        says what went wrong, to hand back to the model.

        Args:
            agent: The agent making the call.
            tool: The tool's name, as in `ToolSpec.name`.
            arguments: The arguments the model chose; must be JSON-serializable.
            conversation_id: Groups the calls of one conversation in the history.
            chain: The chain context from `route_task` when the agent works on a
                delegated task; None for a direct call.
            timeout: Deadline of this call in seconds, instead of the client's default.
            files: Files for the tool's working directory, as for `invoke`; those it
                leaves in `out/` are in the result's `execution.output_files`.

        Returns:
            The result, with the recorded execution.

        Raises:
            PermissionDenied: The tool is not on the agent's list.
            InvalidArgument: The arguments do not match the tool's input schema, or are
                larger than `max_args_bytes`, or the files are over the caps (checked
                before sending, as for `invoke`).
            FailedPrecondition: The agent is disabled or the chain is too deep.
            NotFound: The agent does not exist.
        """
        request = agent_pb2.CallToolRequest(
            agent=agent,
            tool=tool,
            arguments_json=self._arguments(arguments, "arguments_json"),
            conversation_id=conversation_id,
            chain=chain.to_proto() if chain is not None else None,
            files=self._files(files or {}),
        )
        return ToolResult.from_proto(self._call(self._agents.CallTool, request, timeout))

    def route_task(
        self,
        capability: str,
        input: Any = None,
        *,
        strategy: RoutingStrategy | str | None = None,
        agent: str | None = None,
        calling_agent: str | None = None,
        chain: ChainContext | None = None,
    ) -> RoutedTask:
        """Pick an enabled agent with a capability to hand a task to.

        Args:
            capability: The capability the task needs.
            input: The task's input (JSON-serializable), checked against the picked
                agent's input schema; None for no input.
            strategy: "round_robin", "least_loaded" or "named" (then `agent` names it);
                None means "named" when `agent` is given, else "round_robin".
            agent: With the "named" strategy: the agent to pick.
            calling_agent: The agent delegating the task; None when a person or
                program routes it.
            chain: The chain the calling agent's own work belongs to; None at the top.

        Returns:
            The picked agent and the chain context every call it makes for the task must
            pass to `call_tool`.

        Raises:
            FailedPrecondition: The delegation would pass the calling agent's
                max_chain_depth.
            NotFound: No enabled agent offers the capability.
            ValueError: `strategy` is not a strategy name.
        """
        request = agent_pb2.RouteTaskRequest(
            capability=capability,
            input_json=json.dumps(input) if input is not None else "",
            strategy=RoutingStrategy(strategy or ("named" if agent else "round_robin")).to_proto(),
            agent=agent or "",
            calling_agent=calling_agent or "",
            chain=chain.to_proto() if chain is not None else None,
        )
        return RoutedTask.from_proto(self._call(self._agents.RouteTask, request))

    def create_key(
        self,
        role: Role | str,
        *,
        namespaces: Iterable[str] = (),
        agent: str = "",
        description: str = "",
    ) -> tuple[str, ApiKey]:
        """Create an API key (admin keys only).

        Args:
            role: admin, publisher, invoker or agent.
            namespaces: For publisher and invoker keys, the namespaces the key may see
                (at least one; "*" for all).
            agent: For agent keys, the agent whose tools the key may call.
            description: Whose key this is.

        Returns:
            The whole key, which the server never shows again, and the key as listed.
        """
        request = access_pb2.CreateKeyRequest(
            role=Role(role).to_proto(),
            namespaces=list(namespaces),
            agent=agent,
            description=description,
        )
        reply = self._call(self._keys.CreateKey, request)
        return reply.secret, ApiKey.from_proto(reply.key)

    def keys(self) -> list[ApiKey]:
        """All API keys, newest first, revoked ones included (admin keys only)."""
        request = access_pb2.ListKeysRequest(page_size=_MAX_PAGE_SIZE)
        return [ApiKey.from_proto(k) for k in self._pages(self._keys.ListKeys, request, "keys")]

    def revoke_key(self, prefix: str) -> ApiKey:
        """Revoke the key with this prefix; it stops working at once (admin keys only)."""
        reply = self._call(self._keys.RevokeKey, access_pb2.RevokeKeyRequest(prefix=prefix))
        return ApiKey.from_proto(reply.key)

    def audit_events(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Recorded changes, newest first, matching every filter given.

        Args:
            actor: Only changes made with this key prefix ("anonymous" without auth).
            action: Only this action, e.g. "function.publish" or "key.revoke".
            target: Only changes of this function, agent or key prefix.
            since: Only changes at or after this time.
            until: Only changes before this time.
            limit: At most this many events; None for all.
        """
        request = access_pb2.ListAuditEventsRequest(
            actor=actor or "",
            action=action or "",
            target=target or "",
            page_size=min(limit or _MAX_PAGE_SIZE, _MAX_PAGE_SIZE),
        )
        if since is not None:
            request.start_time_from.FromDatetime(since)
        if until is not None:
            request.start_time_to.FromDatetime(until)
        events = self._pages(self._audit.ListAuditEvents, request, "events")
        return [AuditEvent.from_proto(e) for e in itertools.islice(events, limit)]

    def set_secret(self, name: str, value: str) -> tuple[Secret, bool]:
        """Create or replace a secret; the server never returns its value again.

        Args:
            name: `NAME` or `NAMESPACE/NAME`, NAME matching `[A-Z_][A-Z0-9_]{0,63}`; the
                versions of the namespace's functions that declare NAME get its value.
            value: At least 4 bytes (UTF-8) and at most 64 KiB.

        Returns:
            The secret as listed, and whether it is new (False: its value was replaced).

        Raises:
            InvalidArgument: The name or the value breaks its rule.
            FailedPrecondition: The server has no TOOLVAULT_SECRETS_KEY.
            PermissionDenied: The key may not set secrets (only admins and publishers may).
        """
        request = secret_pb2.SetSecretRequest(name=name, value=value)
        reply = self._call(self._secrets.SetSecret, request)
        return Secret.from_proto(reply.secret), reply.created

    def list_secrets(self, *, namespace: str | None = None) -> list[Secret]:
        """The secrets the key may see (names and times, never values), by name.

        Args:
            namespace: Only those of this namespace.
        """
        request = secret_pb2.ListSecretsRequest(namespace=namespace or "", page_size=_MAX_PAGE_SIZE)
        pages = self._pages(self._secrets.ListSecrets, request, "secrets")
        return [Secret.from_proto(s) for s in pages]

    def delete_secret(self, name: str) -> None:
        """Delete a secret; calls of versions that declare it fail from then on."""
        self._call(self._secrets.DeleteSecret, secret_pb2.DeleteSecretRequest(name=name))

    def _arguments(self, arguments: Mapping[str, Any] | None, field: str) -> str:
        """Encode arguments as the request's `field`, refusing them as the server would."""
        text = json.dumps(arguments or {})
        _refuse_over(field, len(text.encode()), self._max_args_bytes)
        return text

    def _files(self, files: Mapping[str, bytes]) -> list[execution_pb2.File]:
        """The request's files, refused as the server would refuse them for their sizes."""
        if self._max_files is not None and len(files) > self._max_files:
            raise InvalidArgument(
                f"files: {len(files)} files, more than the limit of {self._max_files}",
                grpc.StatusCode.INVALID_ARGUMENT,
            )
        for name, content in files.items():
            limit = self._max_file_bytes
            if limit is not None and len(content) > limit:
                raise InvalidArgument(
                    f"files: {name!r} is {len(content)} bytes, more than the limit of {limit}"
                    " bytes a file",
                    grpc.StatusCode.INVALID_ARGUMENT,
                )
        total = sum(len(content) for content in files.values())
        if self._max_files_bytes is not None and total > self._max_files_bytes:
            raise InvalidArgument(
                f"files: {total} bytes together, more than the limit of {self._max_files_bytes}",
                grpc.StatusCode.INVALID_ARGUMENT,
            )
        return [execution_pb2.File(name=name, content=bytes(data)) for name, data in files.items()]

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None = None,
    ) -> _Response:
        try:
            return method(request, timeout=self._timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def _pages(
        self,
        method: grpc.UnaryUnaryMultiCallable[_PagedRequest, Any],
        request: _PagedRequest,
        items: str,
    ) -> Iterator[Any]:
        """Yield the `items` field of every page, following next_page_token lazily."""
        while True:
            page = self._call(method, request)
            yield from getattr(page, items)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token


def _refuse_over(field: str, size: int, limit: int | None) -> None:
    """Raise what the server would answer for a ``field`` of ``size`` bytes over ``limit``."""
    if limit is not None and size > limit:
        raise InvalidArgument(
            f"{field} is {size} bytes, more than the limit of {limit}",
            grpc.StatusCode.INVALID_ARGUMENT,
        )
