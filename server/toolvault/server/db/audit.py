"""Queries of the audit log.

A change and its audit event are written in the same transaction, so neither exists
without the other: :func:`record` takes the session of the unit of work that makes the
change, and never commits.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from toolvault.server.db.tables import AuditEvent, utcnow
from toolvault.server.domain.audit import ACTIONS, Actor, AuditEventInfo, AuditFilter
from toolvault.server.domain.names import Scope, namespace_of


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


def page(
    session: Session, where: AuditFilter, *, scope: Scope, before: int | None, limit: int
) -> list[AuditEventInfo]:
    """Up to ``limit`` events in ``scope`` that ``where`` selects, newest first.

    ``before`` is the id of the last event of the previous page.
    """
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if where.action:
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
    if before is not None:
        query = query.where(AuditEvent.id < before)
    return [_info(row) for row in session.scalars(query.limit(limit))]


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
