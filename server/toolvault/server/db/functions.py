"""Queries of the function tables: functions, their versions and aliases.

Every function takes the session (or connection) of the caller's unit of work and never
commits: transactions belong to the services. Results are the domain's frozen values,
or rows the caller hands back to another query of this module.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, tuple_
from sqlalchemy.orm import Session, selectinload

from toolvault.sandbox import Limits
from toolvault.server.db.engine import Database
from toolvault.server.db.tables import Alias, Function, FunctionVersion, utcnow
from toolvault.server.domain.functions import (
    FunctionInfo,
    Isolation,
    VersionContent,
    VersionInfo,
)
from toolvault.server.domain.names import Scope, namespace_of


def _version_info(row: FunctionVersion | Row[Any], name: str) -> VersionInfo:
    return VersionInfo(
        name=name,
        version=row.version,
        sha256=row.sha256,
        content=VersionContent(
            source=row.source,
            entrypoint=row.entrypoint,
            description=row.description,
            input_schema=row.input_schema,
            output_schema=row.output_schema,
            limits=Limits(row.timeout_ms, row.memory_mb, row.max_output_bytes),
            allowed_imports=tuple(json.loads(row.allowed_imports)),
            max_concurrency=row.max_concurrency,
            deterministic=row.deterministic,
            isolation=Isolation(row.isolation),
            egress=tuple(json.loads(row.egress)),
            secrets=tuple(json.loads(row.secrets)),
        ),
        created_at=row.created_at,
    )


def function_infos(session: Session, rows: list[Function]) -> list[FunctionInfo]:
    """Detach function rows, with their aliases and latest descriptions (one query)."""
    latest = {(row.id, row.latest_version) for row in rows}
    descriptions: dict[int, str] = {}
    if latest:
        found = session.execute(
            select(FunctionVersion.function_id, FunctionVersion.description).where(
                tuple_(FunctionVersion.function_id, FunctionVersion.version).in_(latest)
            )
        )
        descriptions = {function_id: text for function_id, text in found}
    return [
        FunctionInfo(
            name=row.name,
            latest_version=row.latest_version,
            aliases={alias.name: alias.version for alias in row.aliases},
            description=descriptions.get(row.id, ""),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in rows
    ]


def find_function(session: Session, name: str, *, lock: bool = False) -> Function | None:
    """The function named ``name``; ``lock`` takes a row lock for a following write."""
    query = select(Function).where(Function.name == name).options(selectinload(Function.aliases))
    return session.scalar(query.with_for_update() if lock else query)


_FUNCTIONS = Function.metadata.tables["functions"]
_VERSIONS = Function.metadata.tables["function_versions"]
_ALIASES = Function.metadata.tables["aliases"]


# Built once: building a select and computing its cache key cost more than running it.
_RESOLVE = (
    select(_VERSIONS)
    .join(_FUNCTIONS, _VERSIONS.c.function_id == _FUNCTIONS.c.id)
    .where(_FUNCTIONS.c.name == bindparam("name"))
)
_RESOLVE_LATEST = _RESOLVE.where(_VERSIONS.c.version == _FUNCTIONS.c.latest_version)
_RESOLVE_NUMBER = _RESOLVE.where(_VERSIONS.c.version == bindparam("number"))
_RESOLVE_ALIAS = _RESOLVE.where(
    _VERSIONS.c.version
    == select(_ALIASES.c.version)
    .where(_ALIASES.c.function_id == _FUNCTIONS.c.id, _ALIASES.c.name == bindparam("alias"))
    .scalar_subquery()
)


def resolve_version(connection: Connection, name: str, selector: int | str) -> VersionInfo | None:
    """The version of ``name`` that ``selector`` names (a number, "latest" or an alias).

    A Core query on a bare connection, since every call resolves a ref: it costs a
    quarter of the ORM's, and a session around it as much again.
    """
    if isinstance(selector, int):
        query, values = _RESOLVE_NUMBER, {"name": name, "number": selector}
    elif selector == "latest":
        query, values = _RESOLVE_LATEST, {"name": name}
    else:
        query, values = _RESOLVE_ALIAS, {"name": name, "alias": selector}
    row = connection.execute(query, values).first()
    return _version_info(row, name) if row else None


def generation(db: Database) -> int:
    """The functions' generation: it grows with every change to a function, version or alias.

    Read as committed right now (``Database.scalar_now``): a resolve cache that saw this
    value holds for every ref while it stays the same. Triggers keep it (migration 0007).
    """
    return int(db.scalar_now("SELECT value FROM functions_generation WHERE id = 1"))


def find_version(session: Session, function: Function, version: int) -> VersionInfo | None:
    """Version ``version`` of ``function``, if it exists."""
    row = session.scalar(
        select(FunctionVersion).where(
            FunctionVersion.function_id == function.id, FunctionVersion.version == version
        )
    )
    return _version_info(row, function.name) if row else None


def add_version(session: Session, name: str, content: VersionContent) -> tuple[VersionInfo, bool]:
    """Store ``content`` as the next version of ``name``, or return the identical one.

    The function row is locked first (``FOR UPDATE``; on SQLite the write transaction
    holds the database lock), so concurrent publishers get dense, unique numbers.
    """
    sha256 = content.sha256()
    now = utcnow()
    function = find_function(session, name, lock=True)
    if function is None:
        function = Function(
            name=name,
            namespace=namespace_of(name),
            latest_version=0,
            created_at=now,
            updated_at=now,
        )
        session.add(function)
    else:
        existing = session.scalar(
            select(FunctionVersion).where(
                FunctionVersion.function_id == function.id, FunctionVersion.sha256 == sha256
            )
        )
        if existing is not None:
            return _version_info(existing, name), False
    function.latest_version += 1
    function.updated_at = now
    row = FunctionVersion(
        function=function,
        version=function.latest_version,
        sha256=sha256,
        source=content.source,
        entrypoint=content.entrypoint,
        description=content.description,
        input_schema=content.input_schema,
        output_schema=content.output_schema,
        timeout_ms=content.limits.timeout_ms,
        memory_mb=content.limits.memory_mb,
        max_output_bytes=content.limits.max_output_bytes,
        allowed_imports=json.dumps(sorted(content.allowed_imports)),
        created_at=now,
        max_concurrency=content.max_concurrency,
        deterministic=content.deterministic,
        isolation=content.isolation.value,
        egress=json.dumps(sorted(content.egress)),
        secrets=json.dumps(sorted(content.secrets)),
    )
    session.add(row)
    session.flush()
    return _version_info(row, name), True


def list_functions(
    session: Session, *, scope: Scope, after: str | None, limit: int
) -> list[Function]:
    """Up to ``limit`` functions in ``scope`` ordered by name, starting after ``after``."""
    query = select(Function).options(selectinload(Function.aliases)).order_by(Function.name)
    if scope.namespaces is not None:
        query = query.where(Function.namespace.in_(scope.namespaces))
    if after is not None:
        query = query.where(Function.name > after)
    return list(session.scalars(query.limit(limit)))


def list_versions(
    session: Session, function: Function, *, before: int | None, limit: int
) -> list[VersionInfo]:
    """Up to ``limit`` versions of ``function``, newest first, below version ``before``."""
    query = (
        select(FunctionVersion)
        .where(FunctionVersion.function_id == function.id)
        .order_by(FunctionVersion.version.desc())
    )
    if before is not None:
        query = query.where(FunctionVersion.version < before)
    return [_version_info(row, function.name) for row in session.scalars(query.limit(limit))]


def set_alias(session: Session, function: Function, alias: str, version: int) -> None:
    """Point ``alias`` at ``version`` (which the caller has checked exists)."""
    row = session.get(Alias, (function.id, alias))
    if row is None:
        function.aliases.append(
            Alias(function_id=function.id, name=alias, version=version, updated_at=utcnow())
        )
    else:
        row.version = version
        row.updated_at = utcnow()
    session.flush()


def delete_alias(session: Session, function: Function, alias: str) -> bool:
    """Remove ``alias``; False if it did not exist."""
    row = session.get(Alias, (function.id, alias))
    if row is None:
        return False
    function.aliases.remove(row)
    session.flush()
    return True


def delete_function(session: Session, function: Function) -> list[VersionInfo]:
    """Delete ``function`` with its versions and aliases (the history stays); say which."""
    versions = select(FunctionVersion).where(FunctionVersion.function_id == function.id)
    deleted = [_version_info(row, function.name) for row in session.scalars(versions)]
    session.delete(function)
    session.flush()
    return deleted
