"""The audit log: every change, with who made it, when, and what it was.

A change and its audit event are written in the same transaction, so neither exists
without the other.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from toolvault.server.db import Database
from toolvault.server.errors import InvalidArgument
from toolvault.server.models import AuditEvent, utcnow
from toolvault.server.names import EVERYWHERE, Scope, namespace_of
from toolvault.server.paging import decode_token, encode_token, page_size

ACTIONS = (
    "function.publish",
    "function.delete",
    "alias.set",
    "alias.delete",
    "agent.create",
    "agent.update",
    "agent.delete",
    "key.create",
    "key.revoke",
)


@dataclass(frozen=True)
class Actor:
    """Who asks for a change: a key's prefix (or ``anonymous`` without auth) and the peer."""

    key: str
    peer: str = ""


@dataclass(frozen=True)
class AuditEventInfo:
    """One recorded change."""

    id: int
    time: dt.datetime
    actor: str
    peer: str
    action: str
    namespace: str
    target: str
    details: dict[str, Any]


@dataclass(frozen=True)
class AuditFilter:
    """Which events to list; empty fields match everything."""

    actor: str = ""
    action: str = ""
    target: str = ""
    start_from: dt.datetime | None = None
    start_to: dt.datetime | None = None


def record(session: Session, actor: Actor, action: str, target: str, **details: Any) -> None:
    """Add the event of a change to the session that makes the change."""
    assert action in ACTIONS, action
    session.execute(
        insert(AuditEvent).values(
            time=utcnow(),
            actor=actor.key,
            peer=actor.peer[:256],
            action=action,
            # Keys live outside namespaces; their events are an admin's to read.
            namespace="" if action.startswith("key.") else namespace_of(target),
            target=target,
            details=json.dumps(details, sort_keys=True),
        )
    )


class AuditLog:
    """Reads the audit log, newest first."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def events(
        self, where: AuditFilter, *, scope: Scope = EVERYWHERE, size: int, token: str
    ) -> tuple[list[AuditEventInfo], str]:
        """A page of events and the next page's token ("" at the end)."""
        query = select(AuditEvent).order_by(AuditEvent.id.desc())
        if where.action:
            if where.action not in ACTIONS:
                raise InvalidArgument(f"action {where.action!r} is not one of {ACTIONS}")
            query = query.where(AuditEvent.action == where.action)
        if where.actor:
            query = query.where(AuditEvent.actor == where.actor)
        if where.target:
            query = query.where(AuditEvent.target == where.target)
        if where.start_from is not None:
            query = query.where(AuditEvent.time >= where.start_from)
        if where.start_to is not None:
            query = query.where(AuditEvent.time < where.start_to)
        if scope.namespaces is not None:
            query = query.where(AuditEvent.namespace.in_(scope.namespaces))
        key = decode_token(token, int)
        if key is not None:
            query = query.where(AuditEvent.id < key[0])
        limit = page_size(size)
        with self._db.read.begin() as session:
            rows = [_info(row) for row in session.scalars(query.limit(limit + 1))]
        if len(rows) <= limit:
            return rows, ""
        return rows[:limit], encode_token([rows[limit - 1].id])


def _info(row: AuditEvent) -> AuditEventInfo:
    return AuditEventInfo(
        id=row.id,
        time=row.time,
        actor=row.actor,
        peer=row.peer,
        action=row.action,
        namespace=row.namespace,
        target=row.target,
        details=json.loads(row.details),
    )
