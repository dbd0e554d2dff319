"""Access as values: roles, the caller of an RPC, API keys and their format.

A key reads ``tvk_<12 hex digits>_<43 characters>``: the first part is its public prefix,
the rest its secret.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import secrets
from dataclasses import dataclass

from toolvault.server.domain.audit import Actor
from toolvault.server.domain.names import EVERYWHERE, Scope

KEY = re.compile(r"(tvk_[0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class Role(enum.StrEnum):
    """What a key may do; ``rpc.auth.RULES`` says which RPCs each role may call."""

    ADMIN = "admin"
    PUBLISHER = "publisher"
    INVOKER = "invoker"
    AGENT = "agent"


@dataclass(frozen=True)
class Principal:
    """The caller of an RPC, as its key says."""

    key: str
    role: Role
    scope: Scope = EVERYWHERE
    agent: str = ""

    def sees(self, name: str) -> bool:
        """Whether the function or agent ``name`` (or a ref) exists for this caller."""
        if self.role is Role.AGENT:
            return name == self.agent
        return self.scope.allows(name)

    def actor(self, peer: str) -> Actor:
        """This caller as the audit log names it."""
        return Actor(self.key, peer)


# With auth off, every caller may do everything; the audit log says "anonymous".
ANONYMOUS = Principal("anonymous", Role.ADMIN)


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed: never its secret."""

    prefix: str
    role: Role
    namespaces: tuple[str, ...] | None
    agent: str
    description: str
    created_at: dt.datetime
    created_by: str
    revoked_at: dt.datetime | None


def generate_key() -> str:
    """A new key in the format the server accepts.

    The SDK's ``generate_key`` (``toolvault keys generate``) makes the same: the key
    format is part of the contract, and the server and the SDK share no code.
    """
    return f"tvk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
