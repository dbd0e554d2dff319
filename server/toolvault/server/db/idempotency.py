"""Queries of Invoke's idempotency keys.

Every function takes the session or connection of the caller's unit of work and never
commits; the rules (claims, leases, expiry) are ``services.idempotency``'s.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Connection, delete, update
from sqlalchemy.orm import Session

from toolvault.server.db.tables import IdempotencyKey


def delete_expired(session: Session, before: dt.datetime) -> None:
    """Delete the keys first used (or, if pending, last renewed) before ``before``."""
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before))


def locked(session: Session, key: str) -> IdempotencyKey | None:
    """The row of ``key``, locked for the rest of the unit of work; None if there is none."""
    return session.get(IdempotencyKey, key, with_for_update=True)


def add(session: Session, key: str, fingerprint: str, now: dt.datetime) -> None:
    """Insert ``key`` as pending; IntegrityError if a concurrent call inserted it first."""
    session.add(IdempotencyKey(key=key, fingerprint=fingerprint, created_at=now))
    session.flush()


def take_over(row: IdempotencyKey, now: dt.datetime) -> None:
    """Restart the lease of a locked pending key whose owner stopped renewing it."""
    row.created_at = now


def renew(session: Session, key: str, now: dt.datetime) -> None:
    """Restart the lease of ``key`` if it is still pending."""
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.key == key, IdempotencyKey.execution_id.is_(None))
        .values(created_at=now)
    )


def release(session: Session, key: str) -> None:
    """Delete ``key`` if it is still pending."""
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.key == key, IdempotencyKey.execution_id.is_(None)
        )
    )


def bind(connection: Connection, key: str, execution_id: uuid.UUID) -> None:
    """Record in the caller's unit of work that ``key``'s call made ``execution_id``."""
    connection.execute(
        update(IdempotencyKey).where(IdempotencyKey.key == key).values(execution_id=execution_id)
    )
