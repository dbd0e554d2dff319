"""Queries of the API keys table.

Every function takes the session of the caller's unit of work and never commits. Keys
come back as the domain's :class:`KeyInfo` (never the secret's digest), or as rows for
``services.keys`` to check a secret against or to revoke.
"""

from __future__ import annotations

import json

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from toolvault.server.db.tables import ApiKey, utcnow
from toolvault.server.domain.access import KeyInfo, Role


def add(
    session: Session,
    *,
    prefix: str,
    salt: str,
    digest: str,
    role: Role,
    namespaces: tuple[str, ...] | None,
    agent: str,
    description: str,
    created_by: str,
) -> KeyInfo:
    """Insert a new key (``namespaces`` None: all of them); only its secret's digest is kept."""
    row = ApiKey(
        prefix=prefix,
        salt=salt,
        digest=digest,
        role=role.value,
        namespaces=None if namespaces is None else json.dumps(sorted(namespaces)),
        agent=agent,
        description=description,
        created_at=utcnow(),
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return info(row)


def by_prefix(session: Session, prefix: str, *, lock: bool = False) -> ApiKey | None:
    """The key whose public prefix is ``prefix``; ``lock`` takes a row lock for a write."""
    query = select(ApiKey).where(ApiKey.prefix == prefix)
    return session.scalar(query.with_for_update() if lock else query)


def page(session: Session, *, before: int | None, limit: int) -> list[ApiKey]:
    """Up to ``limit`` keys, newest first, below id ``before``."""
    query = select(ApiKey).order_by(ApiKey.id.desc())
    if before is not None:
        query = query.where(ApiKey.id < before)
    return list(session.scalars(query.limit(limit)))


def revoke(row: ApiKey) -> None:
    """Mark a locked key's row revoked now."""
    row.revoked_at = utcnow()


def lock_table(session: Session) -> None:
    """Hold the keys table against concurrent inserts to the end of the unit of work.

    On PostgreSQL; SQLite's write transaction holds the whole database already.
    """
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        session.execute(text("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE"))


def any_key(session: Session) -> bool:
    """Whether the table holds any key, revoked or not."""
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def info(row: ApiKey) -> KeyInfo:
    """A key's row as listed."""
    return KeyInfo(
        prefix=row.prefix,
        role=Role(row.role),
        namespaces=None if row.namespaces is None else tuple(json.loads(row.namespaces)),
        agent=row.agent,
        description=row.description,
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
    )
