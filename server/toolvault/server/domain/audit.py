"""The audit log as values: who asks for a change, a recorded change, a filter."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

ACTIONS = (
    "function.publish",
    "function.delete",
    "alias.set",
    "alias.delete",
    "agent.create",
    "agent.update",
    "agent.delete",
    "key.create",
    "key.revoke",
    "secret.set",
    "secret.delete",
)


@dataclass(frozen=True)
class Actor:
    """Who asks for a change: a key's prefix (or ``anonymous`` without auth) and the peer."""

    key: str
    peer: str = ""


@dataclass(frozen=True)
class AuditEventInfo:
    """One recorded change."""

    id: int
    time: dt.datetime
    actor: str
    peer: str
    action: str
    namespace: str
    target: str
    details: dict[str, Any]


@dataclass(frozen=True)
class AuditFilter:
    """Which events to list; empty fields match everything."""

    actor: str = ""
    action: str = ""
    target: str = ""
    start_from: dt.datetime | None = None
    start_to: dt.datetime | None = None
