"""The synchronous client: one method per operation, on top of the generated stubs.

`Client` builds request messages, sends them through `_call` (the only place that catches
`grpc.RpcError`, turning it into the SDK's exceptions), follows page tokens for lists, and
returns the frozen models of `_models`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import grpc

from toolvault.client._models import Execution, ExecutionStatus, Function, FunctionVersion
from toolvault.client.errors import from_rpc_error
from toolvault.v1 import (
    execution_pb2,
    function_pb2,
    function_pb2_grpc,
    history_pb2,
    history_pb2_grpc,
    invocation_pb2,
    invocation_pb2_grpc,
)

__all__ = ["DEFAULT_TARGET", "Client"]

DEFAULT_TARGET = "127.0.0.1:50051"
# The server caps pages at this size; asking for full pages saves round trips.
_MAX_PAGE_SIZE = 1000
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


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

    Failed requests raise `toolvault.client.errors.ToolvaultError` subclasses; a function
    that fails when invoked does not raise, its `Execution` carries the status.
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float | None = None) -> None:
        """Open a channel to the server (lazily: nothing is sent until the first call).

        Args:
            target: The server's address, "host:port".
            timeout: Default deadline of each call, in seconds; None waits without limit.
        """
        # An Invoke reply can carry up to three times the server's output cap (stdout,
        # stderr, result); gRPC's default 4 MiB receive limit would refuse it.
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES)]
        )
        self._timeout = timeout
        self._functions = function_pb2_grpc.FunctionServiceStub(self._channel)
        self._invocations = invocation_pb2_grpc.InvocationServiceStub(self._channel)
        self._history = history_pb2_grpc.HistoryServiceStub(self._channel)

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
    ) -> FunctionVersion:
        """Validate and store a function version.

        Publishing content identical to an existing version returns that version with
        `created` False; any change stores version N+1. Options left as None take the
        server's defaults (the description defaults to the entrypoint's docstring).

        Args:
            name: The function's name, `[a-z][a-z0-9_]{0,63}`.
            source: The Python source.
            entrypoint: The function in the source to call.
            description: What the function does.
            input_schema: JSON Schema the arguments object must match.
            output_schema: JSON Schema the result must match.
            timeout_ms: Wall-clock limit of one run, in milliseconds.
            memory_mb: Memory limit of the sandbox process, in MiB.
            max_output_bytes: Cap on stdout, stderr and the JSON result, each.
            allowed_imports: Modules the code may import (a subset of the server's list).

        Returns:
            The stored version, with its number and sha256.

        Raises:
            InvalidArgument: The server rejected the name, source, schemas or limits.
        """
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
            ),
            allowed_imports=allowed_imports or (),
        )
        response = self._call(self._functions.PublishFunction, request)
        return FunctionVersion.from_proto(response.version, created=response.created)

    def invoke(
        self, ref: str, args: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Execution:
        """Run a function version in a sandbox and return the recorded run.

        Args:
            ref: "name" (the latest version), "name@3" or "name@alias".
            args: Keyword arguments for the entrypoint; must be JSON-serializable.
            timeout: Deadline of this call in seconds, instead of the client's default.
                When it passes, the server kills the run and records it as CANCELLED.

        Returns:
            The execution; check `ok` or `status`, a failing function does not raise.

        Raises:
            NotFound: The reference names no version.
            InvalidArgument: The arguments do not match the input schema.
            DeadlineExceeded: The timeout passed.
        """
        request = invocation_pb2.InvokeRequest(ref=ref, args_json=json.dumps(args or {}))
        response = self._call(self._invocations.Invoke, request, timeout)
        return Execution.from_proto(response.execution)

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

    def history(
        self,
        name: str | None = None,
        *,
        status: ExecutionStatus | str | None = None,
        version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 50,
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
        )
        if since is not None:
            request.start_time_from.FromDatetime(since)
        if until is not None:
            request.start_time_to.FromDatetime(until)
        pages = self._pages(self._history.ListExecutions, request, "executions")
        return [Execution.from_proto(pb) for pb in itertools.islice(pages, limit)]

    def execution(self, execution_id: str) -> Execution:
        """Return one recorded run by its id."""
        request = history_pb2.GetExecutionRequest(id=execution_id)
        return Execution.from_proto(self._call(self._history.GetExecution, request).execution)

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
