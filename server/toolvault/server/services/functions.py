"""The function store: validates, versions and resolves functions.

The service of the function tables, whose queries are in ``db.functions``.

Each public method is one unit of work (one transaction). Validation that needs no
database (source, schemas, limits) runs before the transaction starts, so a rejected
publish writes nothing.

Calls resolve their refs through :meth:`FunctionStore.resolve_call`, which keeps what each
ref named in memory and checks per call, with one read of a single row, that nothing
changed since: the functions' generation, which triggers bump in the transaction of every
change to a function, version or alias, from any replica (``db.functions.generation``).
So a publish, an alias move or a delete committed anywhere is seen by the next call on
every replica, as with the query per call it replaces.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from toolvault.sandbox import EGRESS_IMPORTS, EgressError, Limits, check_source, parse_rules
from toolvault.server.config import Settings
from toolvault.server.db import audit, functions
from toolvault.server.db.engine import Database
from toolvault.server.db.tables import Function
from toolvault.server.domain.audit import Actor
from toolvault.server.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    not_found,
)
from toolvault.server.domain.functions import (
    FunctionInfo,
    Isolation,
    VersionContent,
    VersionInfo,
)
from toolvault.server.domain.names import (
    ALIAS,
    EVERYWHERE,
    LATEST,
    Scope,
    check_name,
    namespace_of,
    parse_ref,
)
from toolvault.server.domain.paging import decode_token, encode_token, page_size
from toolvault.server.domain.schemas import checked_schema
from toolvault.server.domain.secrets import checked_declarations
from toolvault.server.services.plugins import Plugins

log = logging.getLogger("toolvault.server")
# Publishing retries when a concurrent publisher of a new name wins the insert race.
_PUBLISH_ATTEMPTS = 3
_MAX_REPORTED_ISSUES = 20
# Far above any useful setting; it only keeps the counter's bound meaningful.
MAX_CONCURRENCY = 100_000
MAX_EGRESS_ENTRIES = 64


@dataclass(frozen=True)
class PublishRequest:
    """What a caller asks to publish; empty or zero fields take the server's defaults."""

    name: str
    source: str
    entrypoint: str = ""
    description: str = ""
    input_schema: str = ""
    output_schema: str = ""
    timeout_ms: int = 0
    memory_mb: int = 0
    max_output_bytes: int = 0
    allowed_imports: tuple[str, ...] = ()
    max_concurrency: int = 0
    deterministic: bool = False
    isolation: Isolation = Isolation.WARM
    egress: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()


class _ResolveCache:
    """What refs resolved to, valid for one generation of the function tables.

    Entries of older generations are dropped as soon as a newer generation is seen; an
    entry resolved while the generation moved on is not kept. The least recently used
    entry goes first. Used from the event loop and from worker threads, hence the lock.
    """

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, VersionInfo] = OrderedDict()
        self._generation = -1
        self._lock = threading.Lock()

    def get(self, ref: str, generation: int) -> VersionInfo | None:
        with self._lock:
            if generation != self._generation:
                self._entries.clear()
                self._generation = generation
                return None
            found = self._entries.get(ref)
            if found is not None:
                self._entries.move_to_end(ref)
            return found

    def put(self, ref: str, generation: int, version: VersionInfo) -> None:
        with self._lock:
            if generation != self._generation or self._max_entries == 0:
                return
            self._entries[ref] = version
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)


class FunctionStore:
    """Publishes, reads, aliases and deletes functions."""

    def __init__(self, db: Database, settings: Settings, *, plugins: Plugins | None = None) -> None:
        self._db = db
        self._settings = settings
        self._plugins = plugins or Plugins()
        self._resolved = _ResolveCache(settings.resolve_cache_entries)

    def publish(self, request: PublishRequest, *, actor: Actor) -> tuple[VersionInfo, bool]:
        """Validate and store a version; returns it and whether it is new."""
        name = check_name(request.name)
        content = self._validated_content(request)
        for attempt in range(_PUBLISH_ATTEMPTS):
            try:
                with self._db.write.begin() as session:
                    version, created = functions.add_version(session, name, content)
                    if created:
                        audit.record(
                            session,
                            actor,
                            "function.publish",
                            name,
                            version=version.version,
                            sha256=version.sha256,
                        )
            except (IntegrityError, OperationalError):
                # Another replica inserted the same new name or version first, or
                # PostgreSQL aborted a serialization conflict: the retry sees its row.
                if attempt == _PUBLISH_ATTEMPTS - 1:
                    raise
                continue
            # After the commit, so that plugins hear only of versions that exist.
            if created:
                self._plugins.function_published(version)
            return version, created
        raise AssertionError("unreachable")

    async def resolve_call(self, ref: str) -> VersionInfo:
        """The version a reference names, for a call: from the cache while it holds.

        On SQLite the generation is read on the event loop (a read of a local file in WAL
        mode waits on no writer, and a thread hop costs 25 times as much); only a miss
        goes to a worker thread. On PostgreSQL, whose reads wait on the network, the
        whole lookup runs in a worker thread.
        """
        if self._db.reads_block:
            return await asyncio.to_thread(self.resolve_cached, ref)
        generation = self._generation()
        if generation is not None and (found := self._resolved.get(ref, generation)):
            return found
        return await asyncio.to_thread(self._resolve_and_keep, ref, generation)

    def resolve_cached(self, ref: str) -> VersionInfo:
        """:meth:`resolve`, from the cache while nothing changed since (blocking)."""
        generation = self._generation()
        if generation is not None and (found := self._resolved.get(ref, generation)):
            return found
        return self._resolve_and_keep(ref, generation)

    def _resolve_and_keep(self, ref: str, generation: int | None) -> VersionInfo:
        # Resolved after the generation was read, so at least as new as it says.
        version = self.resolve(ref)
        if generation is not None:
            self._resolved.put(ref, generation, version)
        return version

    def _generation(self) -> int | None:
        """The generation of the function tables, or None when it cannot be read now.

        Without it the call resolves as if nothing were cached; if the database is away,
        that query fails the call the usual way.
        """
        try:
            return functions.generation(self._db)
        except (SQLAlchemyError, self._db.dbapi_error):
            log.warning("cannot read the functions' generation: resolving uncached", exc_info=True)
            return None

    def resolve(self, ref: str) -> VersionInfo:
        """The version a reference names."""
        name, selector = parse_ref(ref)
        # One query on the hot path; the lookups below only explain a miss.
        with self._db.engine.connect() as connection:
            found = functions.resolve_version(connection, name, selector)
        if found is not None:
            return found
        with self._db.read.begin() as session:
            function = self._function(session, name)
            if selector == LATEST:
                number = function.latest_version
            elif isinstance(selector, int):
                number = selector
            elif selector in (aliases := {a.name: a.version for a in function.aliases}):
                number = aliases[selector]
            else:
                raise NotFound(f"function {name!r} has no alias {selector!r}")
            version = functions.find_version(session, function, number)
            if version is None:
                raise NotFound(
                    f"function {name!r} has no version {number} "
                    f"(latest is {function.latest_version})"
                )
            return version

    def get(self, ref: str) -> tuple[FunctionInfo, VersionInfo]:
        """A function and the version ``ref`` resolves to."""
        version = self.resolve(ref)
        with self._db.read.begin() as session:
            (function,) = functions.function_infos(session, [self._function(session, version.name)])
            return function, version

    def functions(
        self, *, scope: Scope = EVERYWHERE, size: int, token: str
    ) -> tuple[list[FunctionInfo], str]:
        """A page of the functions in ``scope`` by name and the next page's token."""
        key = decode_token(token, str)
        limit = page_size(size)
        with self._db.read.begin() as session:
            rows = functions.list_functions(
                session, scope=scope, after=key[0] if key else None, limit=limit + 1
            )
            infos = functions.function_infos(session, rows[:limit])
        more = len(rows) > limit
        return infos, encode_token([infos[-1].name]) if more else ""

    def versions(self, name: str, *, size: int, token: str) -> tuple[list[VersionInfo], str]:
        """A page of a function's versions, newest first, and the next page's token."""
        key = decode_token(token, int)
        limit = page_size(size)
        with self._db.read.begin() as session:
            function = self._function(session, check_name(name))
            before = key[0] if key else None
            rows = functions.list_versions(session, function, before=before, limit=limit + 1)
        more = len(rows) > limit
        return rows[:limit], encode_token([rows[limit - 1].version]) if more else ""

    def set_alias(self, name: str, alias: str, version: int, *, actor: Actor) -> FunctionInfo:
        """Create or move ``alias`` to ``version``."""
        check_name(name)
        if not ALIAS.fullmatch(alias) or alias == LATEST:
            raise InvalidArgument(
                f"alias {alias!r} is invalid: use 1 to 64 of a-z, 0-9, _ and -, starting with "
                f"a letter; {LATEST!r} is kept for the newest version"
            )
        with self._db.write.begin() as session:
            function = self._function(session, name, lock=True)
            if version < 1 or functions.find_version(session, function, version) is None:
                raise NotFound(
                    f"function {name!r} has no version {version} "
                    f"(latest is {function.latest_version})"
                )
            functions.set_alias(session, function, alias, version)
            audit.record(session, actor, "alias.set", name, alias=alias, version=version)
            (info,) = functions.function_infos(session, [function])
            return info

    def delete_alias(self, name: str, alias: str, *, actor: Actor) -> None:
        """Remove ``alias``."""
        with self._db.write.begin() as session:
            function = self._function(session, check_name(name), lock=True)
            if not functions.delete_alias(session, function, alias):
                raise NotFound(f"function {name!r} has no alias {alias!r}")
            audit.record(session, actor, "alias.delete", name, alias=alias)

    def delete(self, name: str, *, actor: Actor) -> list[VersionInfo]:
        """Delete a function with its versions and aliases; returns the versions."""
        with self._db.write.begin() as session:
            function = self._function(session, check_name(name), lock=True)
            deleted = functions.delete_function(session, function)
            audit.record(session, actor, "function.delete", name, versions=len(deleted))
            return deleted

    def _function(self, session: Session, name: str, *, lock: bool = False) -> Function:
        function = functions.find_function(session, name, lock=lock)
        if function is None:
            raise not_found("function", name)
        return function

    def _validated_content(self, request: PublishRequest) -> VersionContent:
        settings = self._settings
        size = len(request.source.encode())
        if not request.source.strip():
            raise InvalidArgument("source is empty")
        if size > settings.max_source_bytes:
            raise InvalidArgument(
                f"source is {size} bytes, more than the limit of {settings.max_source_bytes}"
            )
        egress = self._checked_egress(request.egress, namespace_of(request.name))
        # A version that reaches the network may import the stdlib's clients too.
        permitted = settings.allowed_imports + (EGRESS_IMPORTS if egress else ())
        allowed = tuple(sorted(set(request.allowed_imports or permitted)))
        refused = [m for m in allowed if m not in permitted]
        if refused:
            raise InvalidArgument(
                f"allowed_imports {refused} are not on the server's allow-list "
                f"({', '.join(sorted(permitted))})"
            )
        entrypoint = request.entrypoint or "main"
        declared = checked_declarations(request.secrets)
        checked = check_source(
            request.source,
            entrypoint=entrypoint,
            allowed_imports=allowed,
            filename=request.name,
            secrets=bool(declared),
        )
        if not checked.ok:
            problems = [
                f"line {i.line}, column {i.column}: {i.message}" if i.line else i.message
                for i in checked.issues[:_MAX_REPORTED_ISSUES]
            ]
            raise InvalidArgument("source rejected: " + "; ".join(problems))
        return VersionContent(
            source=request.source,
            entrypoint=entrypoint,
            description=request.description or checked.docstring or "",
            input_schema=checked_schema(request.input_schema, "input_schema_json"),
            output_schema=checked_schema(request.output_schema, "output_schema_json"),
            limits=Limits(
                timeout_ms=_limit(request.timeout_ms, "timeout_ms", settings, 10),
                memory_mb=_limit(request.memory_mb, "memory_mb", settings, 64),
                max_output_bytes=_limit(
                    request.max_output_bytes, "max_output_bytes", settings, 1024
                ),
            ),
            allowed_imports=allowed,
            max_concurrency=_max_concurrency(request.max_concurrency),
            deterministic=request.deterministic,
            isolation=request.isolation,
            egress=egress,
            secrets=declared,
        )

    def _checked_egress(self, entries: tuple[str, ...], namespace: str) -> tuple[str, ...]:
        """The normalized egress entries of a version of ``namespace``, within its ceiling."""
        if len(entries) > MAX_EGRESS_ENTRIES:
            raise InvalidArgument(
                f"egress has {len(entries)} entries, more than the limit of {MAX_EGRESS_ENTRIES}"
            )
        try:
            rules = parse_rules(entries)
        except EgressError as exc:
            raise InvalidArgument(str(exc)) from None
        if rules and self._settings.egress == "off":
            raise FailedPrecondition(
                "egress is off on this server (TOOLVAULT_EGRESS=off): a version cannot "
                "declare hosts to reach"
            )
        ceiling = self._settings.egress_ceiling(namespace)
        for rule in rules:
            if not any(allowed.covers(rule) for allowed in ceiling):
                listed = ", ".join(str(allowed) for allowed in ceiling) or "nothing"
                raise PermissionDenied(
                    f"egress to {rule} is beyond what namespace {namespace!r} may reach "
                    f"(TOOLVAULT_EGRESS_NAMESPACES allows it {listed})"
                )
        return tuple(sorted(str(rule) for rule in rules))


def _limit(value: int, field: str, settings: Settings, minimum: int) -> int:
    if value == 0:
        default: int = getattr(settings, f"default_{field}")
        return default
    maximum: int = getattr(settings, f"max_{field}")
    if not minimum <= value <= maximum:
        raise InvalidArgument(
            f"limits.{field} is {value}: it must be between {minimum} and {maximum}"
        )
    return value


def _max_concurrency(value: int) -> int:
    if not 0 <= value <= MAX_CONCURRENCY:
        raise InvalidArgument(
            f"limits.max_concurrency is {value}: it must be between 0 (unlimited) and "
            f"{MAX_CONCURRENCY}"
        )
    return value
