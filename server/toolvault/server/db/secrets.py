"""Queries of the secrets table.

Every function takes the session of the caller's unit of work and never commits. Rows
hold only ciphertext; encrypting and decrypting is ``services.secrets``'s, which gets
rows from here and the listing as the domain's :class:`SecretInfo`.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from toolvault.server.db.tables import Secret, utcnow
from toolvault.server.domain.names import Scope, namespace_of
from toolvault.server.domain.secrets import SecretInfo


def put(session: Session, name: str, ciphertext: str, updated_by: str) -> tuple[SecretInfo, bool]:
    """Store ``ciphertext`` as the value of ``name``; returns it and whether it is new."""
    now = utcnow()
    row = find(session, name, lock=True)
    created = row is None
    if row is None:
        row = Secret(name=name, namespace=namespace_of(name), created_at=now)
        session.add(row)
    row.ciphertext = ciphertext
    row.updated_at = now
    row.updated_by = updated_by
    session.flush()
    return info(row), created


def find(session: Session, name: str, *, lock: bool = False) -> Secret | None:
    """The secret ``name``; ``lock`` takes a row lock for a following write."""
    query = select(Secret).where(Secret.name == name)
    return session.scalar(query.with_for_update() if lock else query)


def named(session: Session, names: Collection[str]) -> list[Secret]:
    """The rows of those of ``names`` (qualified) that exist."""
    return list(session.scalars(select(Secret).where(Secret.name.in_(names))))


def page(
    session: Session, *, scope: Scope, namespace: str, after: str | None, limit: int
) -> list[SecretInfo]:
    """Up to ``limit`` secrets in ``scope`` (and ``namespace`` if set) by name, after ``after``."""
    query = select(Secret).order_by(Secret.name)
    if scope.namespaces is not None:
        query = query.where(Secret.namespace.in_(scope.namespaces))
    if namespace:
        query = query.where(Secret.namespace == namespace)
    if after is not None:
        query = query.where(Secret.name > after)
    return [info(row) for row in session.scalars(query.limit(limit))]


def all_rows(session: Session) -> list[Secret]:
    """Every secret, locked for rewriting (key rotation)."""
    return list(session.scalars(select(Secret).order_by(Secret.id).with_for_update()))


def delete(session: Session, row: Secret) -> None:
    """Delete a secret's row."""
    session.delete(row)
    session.flush()


def info(row: Secret) -> SecretInfo:
    """A secret's row as listed."""
    return SecretInfo(
        name=row.name,
        created_at=row.created_at,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )
