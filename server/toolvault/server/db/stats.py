"""Queries of function statistics: what the history says about a function over a window.

Everything is computed in the database with portable SQL (SQLite and PostgreSQL):
counts and maxima with aggregates, and each percentile as the one row at its rank
(``ORDER BY ... LIMIT 1 OFFSET rank - 1``), so no window's rows are loaded into the
server, however many runs it holds. Percentiles use the nearest-rank method: the
smallest value that at least p % of the runs do not exceed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from toolvault.server.db.tables import Execution
from toolvault.server.domain.executions import ExecutionStatus
from toolvault.server.domain.stats import FailureInfo, FunctionStatsInfo


def nearest_rank(percent: int, count: int) -> int:
    """The 1-based rank of the ``percent``-th percentile among ``count`` sorted values."""
    return max(1, -(-percent * count // 100))


def summary(
    session: Session,
    name: str,
    *,
    version: int,
    start_from: dt.datetime,
    start_to: dt.datetime,
    failure_limit: int,
) -> FunctionStatsInfo:
    """The statistics of ``name``'s runs (of ``version``; 0: all) in the window."""
    window = [
        Execution.function_name == name,
        Execution.start_time >= start_from,
        Execution.start_time < start_to,
    ]
    if version:
        window.append(Execution.version == version)
    failed = [*window, Execution.status != ExecutionStatus.OK]
    status_counts = {
        ExecutionStatus(status): count
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
            ExecutionStatus(row.status),
            row.error_type,
            row.error_message,
        )
        for row in session.scalars(
            select(Execution)
            .where(*failed)
            .order_by(Execution.start_time.desc(), Execution.id.desc())
            .limit(failure_limit)
        )
    ]
    durations = [
        _at_rank(session, window, Execution.duration_ms, nearest_rank(p, calls))
        for p in (50, 95, 99)
    ]
    p95_memory = _at_rank(session, window, Execution.peak_memory_bytes, nearest_rank(95, calls))
    return FunctionStatsInfo(
        name=name,
        version=version,
        start_from=start_from,
        start_to=start_to,
        calls=calls,
        cached_calls=cached,
        status_counts=status_counts,
        success_rate=status_counts.get(ExecutionStatus.OK, 0) / calls if calls else 0.0,
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
