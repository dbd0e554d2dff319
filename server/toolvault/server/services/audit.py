"""The audit log's reads: every change, with who made it, when, and what it was.

Changes are recorded by the services that make them (``db.audit.record``, in the
change's own transaction); this service lists them for the AuditService.
"""

from __future__ import annotations

from toolvault.server.db import audit
from toolvault.server.db.engine import Database
from toolvault.server.domain.audit import ACTIONS, AuditEventInfo, AuditFilter
from toolvault.server.domain.errors import InvalidArgument
from toolvault.server.domain.names import EVERYWHERE, Scope
from toolvault.server.domain.paging import decode_token, encode_token, page_size


class AuditLog:
    """Reads the audit log, newest first."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def events(
        self, where: AuditFilter, *, scope: Scope = EVERYWHERE, size: int, token: str
    ) -> tuple[list[AuditEventInfo], str]:
        """A page of events and the next page's token ("" at the end)."""
        if where.action and where.action not in ACTIONS:
            raise InvalidArgument(f"action {where.action!r} is not one of {ACTIONS}")
        key = decode_token(token, int)
        limit = page_size(size)
        with self._db.read.begin() as session:
            rows = audit.page(
                session, where, scope=scope, before=key[0] if key else None, limit=limit + 1
            )
        if len(rows) <= limit:
            return rows, ""
        return rows[:limit], encode_token([rows[limit - 1].id])
