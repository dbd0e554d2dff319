"""The function store: validates, versions and resolves functions.

Each public method is one unit of work (one transaction). Validation that needs no
database (source, schemas, limits) runs before the transaction starts, so a rejected
publish writes nothing.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

import jsonschema
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from toolvault.sandbox import Limits, check_source
from toolvault.server import audit, names, store
from toolvault.server.audit import Actor
from toolvault.server.config import Settings
from toolvault.server.db import Database
from toolvault.server.errors import InvalidArgument, NotFound
from toolvault.server.models import Function
from toolvault.server.names import EVERYWHERE, Scope
from toolvault.server.paging import decode_token, encode_token, page_size
from toolvault.server.plugins import Plugins
from toolvault.server.store import FunctionInfo, VersionContent, VersionInfo

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
NAME_RULE = "1 to 64 of a-z, 0-9 and _, starting with a letter"
ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")
LATEST = "latest"
# Publishing retries when a concurrent publisher of a new name wins the insert race.
_PUBLISH_ATTEMPTS = 3
_MAX_REPORTED_ISSUES = 20
MAX_JSON_DEPTH = 64
# Far above any useful setting; it only keeps the counter's bound meaningful.
MAX_CONCURRENCY = 100_000


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


def check_name(name: str, field: str = "name") -> str:
    """``name`` if it is a valid function name, else InvalidArgument naming ``field``."""
    return names.check_qualified(name, NAME, NAME_RULE, field)


def parse_ref(ref: str) -> tuple[str, int | str]:
    """Split ``name``, ``name@3`` or ``name@alias`` into the name and a version or alias."""
    name, sep, selector = ref.partition("@")
    check_name(name, "ref")
    if not sep:
        return name, LATEST
    if selector.isdigit() and int(selector) > 0:
        return name, int(selector)
    if ALIAS.fullmatch(selector):
        return name, selector
    raise InvalidArgument(
        f"ref {ref!r} is invalid: expected NAME, NAME@VERSION (a positive number) or NAME@ALIAS"
    )


class FunctionStore:
    """Publishes, reads, aliases and deletes functions."""

    def __init__(self, db: Database, settings: Settings, *, plugins: Plugins | None = None) -> None:
        self._db = db
        self._settings = settings
        self._plugins = plugins or Plugins()

    def publish(self, request: PublishRequest, *, actor: Actor) -> tuple[VersionInfo, bool]:
        """Validate and store a version; returns it and whether it is new."""
        name = check_name(request.name)
        content = self._validated_content(request)
        for attempt in range(_PUBLISH_ATTEMPTS):
            try:
                with self._db.write.begin() as session:
                    version, created = store.add_version(session, name, content)
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

    def resolve(self, ref: str) -> VersionInfo:
        """The version a reference names."""
        name, selector = parse_ref(ref)
        # One query on the hot path; the lookups below only explain a miss.
        with self._db.engine.connect() as connection:
            found = store.resolve_version(connection, name, selector)
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
            version = store.find_version(session, function, number)
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
            (function,) = store.function_infos(session, [self._function(session, version.name)])
            return function, version

    def functions(
        self, *, scope: Scope = EVERYWHERE, size: int, token: str
    ) -> tuple[list[FunctionInfo], str]:
        """A page of the functions in ``scope`` by name and the next page's token."""
        key = decode_token(token, str)
        limit = page_size(size)
        with self._db.read.begin() as session:
            rows = store.list_functions(
                session, scope=scope, after=key[0] if key else None, limit=limit + 1
            )
            infos = store.function_infos(session, rows[:limit])
        more = len(rows) > limit
        return infos, encode_token([infos[-1].name]) if more else ""

    def versions(self, name: str, *, size: int, token: str) -> tuple[list[VersionInfo], str]:
        """A page of a function's versions, newest first, and the next page's token."""
        key = decode_token(token, int)
        limit = page_size(size)
        with self._db.read.begin() as session:
            function = self._function(session, check_name(name))
            before = key[0] if key else None
            rows = store.list_versions(session, function, before=before, limit=limit + 1)
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
            if version < 1 or store.find_version(session, function, version) is None:
                raise NotFound(
                    f"function {name!r} has no version {version} "
                    f"(latest is {function.latest_version})"
                )
            store.set_alias(session, function, alias, version)
            audit.record(session, actor, "alias.set", name, alias=alias, version=version)
            (info,) = store.function_infos(session, [function])
            return info

    def delete_alias(self, name: str, alias: str, *, actor: Actor) -> None:
        """Remove ``alias``."""
        with self._db.write.begin() as session:
            function = self._function(session, check_name(name), lock=True)
            if not store.delete_alias(session, function, alias):
                raise NotFound(f"function {name!r} has no alias {alias!r}")
            audit.record(session, actor, "alias.delete", name, alias=alias)

    def delete(self, name: str, *, actor: Actor) -> int:
        """Delete a function with its versions and aliases; returns how many versions."""
        with self._db.write.begin() as session:
            function = self._function(session, check_name(name), lock=True)
            count = store.delete_function(session, function)
            audit.record(session, actor, "function.delete", name, versions=count)
            return count

    def _function(self, session: Session, name: str, *, lock: bool = False) -> Function:
        function = store.find_function(session, name, lock=lock)
        if function is None:
            raise NotFound(f"function {name!r} not found")
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
        allowed = tuple(sorted(set(request.allowed_imports or settings.allowed_imports)))
        refused = [m for m in allowed if m not in settings.allowed_imports]
        if refused:
            raise InvalidArgument(
                f"allowed_imports {refused} are not on the server's allow-list "
                f"({', '.join(sorted(settings.allowed_imports))})"
            )
        entrypoint = request.entrypoint or "main"
        checked = check_source(
            request.source, entrypoint=entrypoint, allowed_imports=allowed, filename=request.name
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
        )


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


def checked_schema(text: str, field: str) -> str | None:
    """The schema in canonical JSON form, or None when none was given."""
    if not text.strip():
        return None
    schema = parse_json(text, field)
    if not isinstance(schema, dict):
        raise InvalidArgument(f"{field} must be a JSON object, not {type(schema).__name__}")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise InvalidArgument(f"{field} is not a valid JSON Schema at {where}: {e.message}") from e
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def parse_json(text: str, field: str) -> Any:
    """Parse JSON text, or InvalidArgument naming ``field`` and the position."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgument(
            f"{field} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e
    except ValueError as e:
        # Python refuses to convert longer integers, so that parsing stays linear
        # (CVE-2020-10735); that ValueError is the only other one json.loads raises.
        raise InvalidArgument(
            f"{field} has an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from e
    except RecursionError:
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = _depth(value)
    # Deeper values would exhaust the stack of the schema checks and the sandbox.
    if depth > MAX_JSON_DEPTH:
        raise InvalidArgument(f"{field} is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend(
                (child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest
