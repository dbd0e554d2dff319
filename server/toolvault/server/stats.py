"""Function statistics: what the history says about a function over a time window.

Everything is computed in the database with portable SQL (SQLite and PostgreSQL):
counts and maxima with aggregates, and each percentile as the one row at its rank
(``ORDER BY ... LIMIT 1 OFFSET rank - 1``), so no window's rows are loaded into the
server, however many runs it holds. Percentiles use the nearest-rank method: the
smallest value that at least p % of the runs do not exceed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from toolvault.server.db import Database
from toolvault.server.errors import InvalidArgument
from toolvault.server.functions import check_name
from toolvault.server.models import Execution, utcnow

DEFAULT_WINDOW = dt.timedelta(hours=24)
DEFAULT_FAILURES = 5
MAX_FAILURES = 50


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
    status: str
    error_type: str
    error_message: str


@dataclass(frozen=True)
class FunctionStatsInfo:
    """The statistics of one function's runs in a window (see the .proto for each field)."""

    name: str
    version: int
    start_from: dt.datetime
    start_to: dt.datetime
    calls: int
    cached_calls: int
    status_counts: dict[str, int]
    success_rate: float
    p50_duration_ms: float
    p95_duration_ms: float
    p99_duration_ms: float
    max_peak_memory_bytes: int
    p95_peak_memory_bytes: int
    error_counts: list[tuple[str, int]]
    recent_failures: list[FailureInfo]


def nearest_rank(percent: int, count: int) -> int:
    """The 1-based rank of the ``percent``-th percentile among ``count`` sorted values."""
    return max(1, -(-percent * count // 100))


class FunctionStatistics:
    """Computes function statistics from the execution history, one read per call."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def stats(self, query: StatsQuery) -> FunctionStatsInfo:
        """Summarize the runs ``query`` selects; a window without runs gives zeros."""
        name = check_name(query.name)
        start_to = query.start_to or utcnow()
        start_from = query.start_from or start_to - DEFAULT_WINDOW
        if start_from >= start_to:
            raise InvalidArgument(
                f"start_time_from ({start_from.isoformat()}) must be before "
                f"start_time_to ({start_to.isoformat()})"
            )
        limit = min(query.failure_limit or DEFAULT_FAILURES, MAX_FAILURES)
        window = [
            Execution.function_name == name,
            Execution.start_time >= start_from,
            Execution.start_time < start_to,
        ]
        if query.version:
            window.append(Execution.version == query.version)
        failed = [*window, Execution.status != "OK"]
        with self._db.read.begin() as session:
            status_counts = {
                status: count
                for status, count in session.execute(
                    select(Execution.status, func.count())
                    .where(*window)
                    .group_by(Execution.status)
                    .order_by(Execution.status)
                )
            }
            calls = sum(status_counts.values())
            cached, max_memory = session.execute(
                select(
                    func.count().filter(Execution.cached.is_(True)),
                    func.max(Execution.peak_memory_bytes),
                ).where(*window)
            ).one()
            error_counts = [
                (error_type, count)
                for error_type, count in session.execute(
                    select(Execution.error_type, func.count())
                    .where(*failed)
                    .group_by(Execution.error_type)
                    .order_by(func.count().desc(), Execution.error_type)
                )
            ]
            failures = [
                FailureInfo(
                    row.id,
                    row.start_time,
                    row.version,
                    row.status,
                    row.error_type,
                    row.error_message,
                )
                for row in session.scalars(
                    select(Execution)
                    .where(*failed)
                    .order_by(Execution.start_time.desc(), Execution.id.desc())
                    .limit(limit)
                )
            ]
            durations = [
                _at_rank(session, window, Execution.duration_ms, nearest_rank(p, calls))
                for p in (50, 95, 99)
            ]
            p95_memory = _at_rank(
                session, window, Execution.peak_memory_bytes, nearest_rank(95, calls)
            )
        return FunctionStatsInfo(
            name=name,
            version=query.version,
            start_from=start_from,
            start_to=start_to,
            calls=calls,
            cached_calls=cached,
            status_counts=status_counts,
            success_rate=status_counts.get("OK", 0) / calls if calls else 0.0,
            p50_duration_ms=float(durations[0] or 0),
            p95_duration_ms=float(durations[1] or 0),
            p99_duration_ms=float(durations[2] or 0),
            max_peak_memory_bytes=max_memory or 0,
            p95_peak_memory_bytes=int(p95_memory or 0),
            error_counts=error_counts,
            recent_failures=failures,
        )


def _at_rank(
    session: Session, where: list[ColumnElement[bool]], column: Any, rank: int
) -> Any | None:
    """The ``rank``-th smallest value of ``column`` among the rows ``where`` selects."""
    return session.scalar(select(column).where(*where).order_by(column).limit(1).offset(rank - 1))
