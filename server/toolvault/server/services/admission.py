"""Admission: which calls may wait for a sandbox, and the slots they wait for.

A run waits for one of ``max_concurrent_runs`` sandbox slots; when ``max_queued_runs``
calls are already waiting, a new call is refused at once rather than queued without
bound. A version's ``max_concurrency`` bounds the calls of its function (all versions,
counted per server process) that hold or wait for a slot; one over it is refused at once
too. Both refusals are RESOURCE_EXHAUSTED, counted in ``toolvault_rejections_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

from opentelemetry import trace

from toolvault.server.domain.errors import ResourceExhausted
from toolvault.server.domain.functions import VersionInfo
from toolvault.server.telemetry import metrics


class Admission:
    """Counts the calls of each function and hands out the sandbox slots."""

    def __init__(self, max_running: int, max_waiting: int, tracer: trace.Tracer) -> None:
        self._max_running = max_running
        self._max_waiting = max_waiting
        self._tracer = tracer
        self._slots = asyncio.Semaphore(max_running)
        self._waiting = 0
        self._running = 0
        self._per_function: Counter[str] = Counter()
        metrics.QUEUED.set_function(lambda: self._waiting)
        metrics.IN_FLIGHT.set_function(lambda: self._running)

    @contextlib.contextmanager
    def function_slot(self, version: VersionInfo) -> Iterator[None]:
        """Count a call of ``version``'s function for as long as it waits or runs."""
        limit = version.content.max_concurrency
        active = self._per_function[version.name]
        if limit and active >= limit:
            metrics.REJECTIONS.labels("function_concurrency").inc()
            raise ResourceExhausted(
                f"function {version.name!r} allows {limit} concurrent calls; {active} are running"
            )
        self._per_function[version.name] += 1
        try:
            yield
        finally:
            self._per_function[version.name] -= 1
            if not self._per_function[version.name]:
                del self._per_function[version.name]

    async def acquire(self) -> None:
        """Wait for a sandbox slot (the ``queue`` span); the caller must :meth:`release` it.

        Plain methods rather than a context manager: this is every run's path.
        """
        if self._slots.locked() and self._waiting >= self._max_waiting:
            metrics.REJECTIONS.labels("queue_full").inc()
            raise ResourceExhausted(
                f"all {self._max_running} sandboxes are busy and "
                f"{self._waiting} calls are waiting (max_queued_runs); retry later"
            )
        self._waiting += 1
        try:
            with self._tracer.start_as_current_span("queue"):
                await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._running += 1

    def release(self) -> None:
        """Give back the slot that :meth:`acquire` took."""
        self._running -= 1
        self._slots.release()
