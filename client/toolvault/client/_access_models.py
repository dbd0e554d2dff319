"""API keys, audit events and secrets: frozen values built from the `toolvault.v1` messages.

`generate_key` makes a key in the server's format without a server, for example to give a
new server its first admin key (TOOLVAULT_ADMIN_KEY).
"""

from __future__ import annotations

import enum
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from toolvault.v1 import access_pb2, secret_pb2

__all__ = ["ApiKey", "AuditEvent", "Role", "Secret", "generate_key"]

_ROLE_PREFIX = "ROLE_"


class Role(enum.StrEnum):
    """What a key may do (the README's table lists each RPC)."""

    ADMIN = "admin"
    PUBLISHER = "publisher"
    INVOKER = "invoker"
    AGENT = "agent"

    @classmethod
    def from_proto(cls, value: access_pb2.Role.ValueType) -> Role:
        """Return the role for a `toolvault.v1.Role` value."""
        return cls(access_pb2.Role.Name(value).removeprefix(_ROLE_PREFIX).lower())

    def to_proto(self) -> access_pb2.Role.ValueType:
        """Return the `toolvault.v1.Role` value of this role."""
        return access_pb2.Role.Value(_ROLE_PREFIX + self.name)


def generate_key() -> str:
    """Return a new random API key, for example for a server's TOOLVAULT_ADMIN_KEY (offline).

    The format is the one the server issues and accepts: `tvk_`, 12 hex digits (the public
    prefix a listing shows), `_`, then 43 URL-safe characters (256 random bits).
    """
    return f"tvk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed: its public prefix, never its secret.

    `namespaces` is empty for admin keys (every namespace) and agent keys (their agent's).
    """

    prefix: str
    role: Role
    namespaces: tuple[str, ...]
    agent: str
    description: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None

    @classmethod
    def from_proto(cls, pb: access_pb2.ApiKey) -> ApiKey:
        """Build a key from its message."""
        return cls(
            prefix=pb.prefix,
            role=Role.from_proto(pb.role),
            namespaces=tuple(pb.namespaces),
            agent=pb.agent,
            description=pb.description,
            created_at=pb.create_time.ToDatetime(tzinfo=UTC),
            created_by=pb.created_by,
            revoked_at=(
                pb.revoke_time.ToDatetime(tzinfo=UTC) if pb.HasField("revoke_time") else None
            ),
        )


@dataclass(frozen=True)
class AuditEvent:
    """One change the server recorded: who (`actor`, a key prefix), when, what, on what."""

    event_id: int
    time: datetime
    actor: str
    peer: str
    action: str
    namespace: str
    target: str
    details: dict[str, Any]

    @classmethod
    def from_proto(cls, pb: access_pb2.AuditEvent) -> AuditEvent:
        """Build an event from its message."""
        return cls(
            event_id=pb.id,
            time=pb.time.ToDatetime(tzinfo=UTC),
            actor=pb.actor,
            peer=pb.peer,
            action=pb.action,
            namespace=pb.namespace,
            target=pb.target,
            details=json.loads(pb.details_json or "{}"),
        )


@dataclass(frozen=True)
class Secret:
    """A secret as listed: its name, when it was set and by whom; never its value."""

    name: str
    created_at: datetime
    updated_at: datetime
    updated_by: str

    @classmethod
    def from_proto(cls, pb: secret_pb2.Secret) -> Secret:
        """Build a secret's listing from its message."""
        return cls(
            name=pb.name,
            created_at=pb.create_time.ToDatetime(tzinfo=UTC),
            updated_at=pb.update_time.ToDatetime(tzinfo=UTC),
            updated_by=pb.updated_by,
        )
