"""gRPC failures become the SDK's exceptions, in one mapping used by every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from toolvault.client import (
    AgentSpec,
    AlreadyExists,
    Cancelled,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ToolvaultError,
    Unauthenticated,
    Unavailable,
)
from toolvault.client.errors import from_rpc_error


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.CANCELLED, Cancelled),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.INTERNAL, Internal),
        (grpc.StatusCode.UNKNOWN, Internal),
        (grpc.StatusCode.DATA_LOSS, Internal),
        (grpc.StatusCode.ABORTED, ToolvaultError),
        (grpc.StatusCode.UNIMPLEMENTED, ToolvaultError),
        (grpc.StatusCode.OUT_OF_RANGE, ToolvaultError),
    ],
)
def test_each_status_code_becomes_its_exception_class(
    code: grpc.StatusCode, error_class: type[ToolvaultError]
) -> None:
    error = from_rpc_error(FakeRpcError(code, "the message"))
    assert type(error) is error_class
    assert error.code is code


def test_the_servers_message_is_kept_as_details_and_str() -> None:
    error = from_rpc_error(
        FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "source: line 2, column 5: invalid syntax")
    )
    assert error.details == "source: line 2, column 5: invalid syntax"
    assert str(error) == "source: line 2, column 5: invalid syntax"


def test_an_error_without_details_is_named_by_its_code() -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, None))
    assert str(error) == "UNAVAILABLE"


CALLS: dict[str, Callable[[Client], Any]] = {
    "publish": lambda c: c.publish("add", "def main():\n    return 1\n"),
    "invoke": lambda c: c.invoke("add", {"a": 1}),
    "get": lambda c: c.get("add@1"),
    "function": lambda c: c.function("add"),
    "functions": lambda c: c.functions(),
    "versions": lambda c: c.versions("add"),
    "set_alias": lambda c: c.set_alias("add", "prod", 1),
    "delete_alias": lambda c: c.delete_alias("add", "prod"),
    "delete": lambda c: c.delete("add"),
    "history": lambda c: c.history("add"),
    "execution": lambda c: c.execution("0" * 32),
    "create_agent": lambda c: c.create_agent(AgentSpec("calc")),
    "update_agent": lambda c: c.update_agent(AgentSpec("calc")),
    "apply_agent": lambda c: c.apply_agent(AgentSpec("calc")),
    "agent": lambda c: c.agent("calc"),
    "agents": lambda c: c.agents(),
    "agent_revisions": lambda c: c.agent_revisions("calc"),
    "delete_agent": lambda c: c.delete_agent("calc"),
    "agent_tools": lambda c: c.agent_tools("calc"),
    "call_tool": lambda c: c.call_tool("calc", "add", {"a": 1}),
    "route_task": lambda c: c.route_task("math"),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_every_call_to_an_unreachable_server_raises_unavailable(
    closed_address: str, call: Callable[[Client], Any]
) -> None:
    with Client(closed_address) as client, pytest.raises(Unavailable) as raised:
        call(client)
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    # gRPC's words; round_robin reports "Failed to connect to remote host: ...".
    assert "failed to connect" in str(raised.value).lower()


def test_an_unknown_status_filter_raises_value_error_before_any_call(closed_address: str) -> None:
    with Client(closed_address) as client, pytest.raises(ValueError) as raised:
        client.history(status="broken")
    assert str(raised.value) == (
        "unknown execution status 'broken'; valid values: "
        "OK, ERROR, TIMEOUT, MEMORY_LIMIT, OUTPUT_LIMIT, CRASHED, CANCELLED, "
        "OUTPUT_SCHEMA_MISMATCH"
    )


@pytest.mark.parametrize(
    ("details", "name", "message"),
    [
        ("args_json does not match the input schema: $.a", "--args", "--args does not match"),
        ("arguments_json is 3009 bytes, more than the limit", "arguments", "arguments is 3009"),
        ("function 'args_json' not found", "--args", "function 'args_json' not found"),
        ("args_jsonx is odd", "--args", "args_jsonx is odd"),
    ],
)
def test_a_message_can_name_the_arguments_as_the_user_gave_them(
    details: str, name: str, message: str
) -> None:
    error = InvalidArgument(details, grpc.StatusCode.INVALID_ARGUMENT)
    assert error.naming_arguments(name).startswith(message)
    assert str(error) == details
