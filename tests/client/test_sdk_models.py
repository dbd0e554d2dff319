"""Proto messages become frozen models with plain Python values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from toolvault.client import (
    Execution,
    ExecutionError,
    ExecutionStatus,
    Function,
    FunctionVersion,
    Limits,
)
from toolvault.v1 import execution_pb2, function_pb2

WHEN = datetime(2025, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)
LATER = datetime(2025, 3, 2, 8, 0, tzinfo=UTC)


def timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def version_message(**fields: object) -> function_pb2.FunctionVersion:
    defaults: dict[str, object] = {
        "name": "add",
        "version": 3,
        "sha256": "ab" * 32,
        "source": "def main(a, b):\n    return a + b\n",
        "entrypoint": "main",
        "description": "Adds two numbers.",
        "limits": function_pb2.Limits(timeout_ms=2000, memory_mb=128, max_output_bytes=65536),
        "allowed_imports": ["json", "math"],
        "create_time": timestamp(WHEN),
    }
    return function_pb2.FunctionVersion(**{**defaults, **fields})  # type: ignore[arg-type]


def execution_message(**fields: object) -> execution_pb2.Execution:
    defaults: dict[str, object] = {
        "id": "6f1c8a52-0d7e-4a8e-9a43-0c7bd1d1f0aa",
        "function_name": "add",
        "version": 3,
        "sha256": "ab" * 32,
        "status": execution_pb2.EXECUTION_STATUS_OK,
        "args_json": '{"a": 1, "b": 2}',
        "result_json": "3",
        "stdout": "adding\n",
        "start_time": timestamp(WHEN),
        "duration_ms": 12.5,
        "cpu_time_ms": 4.25,
        "peak_memory_bytes": 9_000_000,
        "caller": "ipv4:127.0.0.1:40000",
    }
    return execution_pb2.Execution(**{**defaults, **fields})  # type: ignore[arg-type]


def test_a_version_message_becomes_a_version_with_parsed_schemas_and_utc_time() -> None:
    message = version_message(
        input_schema_json='{"type": "object", "required": ["a"]}',
        output_schema_json='{"type": "number"}',
    )
    assert FunctionVersion.from_proto(message, created=True) == FunctionVersion(
        name="add",
        version=3,
        sha256="ab" * 32,
        source="def main(a, b):\n    return a + b\n",
        entrypoint="main",
        description="Adds two numbers.",
        input_schema={"type": "object", "required": ["a"]},
        output_schema={"type": "number"},
        limits=Limits(timeout_ms=2000, memory_mb=128, max_output_bytes=65536),
        allowed_imports=("json", "math"),
        created_at=WHEN,
        created=True,
    )


def test_a_version_without_schemas_has_none_and_is_not_created_by_default() -> None:
    version = FunctionVersion.from_proto(version_message())
    assert version.input_schema is None
    assert version.output_schema is None
    assert version.created is False


def test_models_are_frozen() -> None:
    version = FunctionVersion.from_proto(version_message())
    with pytest.raises(dataclasses.FrozenInstanceError):
        version.version = 4  # type: ignore[misc]


def test_a_function_message_becomes_a_function_with_an_alias_dict() -> None:
    message = function_pb2.Function(
        name="add",
        latest_version=3,
        aliases={"prod": 2, "beta": 3},
        description="Adds two numbers.",
        create_time=timestamp(WHEN),
        update_time=timestamp(LATER),
    )
    assert Function.from_proto(message) == Function(
        name="add",
        latest_version=3,
        aliases={"beta": 3, "prod": 2},
        description="Adds two numbers.",
        created_at=WHEN,
        updated_at=LATER,
    )


def test_a_successful_execution_has_its_parsed_result_and_arguments() -> None:
    execution = Execution.from_proto(execution_message())
    assert execution == Execution(
        execution_id="6f1c8a52-0d7e-4a8e-9a43-0c7bd1d1f0aa",
        function_name="add",
        version=3,
        sha256="ab" * 32,
        status=ExecutionStatus.OK,
        result=3,
        result_json="3",
        args={"a": 1, "b": 2},
        args_json='{"a": 1, "b": 2}',
        stdout="adding\n",
        stderr="",
        error=None,
        started_at=WHEN,
        duration_ms=12.5,
        cpu_time_ms=4.25,
        peak_memory_bytes=9_000_000,
        caller="ipv4:127.0.0.1:40000",
        args_truncated=False,
        result_truncated=False,
    )
    assert execution.ok is True


def test_a_result_of_json_null_is_none_and_still_ok() -> None:
    execution = Execution.from_proto(execution_message(result_json="null"))
    assert execution.result is None
    assert execution.ok is True


def test_a_failed_execution_has_no_result_and_carries_the_error() -> None:
    message = execution_message(
        status=execution_pb2.EXECUTION_STATUS_ERROR,
        result_json="",
        error=execution_pb2.ExecutionError(
            type="ZeroDivisionError",
            message="division by zero",
            traceback='  File "add", line 2, in main\n',
        ),
    )
    execution = Execution.from_proto(message)
    assert execution.status is ExecutionStatus.ERROR
    assert execution.ok is False
    assert execution.result is None
    assert execution.error == ExecutionError(
        type="ZeroDivisionError",
        message="division by zero",
        traceback='  File "add", line 2, in main\n',
    )


def test_a_truncated_history_record_keeps_only_the_cut_json_text() -> None:
    message = execution_message(
        args_json='{"text": "aaaa', args_truncated=True, result_json='"bbbb', result_truncated=True
    )
    execution = Execution.from_proto(message)
    assert (execution.args, execution.args_json) == (None, '{"text": "aaaa')
    assert (execution.result, execution.result_json) == (None, '"bbbb')
    assert execution.ok is True


def test_empty_args_json_means_no_arguments() -> None:
    assert Execution.from_proto(execution_message(args_json="")).args == {}


@pytest.mark.parametrize("status", list(ExecutionStatus))
def test_every_status_maps_to_its_proto_value_and_back(status: ExecutionStatus) -> None:
    value = status.to_proto()
    assert execution_pb2.ExecutionStatus.Name(value) == f"EXECUTION_STATUS_{status.value}"
    assert ExecutionStatus.from_proto(value) is status


def test_status_names_are_accepted_in_any_case() -> None:
    assert ExecutionStatus("memory_limit") is ExecutionStatus.MEMORY_LIMIT
    assert ExecutionStatus("Ok") is ExecutionStatus.OK
    assert ExecutionStatus(ExecutionStatus.ERROR) is ExecutionStatus.ERROR


def test_an_unknown_status_raises_value_error_naming_the_valid_values() -> None:
    with pytest.raises(ValueError) as raised:
        ExecutionStatus("FAILED")
    assert str(raised.value) == (
        "unknown execution status 'FAILED'; valid values: "
        "OK, ERROR, TIMEOUT, MEMORY_LIMIT, OUTPUT_LIMIT, CRASHED, CANCELLED, "
        "OUTPUT_SCHEMA_MISMATCH"
    )
