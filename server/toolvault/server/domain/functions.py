"""Functions as values: a version's content and hash, a stored version, a function."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from dataclasses import dataclass

from toolvault.sandbox import Limits


class Isolation(enum.StrEnum):
    """Where a version's calls run: warm workers of its own may serve many, or each fresh."""

    WARM = "warm"
    FRESH = "fresh"


@dataclass(frozen=True)
class VersionContent:
    """Everything that defines a version; its sha256 covers all of it."""

    source: str
    entrypoint: str
    description: str
    input_schema: str | None
    output_schema: str | None
    limits: Limits
    allowed_imports: tuple[str, ...]
    max_concurrency: int = 0
    deterministic: bool = False
    isolation: Isolation = Isolation.WARM
    # The hosts it may reach, as normalized allow-list entries (sandbox.EgressRule).
    egress: tuple[str, ...] = ()
    # The names of the namespace's secrets its calls get, sorted; never their values.
    secrets: tuple[str, ...] = ()

    def sha256(self) -> str:
        """Hex sha256 of the canonical form: sorted-key compact JSON of every field.

        ``max_concurrency``, ``deterministic``, ``isolation``, ``egress`` and ``secrets``
        join the document only when they differ from their defaults, so versions stored
        before these fields existed keep their hash.
        """
        document: dict[str, object] = {
            "source": self.source,
            "entrypoint": self.entrypoint,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "limits": {
                "timeout_ms": self.limits.timeout_ms,
                "memory_mb": self.limits.memory_mb,
                "max_output_bytes": self.limits.max_output_bytes,
            },
            "allowed_imports": sorted(self.allowed_imports),
        }
        if self.max_concurrency:
            document["max_concurrency"] = self.max_concurrency
        if self.deterministic:
            document["deterministic"] = True
        if self.isolation is not Isolation.WARM:
            document["isolation"] = self.isolation.value
        if self.egress:
            document["egress"] = sorted(self.egress)
        if self.secrets:
            document["secrets"] = sorted(self.secrets)
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class VersionInfo:
    """A stored version."""

    name: str
    version: int
    sha256: str
    content: VersionContent
    created_at: dt.datetime


@dataclass(frozen=True)
class FunctionInfo:
    """A function with its aliases and the description of its latest version."""

    name: str
    latest_version: int
    aliases: dict[str, int]
    description: str
    created_at: dt.datetime
    updated_at: dt.datetime
