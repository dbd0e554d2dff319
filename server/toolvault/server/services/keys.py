"""API keys: creating, listing, revoking, and checking the key of each call.

A key reads ``tvk_<12 hex digits>_<43 characters>`` (``domain.access.KEY``): the first
part is its public prefix, the rest its secret. Only an HMAC-SHA256 of the secret under
a per-key salt is stored. Keys are 256-bit random, so a slow password hash would add
latency to every call and no strength.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from toolvault.server.db import audit, keys
from toolvault.server.db.engine import Database
from toolvault.server.domain import names
from toolvault.server.domain.access import KEY, KeyInfo, Principal, Role, generate_key
from toolvault.server.domain.audit import Actor
from toolvault.server.domain.errors import InvalidArgument, not_found
from toolvault.server.domain.names import Scope
from toolvault.server.domain.paging import decode_token, encode_token, page_size

MAX_DESCRIPTION_CHARS = 256
ALL_NAMESPACES = "*"
BOOTSTRAP = "bootstrap"


class Keys:
    """Creates, lists, revokes and checks API keys."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self,
        role: Role,
        *,
        namespaces: Iterable[str] = (),
        agent: str = "",
        description: str = "",
        actor: Actor,
    ) -> tuple[str, KeyInfo]:
        """Store a new key; returns the whole key (shown once) and its listing."""
        scope = _checked_scope(role, tuple(namespaces), agent)
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION_CHARS} characters")
        with self._db.write.begin() as session:
            secret, info = _add_key(session, role, scope, agent, description, actor.key)
            audit.record(
                session,
                actor,
                "key.create",
                info.prefix,
                role=role.value,
                namespaces=scope,
                agent=agent,
            )
            return secret, info

    def keys(self, *, size: int, token: str) -> tuple[list[KeyInfo], str]:
        """A page of keys, newest first, and the next page's token ("" at the end)."""
        key = decode_token(token, int)
        limit = page_size(size)
        with self._db.read.begin() as session:
            rows = keys.page(session, before=key[0] if key else None, limit=limit + 1)
            infos = [keys.info(row) for row in rows[:limit]]
        return infos, encode_token([rows[limit - 1].id]) if len(rows) > limit else ""

    def revoke(self, prefix: str, *, actor: Actor) -> KeyInfo:
        """Revoke the key with ``prefix`` (at once: every call checks the database)."""
        with self._db.write.begin() as session:
            row = keys.by_prefix(session, prefix, lock=True)
            if row is None:
                raise not_found("key", prefix)
            if row.revoked_at is None:
                keys.revoke(row)
                audit.record(session, actor, "key.revoke", prefix, role=row.role)
            return keys.info(row)

    def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None for anything else."""
        match = KEY.fullmatch(key)
        if match is None:
            return None
        prefix, secret = match.groups()
        with self._db.read.begin() as session:
            row = keys.by_prefix(session, prefix)
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(_digest(row.salt, secret), row.digest):
                return None
            return Principal(
                key=row.prefix,
                role=Role(row.role),
                scope=Scope.of(None if row.namespaces is None else json.loads(row.namespaces)),
                agent=row.agent,
            )

    def bootstrap(self, given: str | None) -> str | None:
        """Make the first admin key if there is no key at all.

        Uses ``given`` (``TOOLVAULT_ADMIN_KEY``) if set; otherwise a new key, which it
        returns so that it can be shown once. Returns None when nothing new must be
        shown. Replicas starting together make one key: the table is locked first.
        """
        actor = Actor(BOOTSTRAP)
        try:
            with self._db.write.begin() as session:
                keys.lock_table(session)
                if keys.any_key(session):
                    return None
                secret, info = _add_key(
                    session, Role.ADMIN, None, "", "bootstrap admin key", BOOTSTRAP, key=given
                )
                audit.record(session, actor, "key.create", info.prefix, role="admin")
        except IntegrityError:
            return None  # another replica made it first
        return None if given is not None else secret


def _add_key(
    session: Session,
    role: Role,
    namespaces: tuple[str, ...] | None,
    agent: str,
    description: str,
    creator: str,
    *,
    key: str | None = None,
) -> tuple[str, KeyInfo]:
    key = key or generate_key()
    match = KEY.fullmatch(key)
    assert match is not None, "keys are checked before they get here"
    prefix, secret = match.groups()
    salt = secrets.token_hex(16)
    info = keys.add(
        session,
        prefix=prefix,
        salt=salt,
        digest=_digest(salt, secret),
        role=role,
        namespaces=namespaces,
        agent=agent,
        description=description,
        created_by=creator,
    )
    return key, info


def _digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def _checked_scope(role: Role, namespaces: tuple[str, ...], agent: str) -> tuple[str, ...] | None:
    """The namespaces to store for a new key (None: all), or InvalidArgument."""
    if role in (Role.ADMIN, Role.AGENT) and namespaces:
        raise InvalidArgument(f"a {role} key takes no namespaces")
    if role is Role.AGENT:
        if not agent:
            raise InvalidArgument("an agent key needs the agent it calls tools for")
        names.check_agent_name(agent, "agent")
        return (names.namespace_of(agent),)
    if agent:
        raise InvalidArgument(f"a {role} key takes no agent; only agent keys do")
    if role is Role.ADMIN or ALL_NAMESPACES in namespaces:
        return None
    if not namespaces:
        raise InvalidArgument(f"a {role} key needs at least one namespace ({ALL_NAMESPACES}: all)")
    for namespace in namespaces:
        names.check_namespace(namespace)
    return tuple(sorted(set(namespaces)))
