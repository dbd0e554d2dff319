"""Function statistics: what the history says about a function over a time window.

This service checks the query and picks the window's defaults; ``db.stats`` computes
the numbers in the database.
"""

from __future__ import annotations

import datetime as dt

from toolvault.server.db import stats
from toolvault.server.db.engine import Database
from toolvault.server.db.tables import utcnow
from toolvault.server.domain.errors import InvalidArgument
from toolvault.server.domain.names import check_name
from toolvault.server.domain.stats import FunctionStatsInfo, StatsQuery

DEFAULT_WINDOW = dt.timedelta(hours=24)
DEFAULT_FAILURES = 5
MAX_FAILURES = 50


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
        with self._db.read.begin() as session:
            return stats.summary(
                session,
                name,
                version=query.version,
                start_from=start_from,
                start_to=start_to,
                failure_limit=limit,
            )
