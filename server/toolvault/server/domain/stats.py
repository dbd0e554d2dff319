"""Function statistics as values: what to summarize, and the summary."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from toolvault.server.domain.executions import ExecutionStatus


@dataclass(frozen=True)
class StatsQuery:
    """Which runs to summarize; ``version`` 0 means every version."""

    name: str
    version: int = 0
    start_from: dt.datetime | None = None
    start_to: dt.datetime | None = None
    failure_limit: int = 0


@dataclass(frozen=True)
class FailureInfo:
    """One failed run, in brief."""

    id: uuid.UUID
    start_time: dt.datetime
    version: int
    status: ExecutionStatus
    error_type: str
    error_message: str


@dataclass(frozen=True)
class FunctionStatsInfo:
    """The statistics of one function's runs in a window (see the .proto for each field)."""

    name: str
    version: int
    start_from: dt.datetime
    start_to: dt.datetime
    # The SDK's FunctionStats has the same fields: both mirror the proto's message, and
    # the server and the SDK share no code.
    # pylint: disable=duplicate-code
    calls: int
    cached_calls: int
    status_counts: dict[ExecutionStatus, int]
    success_rate: float
    p50_duration_ms: float
    p95_duration_ms: float
    p99_duration_ms: float
    max_peak_memory_bytes: int
    p95_peak_memory_bytes: int
    # pylint: enable=duplicate-code
    error_counts: list[tuple[str, int]]
    recent_failures: list[FailureInfo]
