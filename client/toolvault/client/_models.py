"""Plain, frozen values the SDK returns, built from the `toolvault.v1` messages.

Callers get Python types (dicts for JSON Schemas and arguments, aware UTC datetimes, an
enum for statuses) instead of protobuf messages with JSON text in string fields. Each model
has a `from_proto` constructor; nothing here talks to the network.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from toolvault.v1 import execution_pb2, function_pb2

__all__ = [
    "Execution",
    "ExecutionError",
    "ExecutionFile",
    "ExecutionStatus",
    "Function",
    "FunctionFailure",
    "FunctionStats",
    "FunctionVersion",
    "Limits",
]

_STATUS_PREFIX = "EXECUTION_STATUS_"
_ISOLATION_PREFIX = "ISOLATION_"
_Enum = TypeVar("_Enum", bound=enum.Enum)


def _member_named(cls: type[_Enum], value: object, what: str) -> _Enum:
    """The member of ``cls`` named ``value``, ignoring case; else a ValueError naming ``what``."""
    if isinstance(value, str) and value.upper() in cls.__members__:
        return cls[value.upper()]
    valid = ", ".join(str(member.value) for member in cls)
    raise ValueError(f"unknown {what} {value!r}; valid values: {valid}")


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
        return _member_named(cls, value, "execution status")

    @classmethod
    def from_proto(cls, value: execution_pb2.ExecutionStatus.ValueType) -> ExecutionStatus:
        """Return the status for a `toolvault.v1.ExecutionStatus` value."""
        return cls(execution_pb2.ExecutionStatus.Name(value).removeprefix(_STATUS_PREFIX))

    def to_proto(self) -> execution_pb2.ExecutionStatus.ValueType:
        """Return the `toolvault.v1.ExecutionStatus` value of this status."""
        return execution_pb2.ExecutionStatus.Value(_STATUS_PREFIX + self.value)


class Isolation(enum.StrEnum):
    """Where a version's calls run; `Isolation("FRESH")` ignores case.

    `WARM` lets calls of the version share warm worker processes of its own, where what a
    call leaves in imported modules may be seen by later calls of the same version;
    `FRESH` gives every call a sandbox process of its own. The server's operator may
    force fresh whatever the version says.
    """

    WARM = "warm"
    FRESH = "fresh"

    @classmethod
    def _missing_(cls, value: object) -> Isolation:
        return _member_named(cls, value, "isolation")

    @classmethod
    def from_proto(cls, value: execution_pb2.Isolation.ValueType) -> Isolation:
        """Return the isolation for a `toolvault.v1.Isolation` value (unset: warm)."""
        if value == execution_pb2.ISOLATION_UNSPECIFIED:
            return cls.WARM
        return cls[execution_pb2.Isolation.Name(value).removeprefix(_ISOLATION_PREFIX)]

    def to_proto(self) -> execution_pb2.Isolation.ValueType:
        """Return the `toolvault.v1.Isolation` value of this isolation."""
        return execution_pb2.Isolation.Value(_ISOLATION_PREFIX + self.name)


@dataclass(frozen=True)
class Limits:
    """Resource limits of a version, with the server's defaults filled in.

    `max_concurrency` is the most calls of the function the server runs at once; 0 means
    unlimited.
    """

    timeout_ms: int
    memory_mb: int
    max_output_bytes: int
    max_concurrency: int = 0


@dataclass(frozen=True)
class FunctionVersion:
    """One immutable version of a function.

    `source` is empty when the version comes from a list; `created` is only meaningful for
    the result of `Client.publish`: False when identical content was already stored.
    `deterministic` versions may be answered from the server's result cache; `isolation`
    says whether its calls may share warm workers; `egress` lists the hosts its calls may
    reach (normalized: `api.example.com:443`, `*.example.org` for ports 80 and 443);
    `secrets` names the secrets of its namespace that its calls get (never their values).
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
    deterministic: bool = False
    isolation: Isolation = Isolation.WARM
    egress: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()

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
                max_concurrency=pb.limits.max_concurrency,
            ),
            allowed_imports=tuple(pb.allowed_imports),
            created_at=_datetime(pb.create_time),
            created=created,
            deterministic=pb.deterministic,
            isolation=Isolation.from_proto(pb.isolation),
            egress=tuple(pb.egress),
            secrets=tuple(pb.secrets),
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
class EgressRequest:
    """One connection a run asked its sandbox's door to the network for.

    `address` is where the door connected ("" if it did not); `method` and `status` are
    those of the connection's first HTTP request and response when it was plain HTTP
    ("" and 0 for TLS), read from the first bytes each side sent: what the function and
    the host chose to write, which nothing checks. `refused` is True when the door
    refused it (the allow-list, an address that is not public, a limit of the call);
    `reason` says why it was refused, failed or cut short, and is "" for a connection
    that ended normally.
    """

    host: str
    port: int
    address: str
    method: str
    status: int
    bytes_sent: int
    bytes_received: int
    duration_ms: float
    refused: bool
    reason: str

    @classmethod
    def from_proto(cls, pb: execution_pb2.EgressRequest) -> EgressRequest:
        """Build a request's record from its message."""
        return cls(
            host=pb.host,
            port=pb.port,
            address=pb.address,
            method=pb.method,
            status=pb.status,
            bytes_sent=pb.bytes_sent,
            bytes_received=pb.bytes_received,
            duration_ms=pb.duration_ms,
            refused=pb.refused,
            reason=pb.reason,
        )


@dataclass(frozen=True)
class ExecutionFile:
    """One file of a run: one it got (`direction` "in") or one it left in `out/` ("out").

    `sha256` is the hex digest of its bytes.
    """

    direction: str
    name: str
    size: int
    sha256: str

    @classmethod
    def from_proto(cls, pb: execution_pb2.ExecutionFile) -> ExecutionFile:
        """Build a file's record from its message."""
        direction = "in" if pb.direction == execution_pb2.FILE_DIRECTION_IN else "out"
        return cls(direction=direction, name=pb.name, size=pb.size, sha256=pb.sha256)


@dataclass(frozen=True)
class Execution:
    """One recorded run of a function version.

    `result` is the parsed return value, None unless the function returned (status OK or
    OUTPUT_SCHEMA_MISMATCH) and the history kept the whole result; `result_json` always
    holds the text the server sent (cut when `result_truncated`). `args` and `args_json`
    work the same way with `args_truncated`. `agent`, `agent_revision`,
    `conversation_id` and `chain_depth` are set for an agent's tool calls and left empty
    for a plain invoke. `cached` is True when no sandbox ran because the result came from
    the cache of a deterministic function; `cached_from` is then the id of the execution
    whose result it is. `trace_id` is the W3C trace id of the call's trace ("" when the
    call was not traced). `isolation` says how its sandbox ran: `WARM` in a warm worker of
    its version, `FRESH` in a process of its own (a fresh version's call, or a warm one's
    that found no worker free); None when none ran (cached) or the server did not say.
    `egress` lists the connections it asked its door to the network for, in order.
    `files` lists the files it got, then those it left in `out/`; `output_files` holds the
    bytes of those it left, by name, when the reply carried them (`invoke`, and
    `execution(..., include_files=True)` while the server keeps them).
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
    cached: bool = False
    cached_from: str = ""
    trace_id: str = ""
    isolation: Isolation | None = None
    egress: tuple[EgressRequest, ...] = ()
    files: tuple[ExecutionFile, ...] = ()
    output_files: dict[str, bytes] = field(default_factory=dict, hash=False)

    @property
    def ok(self) -> bool:
        """True if the function returned a result."""
        return self.status is ExecutionStatus.OK

    @classmethod
    def from_proto(
        cls, pb: execution_pb2.Execution, output_files: Iterable[execution_pb2.File] = ()
    ) -> Execution:
        """Build an execution from its message (and its output files' bytes, if sent)."""
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
            cached=pb.cached,
            cached_from=pb.cached_from,
            trace_id=pb.trace_id,
            isolation=(
                None
                if pb.isolation == execution_pb2.ISOLATION_UNSPECIFIED
                else Isolation.from_proto(pb.isolation)
            ),
            egress=tuple(EgressRequest.from_proto(request) for request in pb.egress),
            files=tuple(ExecutionFile.from_proto(file) for file in pb.files),
            output_files={file.name: file.content for file in output_files},
        )


@dataclass(frozen=True)
class FunctionFailure:
    """One failed run, in brief; `Client.execution(execution_id)` has the rest."""

    execution_id: str
    started_at: datetime
    version: int
    status: ExecutionStatus
    error_type: str
    error_message: str


@dataclass(frozen=True)
class FunctionStats:
    """A function's runs in a time window, summarized.

    Latency percentiles use the nearest-rank method over every run in the window and are
    0 without runs; `status_counts` lists only statuses that occurred; `error_counts`
    (by error type, most frequent first) and `recent_failures` (newest first) cover runs
    whose status is not OK. `cached_calls` counts runs answered from the result cache;
    they are part of `calls`.
    """

    name: str
    version: int | None
    since: datetime
    until: datetime
    calls: int
    cached_calls: int
    status_counts: dict[ExecutionStatus, int]
    success_rate: float
    p50_duration_ms: float
    p95_duration_ms: float
    p99_duration_ms: float
    max_peak_memory_bytes: int
    p95_peak_memory_bytes: int
    error_counts: dict[str, int]
    recent_failures: tuple[FunctionFailure, ...]

    @classmethod
    def from_proto(cls, pb: function_pb2.FunctionStats) -> FunctionStats:
        """Build statistics from their message."""
        return cls(
            name=pb.name,
            version=pb.version or None,
            since=_datetime(pb.start_time_from),
            until=_datetime(pb.start_time_to),
            calls=pb.calls,
            cached_calls=pb.cached_calls,
            status_counts={ExecutionStatus.from_proto(c.status): c.count for c in pb.status_counts},
            success_rate=pb.success_rate,
            p50_duration_ms=pb.p50_duration_ms,
            p95_duration_ms=pb.p95_duration_ms,
            p99_duration_ms=pb.p99_duration_ms,
            max_peak_memory_bytes=pb.max_peak_memory_bytes,
            p95_peak_memory_bytes=pb.p95_peak_memory_bytes,
            error_counts={c.type: c.count for c in pb.error_counts},
            recent_failures=tuple(
                FunctionFailure(
                    execution_id=f.execution_id,
                    started_at=_datetime(f.start_time),
                    version=f.version,
                    status=ExecutionStatus.from_proto(f.status),
                    error_type=f.error_type,
                    error_message=f.error_message,
                )
                for f in pb.recent_failures
            ),
        )


def _datetime(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)
