"""Plain, frozen values the SDK returns, built from the `toolvault.v1` messages.

Callers get Python types (dicts for JSON Schemas and arguments, aware UTC datetimes, an
enum for statuses) instead of protobuf messages with JSON text in string fields. Each model
has a `from_proto` constructor; nothing here talks to the network.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from toolvault.v1 import execution_pb2, function_pb2

__all__ = [
    "Execution",
    "ExecutionError",
    "ExecutionStatus",
    "Function",
    "FunctionVersion",
    "Limits",
]

_STATUS_PREFIX = "EXECUTION_STATUS_"


class ExecutionStatus(enum.StrEnum):
    """The outcome of one run; `ExecutionStatus("error")` ignores case."""

    OK = "OK"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"
    OUTPUT_SCHEMA_MISMATCH = "OUTPUT_SCHEMA_MISMATCH"

    @classmethod
    def _missing_(cls, value: object) -> ExecutionStatus:
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        valid = ", ".join(cls.__members__)
        raise ValueError(f"unknown execution status {value!r}; valid values: {valid}")

    @classmethod
    def from_proto(cls, value: execution_pb2.ExecutionStatus.ValueType) -> ExecutionStatus:
        """Return the status for a `toolvault.v1.ExecutionStatus` value."""
        return cls(execution_pb2.ExecutionStatus.Name(value).removeprefix(_STATUS_PREFIX))

    def to_proto(self) -> execution_pb2.ExecutionStatus.ValueType:
        """Return the `toolvault.v1.ExecutionStatus` value of this status."""
        return execution_pb2.ExecutionStatus.Value(_STATUS_PREFIX + self.value)


@dataclass(frozen=True)
class Limits:
    """Resource limits of a version, with the server's defaults filled in."""

    timeout_ms: int
    memory_mb: int
    max_output_bytes: int


@dataclass(frozen=True)
class FunctionVersion:
    """One immutable version of a function.

    `source` is empty when the version comes from a list; `created` is only meaningful for
    the result of `Client.publish`: False when identical content was already stored.
    """

    name: str
    version: int
    sha256: str
    source: str
    entrypoint: str
    description: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    limits: Limits
    allowed_imports: tuple[str, ...]
    created_at: datetime
    created: bool = False

    @classmethod
    def from_proto(
        cls, pb: function_pb2.FunctionVersion, *, created: bool = False
    ) -> FunctionVersion:
        """Build a version from its message; `created` comes from a publish response."""
        return cls(
            name=pb.name,
            version=pb.version,
            sha256=pb.sha256,
            source=pb.source,
            entrypoint=pb.entrypoint,
            description=pb.description,
            input_schema=json.loads(pb.input_schema_json) if pb.input_schema_json else None,
            output_schema=json.loads(pb.output_schema_json) if pb.output_schema_json else None,
            limits=Limits(
                timeout_ms=pb.limits.timeout_ms,
                memory_mb=pb.limits.memory_mb,
                max_output_bytes=pb.limits.max_output_bytes,
            ),
            allowed_imports=tuple(pb.allowed_imports),
            created_at=_datetime(pb.create_time),
            created=created,
        )


@dataclass(frozen=True)
class Function:
    """A function: a name with its latest version and named aliases."""

    name: str
    latest_version: int
    aliases: dict[str, int]
    description: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_proto(cls, pb: function_pb2.Function) -> Function:
        """Build a function from its message."""
        return cls(
            name=pb.name,
            latest_version=pb.latest_version,
            aliases=dict(sorted(pb.aliases.items())),
            description=pb.description,
            created_at=_datetime(pb.create_time),
            updated_at=_datetime(pb.update_time),
        )


@dataclass(frozen=True)
class ExecutionError:
    """Why a run did not return a result."""

    type: str
    message: str
    traceback: str


@dataclass(frozen=True)
class Execution:
    """One recorded run of a function version.

    `result` is the parsed return value, None unless the function returned (status OK or
    OUTPUT_SCHEMA_MISMATCH) and the history kept the whole result; `result_json` always
    holds the text the server sent (cut when `result_truncated`). `args` and `args_json`
    work the same way with `args_truncated`. The last four fields are set for an agent's
    tool calls and left empty for a plain invoke.
    """

    execution_id: str
    function_name: str
    version: int
    sha256: str
    status: ExecutionStatus
    result: Any
    result_json: str
    args: Any
    args_json: str
    stdout: str
    stderr: str
    error: ExecutionError | None
    started_at: datetime
    duration_ms: float
    cpu_time_ms: float
    peak_memory_bytes: int
    caller: str
    args_truncated: bool
    result_truncated: bool
    agent: str = ""
    agent_revision: int = 0
    conversation_id: str = ""
    chain_depth: int = 0

    @property
    def ok(self) -> bool:
        """True if the function returned a result."""
        return self.status is ExecutionStatus.OK

    @classmethod
    def from_proto(cls, pb: execution_pb2.Execution) -> Execution:
        """Build an execution from its message, parsing its JSON arguments and result."""
        status = ExecutionStatus.from_proto(pb.status)
        # A result that does not match the output schema is still the function's result.
        has_result = bool(pb.result_json) and not pb.result_truncated
        error = pb.error
        return cls(
            execution_id=pb.id,
            function_name=pb.function_name,
            version=pb.version,
            sha256=pb.sha256,
            status=status,
            result=json.loads(pb.result_json) if has_result else None,
            result_json=pb.result_json,
            # An empty args_json means the call sent no arguments: {}.
            args=None if pb.args_truncated else json.loads(pb.args_json or "{}"),
            args_json=pb.args_json,
            stdout=pb.stdout,
            stderr=pb.stderr,
            error=(
                ExecutionError(error.type, error.message, error.traceback)
                if pb.HasField("error")
                else None
            ),
            started_at=_datetime(pb.start_time),
            duration_ms=pb.duration_ms,
            cpu_time_ms=pb.cpu_time_ms,
            peak_memory_bytes=pb.peak_memory_bytes,
            caller=pb.caller,
            args_truncated=pb.args_truncated,
            result_truncated=pb.result_truncated,
            agent=pb.agent,
            agent_revision=pb.agent_revision,
            conversation_id=pb.conversation_id,
            chain_depth=pb.chain_depth,
        )


def _datetime(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)
