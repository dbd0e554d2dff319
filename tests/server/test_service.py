"""The server end to end over gRPC: real server process, real sandboxes, both databases."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest

from tests.conftest import ServerProcess
from toolvault.v1 import (
    execution_pb2,
    function_pb2,
    function_pb2_grpc,
    history_pb2,
    history_pb2_grpc,
    invocation_pb2,
    invocation_pb2_grpc,
)

Status = execution_pb2.ExecutionStatus


@dataclass
class Stubs:
    functions: function_pb2_grpc.FunctionServiceStub
    invocation: invocation_pb2_grpc.InvocationServiceStub
    history: history_pb2_grpc.HistoryServiceStub

    def publish(self, name: str, source: str, **limits: int) -> function_pb2.FunctionVersion:
        response = self.functions.PublishFunction(
            function_pb2.PublishFunctionRequest(
                name=name, source=source, limits=function_pb2.Limits(**limits)
            )
        )
        return response.version

    def invoke(self, ref: str, args: object = None, **kwargs: object) -> execution_pb2.Execution:
        request = invocation_pb2.InvokeRequest(ref=ref, args_json=json.dumps(args or {}))
        return self.invocation.Invoke(request, **kwargs).execution  # type: ignore[arg-type]

    def executions(self, **filters: object) -> list[execution_pb2.Execution]:
        found: list[execution_pb2.Execution] = []
        token = ""
        while True:
            page = self.history.ListExecutions(
                history_pb2.ListExecutionsRequest(page_token=token, **filters)  # type: ignore[arg-type]
            )
            found += page.executions
            token = page.next_page_token
            if not token:
                return found


def connect(address: str) -> tuple[grpc.Channel, Stubs]:
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    )
    stubs = Stubs(
        function_pb2_grpc.FunctionServiceStub(channel),
        invocation_pb2_grpc.InvocationServiceStub(channel),
        history_pb2_grpc.HistoryServiceStub(channel),
    )
    return channel, stubs


@pytest.fixture
def stubs(server: str) -> Iterator[Stubs]:
    channel, stubs = connect(server)
    yield stubs
    channel.close()


def rpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_publish_invoke_and_history_round_trip(stubs: Stubs) -> None:
    version = stubs.publish("add", "def main(a, b):\n    print('adding')\n    return a + b\n")
    assert version.version == 1 and len(version.sha256) == 64
    execution = stubs.invoke("add", {"a": 2**62, "b": 2**62})
    assert execution.status == Status.EXECUTION_STATUS_OK
    assert json.loads(execution.result_json) == 2**63  # ints stay exact: JSON text, not Struct
    assert execution.stdout == "adding\n"
    assert (execution.version, execution.sha256) == (1, version.sha256)
    assert execution.peak_memory_bytes > 0 and execution.duration_ms > 0
    assert execution.caller.startswith("ipv4:127.0.0.1:")
    recorded = stubs.history.GetExecution(history_pb2.GetExecutionRequest(id=execution.id))
    assert recorded.execution.result_json == execution.result_json
    assert recorded.execution.stdout == "adding\n"
    assert [e.id for e in stubs.executions(function_name="add")] == [execution.id]


def test_a_failing_function_is_a_successful_rpc_with_a_traceback(stubs: Stubs) -> None:
    stubs.publish("div", "def main(a, b):\n    x = a\n    return x / b\n")
    execution = stubs.invoke("div", {"a": 1, "b": 0})
    assert execution.status == Status.EXECUTION_STATUS_ERROR
    assert execution.error.type == "ZeroDivisionError"
    assert 'File "div@1", line 3, in main' in execution.error.traceback
    assert "return x / b" in execution.error.traceback
    assert [e.status for e in stubs.executions(status=Status.EXECUTION_STATUS_ERROR)] == [
        Status.EXECUTION_STATUS_ERROR
    ]


def test_bad_requests_get_precise_status_codes(stubs: Stubs) -> None:
    bad_source = rpc_error(lambda: stubs.publish("bad", "def main(:\n    pass\n"))
    assert bad_source.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "line 1, column 10" in bad_source.details()  # type: ignore[attr-defined]
    missing = rpc_error(lambda: stubs.invoke("nope"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert missing.details() == "function 'nope' not found"  # type: ignore[attr-defined]
    stubs.publish(
        "typed",
        "def main(n):\n    return n\n",
    )
    not_object = rpc_error(lambda: stubs.invoke("typed", [1]))
    assert not_object.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "args_json must be a JSON object, not list" in not_object.details()  # type: ignore[attr-defined]
    assert stubs.executions() == []  # nothing ran, nothing recorded


def test_arguments_are_checked_against_the_input_schema(stubs: Stubs) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}
    stubs.functions.PublishFunction(
        function_pb2.PublishFunctionRequest(
            name="sq",
            source="def main(n):\n    return n * n\n",
            input_schema_json=json.dumps(schema),
        )
    )
    error = rpc_error(lambda: stubs.invoke("sq", {"n": -1}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "$.n: -1 is less than the minimum of 0" in error.details()  # type: ignore[attr-defined]
    assert json.loads(stubs.invoke("sq", {"n": 12}).result_json) == 144


def test_schema_problems_quote_a_large_value_briefly_so_replies_and_the_history_stay_small(
    stubs: Stubs,
) -> None:
    # Each of twenty problems used to quote the whole megabyte: a 20 MB message per row,
    # three rows overflowed ListExecutions' reply, and the refusal of bad arguments
    # overflowed the status's metadata limit (the client saw RESOURCE_EXHAUSTED).
    twenty_times = {"allOf": [{"type": "number"}] * 20}
    stubs.functions.PublishFunction(
        function_pb2.PublishFunctionRequest(
            name="big",
            source="def main(x=0):\n    return 'x' * 1_000_000\n",
            output_schema_json=json.dumps(twenty_times),
            input_schema_json=json.dumps({"properties": {"x": twenty_times}}),
        )
    )
    quoted = "$: '" + "x" * 1_000_000 + "' is not of type 'number'"
    brief = quoted[:199] + "\u2026"
    for _ in range(3):
        execution = stubs.invoke("big")
        assert execution.status == Status.EXECUTION_STATUS_OUTPUT_SCHEMA_MISMATCH
        assert execution.error.message == (
            "the result does not match the output schema: " + "; ".join([brief] * 20)
        )
    assert [e.error.message for e in stubs.executions()] == [execution.error.message] * 3
    error = rpc_error(lambda: stubs.invoke("big", {"x": "y" * 1_000_000}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    argument = "$.x: '" + "y" * 1_000_000 + "' is not of type 'number'"
    assert (
        error.details()
        == (  # type: ignore[attr-defined]
            "args_json does not match the input schema: "
            + "; ".join([argument[:199] + "\u2026"] * 20)
        )
    )


def test_invoke_checks_the_schema_derived_from_type_hints_like_a_tool_call(stubs: Stubs) -> None:
    stubs.publish("double", "def main(n: int) -> int:\n    return n * 2\n")
    error = rpc_error(lambda: stubs.invoke("double", {"n": "abc"}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "$.n: 'abc' is not of type 'integer'" in error.details()  # type: ignore[attr-defined]
    assert stubs.executions() == []  # refused before it ran
    assert json.loads(stubs.invoke("double", {"n": 21}).result_json) == 42


def test_limits_end_runs_and_the_server_keeps_serving(stubs: Stubs) -> None:
    stubs.publish("spin", "def main():\n    while True:\n        pass\n", timeout_ms=1000)
    stubs.publish(
        "hog", "def main():\n    return len(bytearray(512 * 1024 * 1024))\n", memory_mb=128
    )
    stubs.publish("chatty", "def main():\n    while True:\n        print('x' * 1000)\n")
    started = time.monotonic()
    spin = stubs.invoke("spin")
    assert spin.status == Status.EXECUTION_STATUS_TIMEOUT
    assert 900 <= spin.duration_ms < 3000 and time.monotonic() - started < 5
    hog = stubs.invoke("hog")
    assert hog.status == Status.EXECUTION_STATUS_MEMORY_LIMIT
    assert "128 MiB" in hog.error.message
    chatty = stubs.invoke("chatty")
    assert chatty.status == Status.EXECUTION_STATUS_OUTPUT_LIMIT
    assert len(chatty.stdout.encode()) <= 1024 * 1024
    stubs.publish("ok", "def main():\n    return 'still here'\n")
    assert stubs.invoke("ok").result_json == '"still here"'
    statuses = {e.function_name: e.status for e in stubs.executions()}
    assert statuses == {
        "spin": Status.EXECUTION_STATUS_TIMEOUT,
        "hog": Status.EXECUTION_STATUS_MEMORY_LIMIT,
        "chatty": Status.EXECUTION_STATUS_OUTPUT_LIMIT,
        "ok": Status.EXECUTION_STATUS_OK,
    }
    history_stdout = stubs.executions(function_name="chatty")[0].stdout
    assert 0 < len(history_stdout.encode()) <= 4096  # the history keeps a tail


def test_twenty_concurrent_calls_complete_and_survive_a_restart(
    server_process: ServerProcess,
) -> None:
    channel, stubs = connect(server_process.address)
    stubs.publish("square", "def main(n):\n    return n * n\n")
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda n: stubs.invoke("square", {"n": n}), range(20)))
    assert [json.loads(r.result_json) for r in results] == [n * n for n in range(20)]
    channel.close()
    assert server_process.stop() == 0
    server_process.start()
    channel, stubs = connect(server_process.address)
    recorded = stubs.executions(function_name="square", page_size=7)
    channel.close()
    assert sorted(e.id for e in recorded) == sorted(r.id for r in results)
    assert sorted(json.loads(e.result_json) for e in recorded) == sorted(n * n for n in range(20))


def test_sigterm_lets_an_in_flight_call_finish_then_exits_zero(
    server_process: ServerProcess,
) -> None:
    channel, stubs = connect(server_process.address)
    stubs.publish(
        "slow",
        "def main():\n    n = 0\n    for i in range(3000000):\n        n += i\n    return n\n",
    )
    outcome: list[execution_pb2.Execution] = []
    call = threading.Thread(target=lambda: outcome.append(stubs.invoke("slow")))
    call.start()
    time.sleep(0.3)
    assert server_process.stop(signal.SIGTERM) == 0
    call.join()
    channel.close()
    assert outcome[0].status == Status.EXECUTION_STATUS_OK
    assert json.loads(outcome[0].result_json) == sum(range(3000000))


def test_a_call_whose_deadline_passes_is_killed_and_recorded_as_cancelled(stubs: Stubs) -> None:
    stubs.publish("spin", "def main():\n    while True:\n        pass\n", timeout_ms=30000)
    error = rpc_error(lambda: stubs.invoke("spin", timeout=0.5))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while not (recorded := stubs.executions(function_name="spin")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e.status for e in recorded] == [Status.EXECUTION_STATUS_CANCELLED]
    assert recorded[0].duration_ms < 5000


def test_nul_characters_in_output_are_recorded_not_lost(stubs: Stubs) -> None:
    # PostgreSQL cannot store NUL in text; the history keeps U+FFFD in its place.
    stubs.publish("nul", "def main():\n    print('a\\x00b')\n    raise ValueError('c\\x00d')\n")
    execution = stubs.invoke("nul")
    assert execution.status == Status.EXECUTION_STATUS_ERROR
    assert (execution.stdout, execution.error.message) == ("a\x00b\n", "c\x00d")
    (recorded,) = stubs.executions(function_name="nul")
    assert (recorded.stdout, recorded.error.message) == ("a\ufffdb\n", "c\ufffdd")
