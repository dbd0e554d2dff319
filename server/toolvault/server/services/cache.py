"""The result cache of deterministic functions: LRU with a time to live, in memory.

Each server process (each replica) keeps its own cache, so a result cached on one replica
is a miss on another. Only successful runs are stored, keyed by the version's sha256 and
the canonical JSON of the arguments (sorted keys, no spaces), so equal argument objects
share an entry however they were spelled. A run whose result, stdout and stderr
together pass ``MAX_ENTRY_BYTES`` is not stored, which bounds the cache's memory by
``cache_max_entries`` times that.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

V = TypeVar("V")
MAX_ENTRY_BYTES = 64 * 1024


def cache_key(
    name: str, sha256: str, args: dict[str, Any], secrets: Mapping[str, str]
) -> tuple[str, str, str]:
    """The key of a call: the function, its version's hash and the canonical arguments.

    The name keeps namespaces apart: equal code elsewhere must not answer from, or reveal,
    another namespace's calls. The values of the call's secrets join the hash (as a
    digest), so that a result computed with a value set before is not served after it
    changed. Cached results have those values redacted already.
    """
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"))
    if secrets:
        values = json.dumps(dict(secrets), sort_keys=True).encode()
        sha256 = f"{sha256}:{hashlib.sha256(values).hexdigest()}"
    return name, sha256, canonical


class ResultCache(Generic[V]):
    """A bounded mapping whose entries expire ``ttl_s`` seconds after they were stored."""

    def __init__(
        self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str, str], tuple[float, V]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """False when configured with no room (``cache_max_entries`` 0)."""
        return self._max_entries > 0

    def get(self, key: tuple[str, str, str]) -> V | None:
        """The live value under ``key``, marked as most recently used; None if absent."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: tuple[str, str, str], value: V) -> None:
        """Store ``value``, evicting the least recently used entry when full."""
        if not self.enabled:
            return
        self._entries[key] = (self._clock() + self._ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
