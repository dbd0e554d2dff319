"""The server's side of the sandbox: a supervised sandbox host and the calls it runs.

The server runs gRPC threads, so it never forks: SandboxHost spawns the host
(``python -I -m toolvault.sandbox._host``, see ``_host``) with os.posix_spawn in a new
session, with an empty environment and one end of a Unix socket pair, and the host forks
a sandbox per call. The server compiles each source once (RestrictedPython, kept in its
own memory, which no sandbox is forked from) and writes each call's job, with the code
marshalled, to a memfd that only the sandbox reads. For each call the server makes the
stdout, stderr and report pipes itself and passes their write ends to the host with the
run frame, so that it reads the output and caps it as it arrives, never trusting the
sandbox to stop. It enforces the wall
clock, and on any limit or cancellation has the host kill the sandbox and waits until the
host reports it reaped. The event loop watches everything without threads or asyncio's
child watcher: the socket, the pipes, and a pidfd of the host process.

If the host dies, every call in flight ends at once as CRASHED and the next call starts
a new host. A host that does not report a killed sandbox gone within a grace period is
killed in turn.

Warm workers (``run`` with a ``worker_key``): the server makes a socket pair per worker
and passes one end to the host with a ``spawn`` frame; the host forks a worker, confined
exactly as a call's sandbox, that holds it. Per call the server sends the job's memfd and
the call's pipes straight to the worker over its end (the host never sees them); the
worker answers with one byte when it has written the report and let go of them; the
server then stops it (SIGSTOP through a pidfd) and it is idle once the stop has landed
(killed if that takes longer than a grace). The
figures of the call are the kernel's, never the worker's claim: the server reads the
worker's CPU time (/proc/<pid>/schedstat, since the end of its last call) and peak
resident size (VmHWM, reset after each call through clear_refs) from its own /proc,
through files it opened when the host said which process the worker is (``spawned``);
for a worker that dies, wait4's figures come from the host. A worker serves only calls
with its own key (and the same allowed imports and limits), one at a time; it is killed
after any outcome but OK, after ``max_calls_per_worker`` calls, after ``worker_idle_s``
idle, on ``retire(key)``, and when the pool is full and a call of another key needs the
room (the least recently used idle worker first). A call never waits for a worker: with
no idle worker of its key and no room, it runs in a fresh sandbox as without a key.

Spares (``SandboxHost(spares=N)``) take the host's fork and the confinement off a fresh
call's path: a spare is a worker with no key that serves one call. After a call without a
key, the free room under the bound fills with spares of its allowed imports and limits
(the host forks and confines each with a ``spawn`` frame, as a worker). Each first
serves a trusted no-op that the host compiled, as a call from a memfd of its own (which
faults in the pages a call touches and holds nothing of any call), and says it is done
as after a call: the server reads the kernel's figures then (the baseline of its call's)
and stops it, and it waits stopped until a call of its kind takes it. That call ends at
the spare's done byte, which comes after the spare has written its report and closed the
call's fds: the server stops the spare, reads the kernel's figures from /proc as for a
worker's call, returns the result and has the spare killed, without waiting for the
host to reap it (the teardown of its address space, ~2 ms, is off the path); its slot,
hence its uid, stays taken until then. Unused spares retire after ``worker_idle_s``.
A spare that lets go of its pipes but never says it is done is bounded by the call's
wall clock like any sandbox. A call that finds no spare of its kind ready forks as
before, and never waits for one. A sandbox forked for a call ends only with the host's
``exited`` frame (wait4's figures), so closing its pipes early would gain it nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._child import CALL_DONE, WARM_UP_FILENAME, WARM_UP_SOURCE, Program, compile_job, encode_job
from ._door import Door, Egress
from ._isolation import Isolation, Plan, candidates, layers, namespace_ids
from ._models import (
    CPU_LIMIT_EXIT,
    DEFAULT_ALLOWED_IMPORTS,
    MAX_ERROR_TYPE_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    OUTPUT_DIR,
    File,
    Job,
    Limits,
    RunResult,
    RunStatus,
    cpu_limit_seconds,
    decode_frames,
    encode_frame,
    file_name_problem,
)

log = logging.getLogger("toolvault.sandbox")

_CHUNK = 64 * 1024
_RECEIVE_BYTES = 1024 * 1024
# How long a host may take to start (imports, confinement, the probe sandbox).
_START_TIMEOUT_S = 60.0
_START_TRIES = 3
# Retired keys remembered, so that a call already on its way gets no worker for one.
_RETIRED_KEYS = 4096
# How long a host may take to report a killed sandbox gone, or to exit when told to,
# before it is killed itself.
_KILL_GRACE_S = 5.0
# How long a warm worker's stop may take to land after its call; one still running then
# (inside a long system call, which a stop waits for) is killed rather than kept.
_STOP_GRACE_S = 0.1
_STOP_POLL_S = 0.001
# How often an idle worker is checked for having run while it should have been stopped.
_IDLE_CHECK_S = 0.25
_STDERR_TAIL_CHARS = 1_000
_CACHED_PROGRAMS = 256
_REPORT_FIELDS = ("status", "result_json", "error_type", "error_message", "traceback")
_REPORTED_STATUSES = ("ok", "error", "memory_limit")
_ERROR_TYPES = {
    RunStatus.TIMEOUT: "TimeoutError",
    RunStatus.MEMORY_LIMIT: "MemoryError",
    RunStatus.OUTPUT_LIMIT: "OutputLimitExceeded",
    RunStatus.CRASHED: "Crashed",
}
_HOST_DIED = "the sandbox host died while the function ran"
# How long a spare may take to be forked, confined and warmed up.
_WARM_UP_TIMEOUT_MS = 5_000


class HostFailed(RuntimeError):
    """A sandbox host could not be started under any plan."""


class SandboxHost:
    """A warm sandbox host process, started on first use and restarted when it dies.

    Serves one event loop at a time; between calls it may move to another one (as
    ``asyncio.run`` calls in turn do).

    Args:
        preload: Modules the host imports ahead of the calls (the server's allow-list);
            others are imported when a call first allows them.
        hidden_paths: Directories no sandbox may see, such as the server's data:
            covered by an empty tmpfs where the host allows a mount namespace but no
            private root (which holds none of them).
        language_layer: False runs the code as plain Python with the real builtins,
            under every other layer: only for the test suite's attacks on the kernel
            layer. No setting or request of the server reaches it.
        max_workers: Warm workers alive at once, over every key.
        max_workers_per_key: Warm workers of one key alive at once (calls of a key
            beyond it, with every worker of the key busy, run fresh).
        max_calls_per_worker: Calls a worker serves before it is retired.
        worker_idle_s: How long a worker may wait for its next call.
        idle_memory_bytes: What the idle workers may hold together beyond what they held
            when they started (their resident anonymous memory: what calls left in
            their heaps); past it the least recently used are retired.
        spares: Sandboxes kept ready for calls without a worker key: forked, confined
            and warmed by a trusted no-op call ahead of time, each serving one call and
            then killed (0: every such call forks a sandbox for itself).
    """

    def __init__(
        self,
        *,
        preload: Sequence[str] = DEFAULT_ALLOWED_IMPORTS,
        hidden_paths: Sequence[str] = (),
        language_layer: bool = True,
        max_workers: int = 16,
        max_workers_per_key: int = 4,
        max_calls_per_worker: int = 1_000,
        worker_idle_s: float = 60.0,
        idle_memory_bytes: int = 256 << 20,
        spares: int = 0,
    ) -> None:
        if (
            min(max_workers, max_workers_per_key, max_calls_per_worker, idle_memory_bytes) < 1
            or worker_idle_s <= 0
        ):
            raise ValueError("pool bounds must be positive")
        if spares < 0:
            raise ValueError(f"spares must be 0 or more, not {spares}")
        self._max_workers = max_workers
        self._max_workers_per_key = max_workers_per_key
        self._max_calls_per_worker = max_calls_per_worker
        self._worker_idle_s = worker_idle_s
        self._idle_memory_bytes = idle_memory_bytes
        # Every worker that may serve a call (busy or idle), and the idle ones, least
        # recently used first.
        self._workers: dict[int, _Worker] = {}
        self._idle: OrderedDict[int, _Worker] = OrderedDict()
        # Keys retire() was given, the oldest first: none gets a worker again.
        self._retired: OrderedDict[str, None] = OrderedDict()
        # Every spare alive (warming up, ready or serving its call), and the ready ones,
        # least recently made first; with the tasks that warm them up.
        self._max_spares = spares
        self._spares: dict[int, _Worker] = {}
        self._ready: OrderedDict[int, _Worker] = OrderedDict()
        self._warming: set[asyncio.Task[None]] = set()
        self._preload = list(preload)
        self._hidden = [str(path) for path in hidden_paths]
        self._language_layer = language_layer
        self._programs: dict[tuple[str, str], Program] = {}
        self.compilations = 0
        self._process: _Process | None = None
        self._starting: asyncio.Task[_Process] | None = None
        self._isolation: Isolation | None = None
        self._ids = itertools.count()
        self._busy_slots: set[int] = set()

    @property
    def isolation(self) -> Isolation | None:
        """The plan the sandboxes get and the layers in effect; None before the first start."""
        return self._isolation

    @property
    def pid(self) -> int | None:
        """The pid of the process that forks the sandboxes, if one is running."""
        process = self._process
        return process.host_pid if process is not None and process.alive else None

    async def start(self) -> Isolation:
        """Start the host now unless it runs, and say how the sandboxes are confined.

        Raises:
            HostFailed: When no plan, not even the process layer alone, works.
        """
        await self._live()
        assert self._isolation is not None
        return self._isolation

    @property
    def workers(self) -> dict[str, int]:
        """How many warm workers may serve calls now, by key (for tests and metrics)."""
        counts: dict[str, int] = {}
        for worker in self._workers.values():
            counts[worker.key] = counts.get(worker.key, 0) + 1
        return counts

    @property
    def spares(self) -> int:
        """How many spares are ready for a call without a worker key (for tests and metrics)."""
        return len(self._ready)

    async def run(
        self, job: Job, *, worker_key: str | None = None, egress: Egress | None = None
    ) -> RunResult:
        """Run ``job`` in a sandbox under its limits; say what happened.

        A failing function is a result, not an exception; so is a host that died or
        cannot start (CRASHED).

        Args:
            job: What to run.
            worker_key: None runs the call in a sandbox of its own: a ready spare of
                its allowed imports and limits if there is one, else one forked for it.
                Otherwise the call runs in a warm worker that serves only calls with
                this key (and the same allowed imports and limits): one function
                version of one namespace, say. Opaque here.
            egress: What the call may reach through a door of its own (``_door``);
                None: nothing.

        Raises:
            asyncio.CancelledError: When the awaiting task is cancelled, after the
                sandbox and everything it started are killed and reaped.
        """
        # Compiled first: nothing may be awaited between _live() and submit(), or the host
        # could die in between, leaving the call on a process nobody watches any more.
        program = await self._program(job)
        if worker_key is not None:
            await self._settled((worker_key, job.allowed_imports, job.limits))
        try:
            process = await self._live()
        except HostFailed as exc:
            return _crashed(f"the sandbox host could not start: {exc}")
        if worker_key is None:
            worker = self._spare_for(job)
        else:
            worker = self._worker_for(job, worker_key, process)
        if worker is None:
            slot = self._take_slot()
        else:
            slot = worker.slot
        door = None if egress is None else Door(egress)
        call = _Call(job, program, next(self._ids), slot, process, worker, door)
        ok = False
        try:
            result = await call.run()
            ok = result.status is RunStatus.OK and call.clean
            if door is not None:
                result = dataclasses.replace(result, egress=door.close())
            return result
        finally:
            call.close()
            if door is not None:
                door.close()
            if worker is None:
                self._busy_slots.discard(slot)
            elif worker_key is None:
                self._retire(worker)  # a spare serves one call
            else:
                self._done_with(worker, ok)
            if worker_key is None:
                self._replenish(("", job.allowed_imports, job.limits), process)

    def retire(self, worker_key: str) -> None:
        """Kill the idle workers of ``worker_key`` now, and the busy ones when their call ends.

        The key is never served by a worker again: a call of it that was already on its
        way (waiting for a slot, say) runs fresh.
        """
        self._retired[worker_key] = None
        if len(self._retired) > _RETIRED_KEYS:
            del self._retired[next(iter(self._retired))]
        for worker in list(self._workers.values()):
            # A busy one is killed when its call ends (_done_with).
            if worker.key == worker_key and (
                worker.id in self._idle or worker.settling is not None
            ):
                self._retire(worker)

    async def _settled(self, kind: tuple[str, tuple[str, ...], Limits]) -> None:
        """Unless a worker of ``kind`` is idle, wait for one whose stop is landing."""
        if any(worker.kind == kind for worker in self._idle.values()):
            return
        loop = asyncio.get_running_loop()
        landing = []
        for worker in list(self._workers.values()):
            stop = worker.settling
            if worker.kind != kind or stop is None:
                continue
            if stop.get_loop() is loop:
                landing.append(stop)
            else:
                self._retire(worker)  # its stop was landing on a loop that has ended
        if landing:
            await asyncio.wait(landing, return_when=asyncio.FIRST_COMPLETED)

    def _take_slot(self) -> int:
        slot = next(n for n in itertools.count() if n not in self._busy_slots)
        self._busy_slots.add(slot)
        return slot

    def _worker_for(self, job: Job, key: str, process: _Process) -> _Worker | None:
        """An idle worker for ``job``, or a new one; None when there is no room for one."""
        if key in self._retired:
            return None
        now = time.monotonic()
        for worker in list(self._idle.values()):
            if now - worker.idle_since >= self._worker_idle_s:
                self._retire(worker)
        kind = (key, job.allowed_imports, job.limits)
        taken = self._take(self._idle, kind)
        if taken is not None:
            return taken
        # No room means a fresh sandbox, which never waits for a slot.
        if self.workers.get(key, 0) >= self._max_workers_per_key:
            # Full for this key: an idle worker of it for other limits may make room.
            victim = next((w for w in self._idle.values() if w.key == key), None)
            if victim is None:
                return None
            self._retire(victim)
        elif len(self._workers) >= self._max_workers:
            if not self._idle:
                return None
            self._retire(next(iter(self._idle.values())))  # the least recently used
        cpu_hard_s = cpu_limit_seconds(job.limits) * self._max_calls_per_worker + 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        worker = _Worker(next(self._ids), kind, self._take_slot(), process, ours, cpu_hard_s)
        self._workers[worker.id] = worker
        process.spawn(worker, theirs.detach())
        return worker

    def _done_with(self, worker: _Worker, ok: bool) -> None:
        """Keep ``worker`` for the next call of its key if it may serve one; else retire it."""
        worker.calls += 1
        budget_s = cpu_limit_seconds(worker.kind[2])
        keep = (
            ok
            and worker.key not in self._retired
            and worker.alive
            and worker.id in self._workers
            and worker.calls < self._max_calls_per_worker
            # Room under the hard CPU limit for the next call's whole budget.
            and worker.cpu_ms / 1000 + 1 + budget_s < worker.cpu_hard_s
        )
        if not keep:
            self._retire(worker)
            return
        self._start_settling(worker)

    def _start_settling(self, worker: _Worker) -> None:
        """Make ``worker``, whose call has ended, idle (or ready) once its stop has landed."""
        worker.settling = asyncio.get_running_loop().create_future()
        self._settle(worker, time.monotonic() + _STOP_GRACE_S)

    def _settle(self, worker: _Worker, deadline: float) -> None:
        """Make ``worker`` idle once its stop has landed; kill it if that takes too long.

        Until then it may serve no call: it is still running, perhaps in a system call
        that holds its memory map locked and that the stop waits for.
        """
        if not worker.alive or (worker.id not in self._workers and worker.id not in self._spares):
            worker.settled()
            return
        state = worker.state()
        if (
            worker.key in self._retired
            or state is None
            or (not state.stopped and time.monotonic() >= deadline)
        ):
            self._retire(worker)
            return
        loop = asyncio.get_running_loop()
        if not state.stopped:
            worker.idle_timer = loop.call_later(_STOP_POLL_S, self._settle, worker, deadline)
            return
        worker.settled()
        worker.reset_peak()
        worker.idle_state = state
        if worker.id not in self._spares and not self._room_for(worker):
            self._retire(worker)
            return
        worker.idle_since = time.monotonic()
        (self._ready if worker.id in self._spares else self._idle)[worker.id] = worker
        worker.idle_timer = loop.call_later(_IDLE_CHECK_S, self._watch_idle, worker)

    def _room_for(self, worker: _Worker) -> bool:
        """Whether the idle workers may hold what ``worker`` holds, within the budget.

        The least recently used idle workers make room; a worker that alone holds more
        than the budget has none.
        """
        held = worker.held_bytes()
        if held > self._idle_memory_bytes:
            return False
        total = held + sum(w.held_bytes() for w in self._idle.values())
        while total > self._idle_memory_bytes:
            victim = next(iter(self._idle.values()))
            total -= victim.held_bytes()
            self._retire(victim)
        return True

    def _watch_idle(self, worker: _Worker) -> None:
        """Retire ``worker`` once it has been idle too long, or if it ran while idle.

        Held stopped, it cannot run, unless something resumed it (a SIGCONT it arranged
        for itself): then it is killed rather than trusted with another call.
        """
        if worker.id not in self._idle and worker.id not in self._ready:
            return
        idle_s = time.monotonic() - worker.idle_since
        if worker.woken() or idle_s >= self._worker_idle_s:
            self._retire(worker)
            return
        worker.idle_timer = asyncio.get_running_loop().call_later(
            min(_IDLE_CHECK_S, self._worker_idle_s - idle_s), self._watch_idle, worker
        )

    def _spare_for(self, job: Job) -> _Worker | None:
        """A ready spare for ``job``'s allowed imports and limits, taken; None if there is none."""
        return self._take(self._ready, ("", job.allowed_imports, job.limits))

    def _take(
        self, pool: OrderedDict[int, _Worker], kind: tuple[str, tuple[str, ...], Limits]
    ) -> _Worker | None:
        """The most recently stopped worker of ``kind`` in ``pool``, taken; None if none.

        The most recent: its memory is the likeliest to be resident. One that ran while
        it should have been stopped is retired, never handed a call.
        """
        for worker in reversed(list(pool.values())):
            if worker.kind != kind:
                continue
            if worker.woken():
                self._retire(worker)
                continue
            del pool[worker.id]
            if worker.idle_timer is not None:
                worker.idle_timer.cancel()
            return worker
        return None

    def _replenish(self, kind: tuple[str, tuple[str, ...], Limits], process: _Process) -> None:
        """After a call of ``kind`` without a key: have spares of its kind made for the next.

        The free room under the bound (``spares`` alive at once) fills with spares of
        the kind called last. When there is none and the kind has no spare (ready,
        warming up or serving), the least recently made ready one makes room for one.
        """
        if not self._max_spares or not process.alive:
            return
        loop = asyncio.get_running_loop()
        for spare in list(self._spares.values()):
            # Its stop was landing on an event loop that has ended: it never gets ready.
            if spare.settling is not None and spare.settling.get_loop() is not loop:
                self._retire(spare)
        if len(self._spares) >= self._max_spares and self._ready:
            if all(spare.kind != kind for spare in self._spares.values()):
                self._retire(next(iter(self._ready.values())))
        while len(self._spares) < self._max_spares:
            self._make_spare(kind, process)

    def _make_spare(self, kind: tuple[str, tuple[str, ...], Limits], process: _Process) -> None:
        # A forked call's hard limit (the one that stops the init of a PID namespace):
        # a spare serves one call, and its warm-up takes milliseconds of it.
        cpu_hard_s = cpu_limit_seconds(kind[2]) + 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        spare = _Worker(next(self._ids), kind, self._take_slot(), process, ours, cpu_hard_s)
        self._spares[spare.id] = spare
        process.spawn(spare, theirs.detach(), warm_up=True)
        task = asyncio.get_running_loop().create_task(self._warm_up(spare))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def _warm_up(self, spare: _Worker) -> None:
        """Wait for ``spare``'s warm-up; it is ready once stopped after it, else killed.

        The spare runs a trusted no-op as it starts (``serve_calls``), which faults in
        the pages a call touches in its own memory, off its call's path, and holds
        nothing of any call. Its end sets the baseline of the kernel's figures of the
        spare's call.
        """
        if spare.id not in self._spares:
            return  # retired or gone (with its host) before this task began
        _, allowed_imports, limits = spare.kind
        # Only the clock and the caps matter here: the spare runs the no-op itself.
        timed = dataclasses.replace(limits, timeout_ms=_WARM_UP_TIMEOUT_MS)
        job = Job(WARM_UP_SOURCE, "main", "{}", allowed_imports, timed, filename=WARM_UP_FILENAME)
        call = _Call(job, _NO_PROGRAM, next(self._ids), spare.slot, spare.process, spare)
        ok = False
        try:
            await call.wait(warm_up=True)
            ok = call.warmed_up()
        finally:
            call.close()
            if ok and spare.alive and spare.id in self._spares:
                self._start_settling(spare)
            else:
                self._retire(spare)

    def _retire(self, worker: _Worker) -> None:
        """Kill ``worker`` (or a spare); its slot is free again once the host has reaped it."""
        self._idle.pop(worker.id, None)
        self._ready.pop(worker.id, None)
        if self._workers.pop(worker.id, None) is None and self._spares.pop(worker.id, None) is None:
            return
        if worker.idle_timer is not None:
            worker.idle_timer.cancel()
        worker.settled()
        worker.process.kill_worker(worker)

    def _worker_gone(self, worker: _Worker) -> None:
        """The host reaped ``worker`` or a spare (or died with it)."""
        self._idle.pop(worker.id, None)
        self._workers.pop(worker.id, None)
        self._ready.pop(worker.id, None)
        self._spares.pop(worker.id, None)
        if worker.idle_timer is not None:
            worker.idle_timer.cancel()
        worker.settled()
        worker.close()
        self._busy_slots.discard(worker.slot)

    async def _program(self, job: Job) -> Program:
        """``job.source`` compiled, from the cache or (in a thread, once) now."""
        key = (job.source, job.filename)
        program = self._programs.pop(key, None)
        if program is None:
            self.compilations += 1
            program = await asyncio.to_thread(
                compile_job, job.source, job.filename, restricted=self._language_layer
            )
            if len(self._programs) >= _CACHED_PROGRAMS:
                del self._programs[next(iter(self._programs))]
        self._programs[key] = program  # last: the most recently used
        return program

    async def close(self) -> None:
        """Stop the host: every sandbox it runs is killed; wait until it has exited."""
        if self._starting is not None:
            with contextlib.suppress(HostFailed):
                await self._starting
        if self._process is not None:
            await self._process.stop()
            self._process = None
        # Their calls ended with the host: each kills its spare, which is gone already.
        await asyncio.gather(*self._warming, return_exceptions=True)
        for worker in [*self._workers.values(), *self._spares.values()]:
            self._worker_gone(worker)

    async def _live(self) -> _Process:
        """The running host process, started (again) if there is none.

        Raises:
            HostFailed: When it cannot start, or dies as it starts, time after time.
        """
        loop = asyncio.get_running_loop()
        for _ in range(_START_TRIES):
            process = self._process
            if process is not None and process.alive:
                process.bind(loop)
                return process
            if self._starting is None or self._starting.get_loop() is not loop:
                self._starting = loop.create_task(self._spawn())
            try:
                # Shielded: a caller that goes away must not abandon a half-started host.
                process = await asyncio.shield(self._starting)
            finally:
                if self._starting is not None and self._starting.done():
                    self._starting = None
            # It may have died between its ready frame and this task's turn.
            if process.alive:
                return process
        raise HostFailed(f"the sandbox host died as it started, {_START_TRIES} times")

    async def _spawn(self) -> _Process:
        restart = self._isolation is not None
        plans = [self._isolation.plan] if self._isolation is not None else candidates()
        failures: list[str] = []
        for plan in plans:
            process = _Process(
                plan, self._preload, self._hidden, self._language_layer, self._worker_gone
            )
            try:
                facts = await process.started
            except HostFailed as exc:
                failures.append(str(exc))
                await process.stop()
                continue
            if restart:
                log.warning("sandbox host restarted (pid %s)", process.host_pid)
            else:
                found = layers(plan, facts, namespace_ids(), failures)
                for layer in found:
                    if not layer.active:
                        log.warning("sandbox layer %s is not active: %s", layer.name, layer.detail)
                self._isolation = Isolation(plan, found)
            self._process = process
            return process
        raise HostFailed("; ".join(failures))


async def run(job: Job) -> RunResult:
    """Run ``job`` in a sandbox of this process's default host (see SandboxHost.run)."""
    return await default_host().run(job)


@functools.cache
def default_host() -> SandboxHost:
    """The host ``run`` uses: the default allow-list preloaded, nothing hidden."""
    return SandboxHost()


@functools.cache
def detect() -> Isolation:
    """Start a sandbox host once to find which layers this machine allows; remember it.

    Runs its own event loop: call it from synchronous code or a thread.
    """

    async def probe() -> Isolation:
        host = SandboxHost(preload=())
        try:
            return await host.start()
        finally:
            await host.close()

    return asyncio.run(probe())


async def _uncancellable(future: asyncio.Future[None]) -> None:
    """Wait for ``future`` even if the waiting task is cancelled again meanwhile."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(future)


class _Process:
    """One sandbox host process and its socket, watched from the event loop."""

    def __init__(
        self,
        plan: Plan,
        preload: list[str],
        hidden: list[str],
        language_layer: bool,
        worker_gone: Callable[[_Worker], None],
    ) -> None:
        self.plan = plan
        # By the id the host knows the sandbox by: the call's, or its worker's.
        self.calls: dict[int, _Call] = {}
        self.workers: dict[int, _Worker] = {}
        self._worker_gone = worker_gone
        self.alive = True
        self._loop = asyncio.get_running_loop()
        self._inbox = bytearray()
        self._outbox: deque[tuple[memoryview, list[int]]] = deque()
        self._stopping = False
        # The sandboxes' working directory: with namespaces each mounts a tmpfs on it.
        self._workdir = tempfile.mkdtemp(prefix="toolvault-")
        self.started: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self.gone: asyncio.Future[None] = self._loop.create_future()
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-m", "toolvault.sandbox._host"],
                {},
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3),
                ],
                setsid=True,
                # A blocked or ignored SIGXCPU, inherited from this process, would defeat
                # the sandboxes' CPU-time limit.
                setsigmask=(),
                setsigdef=(signal.SIGXCPU, signal.SIGXFSZ),
            )
        except BaseException:
            self._sock.close()
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        self.host_pid = self.pid
        self._pidfd = os.pidfd_open(self.pid)
        # A host nobody stopped ends when its owner is collected, or at exit: the socket's
        # EOF stops it.
        self._release = weakref.finalize(self, _release, self._sock, self._pidfd, self._workdir)
        self._sock.setblocking(False)
        self._loop.add_reader(self._sock.fileno(), self._receive)
        self._loop.add_reader(self._pidfd, self._on_exit)
        self._start_timer = self._loop.call_later(
            _START_TIMEOUT_S, self._fail_start, f"no answer in {_START_TIMEOUT_S:.0f} s"
        )
        self.send(
            {
                "op": "init",
                "plan": dataclasses.asdict(plan),
                "preload": preload,
                "workdir": self._workdir,
                "hidden": hidden,
                "language_layer": language_layer,
            }
        )

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move the watches to ``loop``, the running one, when no call is in flight."""
        if loop is self._loop:
            return
        if self.calls:
            raise RuntimeError("a sandbox host serves one event loop at a time")
        if not self._loop.is_closed():
            self._unwatch()
        self._loop = loop
        gone = loop.create_future()
        if self.gone.done():
            gone.set_result(None)
        self.gone = gone
        if self.alive:
            loop.add_reader(self._sock.fileno(), self._receive)
            if self._outbox:
                loop.add_writer(self._sock.fileno(), self._flush)
        if self._pidfd >= 0:
            loop.add_reader(self._pidfd, self._on_exit)

    def _unwatch(self) -> None:
        if self.alive:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)

    def submit(self, call: _Call, *, warm_up: bool = False) -> None:
        """Have the host fork a sandbox for ``call``, or send it to the call's worker.

        With ``warm_up`` the call is a spare's warm-up, which the spare runs by itself.
        """
        if not self.alive:
            call.host_died()  # nothing would ever end it
            return
        self.calls[call.target] = call
        if warm_up:
            call.watch_warm_up()
            return
        fds = call.give_away()
        if call.worker is not None:
            call.send_to_worker(fds)
            return
        message = {
            "op": "run",
            "id": call.id,
            "slot": call.slot,
            "allowed_imports": call.job.allowed_imports,
            "door": call.door is not None,
        }
        self.send(message, fds)

    def spawn(self, worker: _Worker, channel: int, *, warm_up: bool = False) -> None:
        """Have the host fork ``worker``, which serves calls on ``channel`` (closed here).

        With ``warm_up`` (a spare) it runs the trusted no-op first, then says it is done.
        """
        if not self.alive:
            os.close(channel)
            self._worker_gone(worker)
            return
        self.workers[worker.id] = worker
        _, allowed_imports, limits = worker.kind
        message = {
            "op": "spawn",
            "id": worker.id,
            "slot": worker.slot,
            "allowed_imports": allowed_imports,
            "limits": vars(limits),
            "cpu_hard_s": worker.cpu_hard_s,
            "warm_up": warm_up,
        }
        self.send(message, [channel])

    def call_finished(self, call: _Call) -> None:
        """``call``'s worker reported and closed the call's fds: read the kernel's figures."""
        assert call.worker is not None
        if call.worker.spawned:
            self._measure(call)
        # Otherwise the host's spawned frame is still to come: it measures then.

    def _measure(self, call: _Call) -> None:
        assert call.worker is not None
        # CPU it still spends until the signal lands counts towards its next call.
        call.worker.pause(True)
        figures = call.worker.figures()
        if figures is None:
            # Gone (its exited frame follows), or not found in /proc: no figures, no result.
            call.no_figures()
            return
        del self.calls[call.target]
        call.measured(*figures)

    def kill(self, call: _Call) -> None:
        """Have the host kill ``call``'s sandbox; kill the host if it does not within the grace."""
        if self.alive:
            self.send({"op": "kill", "id": call.target})
            self._loop.call_later(_KILL_GRACE_S, self._check_killed, call)

    def kill_worker(self, worker: _Worker) -> None:
        """Have the host kill an idle worker (or one whose call has ended)."""
        if self.alive and worker.id in self.workers:
            self.send({"op": "kill", "id": worker.id})

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """Queue ``message``, with ``fds`` attached, which are closed here once sent."""
        if not self.alive:
            _close_all(fds or [])
            return
        self._outbox.append((memoryview(encode_frame(message)), fds or []))
        if len(self._outbox) == 1:
            self._flush()

    async def stop(self) -> None:
        """Tell the host to stop (by closing the socket), and reap it."""
        self._stopping = True
        self._died()
        self.bind(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(asyncio.shield(self.gone), _KILL_GRACE_S)
        except TimeoutError:
            self._terminate()
            await _uncancellable(self.gone)

    def _flush(self) -> None:
        while self._outbox:
            data, fds = self._outbox[0]
            try:
                if fds:
                    # The fds travel with the frame's first byte.
                    sent = socket.send_fds(self._sock, [data], fds)
                    _close_all(fds)
                    fds.clear()
                else:
                    sent = self._sock.send(data)
            except BlockingIOError:
                break
            except OSError:
                self._died()  # the host is gone; the EOF or its exit says so too
                return
            if sent < len(data):
                self._outbox[0] = (data[sent:], fds)
            else:
                self._outbox.popleft()
        if self._outbox:
            self._loop.add_writer(self._sock.fileno(), self._flush)
        else:
            self._loop.remove_writer(self._sock.fileno())

    def _receive(self) -> None:
        try:
            data = self._sock.recv(_RECEIVE_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._died()
            return
        self._inbox += data
        for message in decode_frames(self._inbox):
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "exited":
            call = self.calls.pop(message["id"], None)
            if call is not None:
                call.exited_with(message)
            worker = self.workers.pop(message["id"], None)
            if worker is not None:
                self._worker_gone(worker)
        elif op == "spawned":
            worker = self.workers.get(message["id"])
            if worker is not None:
                worker.find(self.host_pid, message["pid"], self.plan)
                worker.spawned = True
                call = self.calls.get(worker.id)
                if call is not None and call.finished:
                    self._measure(call)
        elif op == "ready":
            self._start_timer.cancel()
            self.host_pid = _host_loop_pid(self.pid, self.plan)
            self.started.set_result(message["facts"])
        elif op == "failed":
            self._fail_start(message["error"])

    def _fail_start(self, why: str) -> None:
        if not self.started.done():
            self.started.set_exception(HostFailed(why))
        self._died()

    def _check_killed(self, call: _Call) -> None:
        if self.calls.get(call.target) is call:
            log.error("the sandbox host did not report a killed sandbox gone: killing the host")
            self._terminate()

    def _died(self) -> None:
        """The host is gone or must go: end every call in flight and stop watching."""
        if not self.alive:
            return
        self._start_timer.cancel()
        if not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
        self.alive = False
        self._sock.close()  # the host's EOF: it kills its sandboxes and exits
        for _, fds in self._outbox:
            _close_all(fds)
        self._outbox.clear()
        if not self.started.done():
            self.started.set_exception(HostFailed("the sandbox host exited while starting"))
        if self.calls and not self._stopping:
            log.error(
                "the sandbox host (pid %s) died with %d calls in flight; they end as CRASHED "
                "and the next call starts a new host",
                self.host_pid,
                len(self.calls),
            )
        elif not self._stopping and self.started.exception() is None:
            log.error("the sandbox host (pid %s) died; the next call starts a new one", self.pid)
        for call in self.calls.values():
            call.host_died()
        self.calls.clear()
        for worker in self.workers.values():
            self._worker_gone(worker)
        self.workers.clear()

    def _on_exit(self) -> None:
        """The spawned process ended (with the host): reap it and clean up."""
        self._loop.remove_reader(self._pidfd)
        os.waitpid(self.pid, 0)
        self._died()
        self._release()
        self._pidfd = -1
        if not self.gone.done():
            self.gone.set_result(None)

    def _terminate(self) -> None:
        # With namespaces the spawned process is the relay: SIGTERM makes it kill the
        # host, PID 1 of the namespace, which ends every sandbox. Without, it is the host
        # itself, and its sandboxes die with it (PR_SET_PDEATHSIG).
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM if self.plan.namespaces else signal.SIGKILL)


def _host_loop_pid(spawned: int, plan: Plan) -> int:
    """The pid of the process that forks the sandboxes: the relay's child, with namespaces."""
    if not plan.namespaces:
        return spawned
    with open(f"/proc/{spawned}/task/{spawned}/children") as children:
        return int(children.read().split()[0])


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _close_worker_files(sock: socket.socket, proc_fds: list[int]) -> None:
    sock.close()
    _close_all(proc_fds)
    proc_fds.clear()


def _release(sock: socket.socket, pidfd: int, workdir: str) -> None:
    """Let go of a host process: close its socket and pidfd, remove its working directory."""
    sock.close()
    os.close(pidfd)
    shutil.rmtree(workdir, ignore_errors=True)


# A spare's warm-up as the runner knows it: the spare has the program itself.
_NO_PROGRAM = Program(b"", "", "")


def _crashed(message: str) -> RunResult:
    return RunResult(
        status=RunStatus.CRASHED,
        result_json="",
        stdout="",
        stderr="",
        error_type=_ERROR_TYPES[RunStatus.CRASHED],
        error_message=message,
        traceback="",
        duration_ms=0.0,
        cpu_time_ms=0.0,
        peak_memory_bytes=0,
    )


@dataclass
class _Pipe:
    """The server's end of one output pipe and what came through it, up to a cap."""

    name: str
    cap: int
    fd: int = -1
    data: bytearray = field(default_factory=bytearray)
    reading: bool = True


class _WorkerState(NamedTuple):
    """A worker as its /proc files show it."""

    stopped: bool
    cpu_ns: int
    # Resident anonymous memory (RssAnon): the heap and what it copied from the host.
    anon_bytes: int


@dataclass(eq=False)
class _Worker:
    """A warm worker: its key, its slot (its uid) and the server's end of its channel."""

    id: int
    # The key, the allowed imports and the limits of every call it serves.
    kind: tuple[str, tuple[str, ...], Limits]
    slot: int
    process: _Process
    sock: socket.socket
    cpu_hard_s: int
    calls: int = 0
    # The kernel's figure of its CPU time at the end of its last call.
    cpu_ms: float = 0.0
    idle_since: float = 0.0
    idle_timer: asyncio.TimerHandle | None = None
    # Done when it is idle (its stop landed) or gone, while its call's stop is landing.
    settling: asyncio.Future[None] | None = None
    # The kernel's figures when it was last stopped, and its anonymous memory at start.
    idle_state: _WorkerState | None = None
    start_anon_bytes: int = 0
    alive: bool = True
    # The host said which process it is; its status, schedstat and clear_refs in this
    # process's /proc, if found then.
    spawned: bool = False
    proc_fds: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A worker nobody retired (its SandboxHost was dropped unclosed) lets go of its
        # files when collected; close() does it at once.
        self._release = weakref.finalize(self, _close_worker_files, self.sock, self.proc_fds)

    @property
    def key(self) -> str:
        """The worker key of the calls it serves."""
        return self.kind[0]

    def find(self, host_pid: int, pid: int, plan: Plan) -> None:
        """Open the worker's /proc files: the host's child whose pid in its namespace is ``pid``.

        Opened files stay bound to that process: a pid reused later cannot redirect them.
        """
        # The host's PID namespace is one below this process's when the plan has them.
        level = 1 if plan.namespaces else 0
        try:
            with open(f"/proc/{host_pid}/task/{host_pid}/children") as children:
                candidates = children.read().split()
        except OSError:
            return
        for candidate in candidates:
            try:
                fds = [
                    os.open(f"/proc/{candidate}/{name}", os.O_RDONLY | os.O_CLOEXEC)
                    for name in ("status", "schedstat")
                ]
            except OSError:
                continue
            try:
                nspid = _status_field(os.pread(fds[0], 4096, 0), b"NSpid:")
            except OSError:
                # Another child (an evicted worker, an ended call) went since it was listed.
                _close_all(fds)
                continue
            if len(nspid) > level and int(nspid[level]) == pid:
                try:
                    fds.append(os.pidfd_open(int(candidate)))
                except OSError:
                    _close_all(fds)
                    return
                # Writing it takes ptrace rights over the worker, which a server that is
                # not root lacks: the peak is then the worker's whole life's, a bound
                # from above.
                with contextlib.suppress(OSError):
                    fds.append(os.open(f"/proc/{candidate}/clear_refs", os.O_WRONLY | os.O_CLOEXEC))
                self.proc_fds[:] = fds
                state = self.state()
                self.start_anon_bytes = 0 if state is None else state.anon_bytes
                return
            _close_all(fds)

    def figures(self) -> tuple[float, int] | None:
        """The kernel's CPU time so far (ms) and peak RSS since the last figures (KiB).

        The peak is since the worker started where this process may not reset it. None
        when the worker is gone (a zombie has no VmHWM) or was not found.
        """
        if not self.proc_fds:
            return None
        status, schedstat = self.proc_fds[:2]
        try:
            cpu_ns = int(os.pread(schedstat, 256, 0).split()[0])
            hwm = _status_field(os.pread(status, 4096, 0), b"VmHWM:")
        except (OSError, ValueError, IndexError):
            return None
        if not hwm:
            return None
        return cpu_ns / 1e6, int(hwm[0])

    def settled(self) -> None:
        """Its stop landed, or it is gone: a call waiting for it may go on."""
        if self.settling is not None:
            if not self.settling.done():
                self.settling.set_result(None)
            self.settling = None

    def state(self) -> _WorkerState | None:
        """What the kernel says of the worker now; None when it is gone (or was not found)."""
        try:
            status = os.pread(self.proc_fds[0], 4096, 0)
            cpu_ns = int(os.pread(self.proc_fds[1], 256, 0).split()[0])
        except (OSError, IndexError, ValueError):
            return None
        state = _status_field(status, b"State:")
        anon = _status_field(status, b"RssAnon:")
        if not state or state[0] in (b"Z", b"X") or not anon:
            return None
        return _WorkerState(state[0] == b"T", cpu_ns, int(anon[0]) * 1024)

    def woken(self) -> bool:
        """Whether an idle worker is gone, or ran (or runs) since it was last stopped.

        Bytes it sent that nobody asked for (a second done byte, say) count: read with
        its next call, they would end that call.
        """
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            return True  # unasked-for bytes, or its end closed
        except BlockingIOError:
            pass
        except OSError:
            return True
        now = self.state()
        return (
            now is None
            or self.idle_state is None
            or not now.stopped
            or now.cpu_ns != self.idle_state.cpu_ns
        )

    def held_bytes(self) -> int:
        """What the worker holds, idle, beyond what it held when it started."""
        if self.idle_state is None:
            return 0
        return max(0, self.idle_state.anon_bytes - self.start_anon_bytes)

    def reset_peak(self) -> None:
        """Start the next call's peak resident size at the resident size now.

        Only once the worker is stopped: inside a long system call it holds its memory
        map's lock, and the write would wait for it on the event loop. Without clear_refs
        (no ptrace rights) the peak stays the worker's whole life's, a bound from above.
        """
        for fd in self.proc_fds[3:]:
            with contextlib.suppress(OSError):
                os.write(fd, b"5")

    def pause(self, paused: bool) -> None:
        """Stop the worker between calls, or let it go on for the next one.

        Between calls it must not run: code that escaped the language layer could say
        its call is done and go on computing, past its call's limits, on other calls'
        cores. SIGSTOP reaches PID 1 of a namespace from outside it, unlike most signals.
        """
        if self.proc_fds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(
                    self.proc_fds[2], signal.SIGCONT if not paused else signal.SIGSTOP
                )

    def close(self) -> None:
        """Let go of the server's end of the channel and of the /proc files."""
        self.alive = False
        self._release()


def _status_field(status: bytes, name: bytes) -> list[bytes]:
    """The values of the line of /proc/<pid>/status that starts with ``name``."""
    start = status.find(b"\n" + name)
    if start < 0:
        return []
    return status[start + len(name) + 1 :].split(b"\n", 1)[0].split()


class _Call:
    """One call: its pipes, its clock, and what the host said about its sandbox."""

    def __init__(
        self,
        job: Job,
        program: Program,
        call_id: int,
        slot: int,
        process: _Process,
        worker: _Worker | None = None,
        door: Door | None = None,
    ) -> None:
        self.job = job
        self._program = program
        self.id = call_id
        self.slot = slot
        self._process = process
        self.worker = worker
        self.door = door
        # The id the host knows the sandbox by.
        self.target = call_id if worker is None else worker.id
        # The worker said it finished the call (and whether its working directory is
        # empty again); the host's figures are still to come.
        self.finished = False
        self.clean = False
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = self._loop.create_future()
        cap = job.limits.max_output_bytes
        self._stdout = _Pipe("stdout", cap)
        self._stderr = _Pipe("stderr", cap)
        self._report = _Pipe("result", _report_cap(job.limits))
        self._pipes = (self._stdout, self._stderr, self._report)
        self._write_ends: list[int] = []
        self._wait_status: int | None = None
        self._cpu_ms = 0.0
        self._maxrss_kb = 0
        self._started = self._ended = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._verdict: tuple[RunStatus, str] | None = None
        self._report_void = False
        self._watching = False

    async def run(self) -> RunResult:
        """Submit the call, wait until its sandbox is done and say what happened.

        Raises:
            asyncio.CancelledError: When the awaiting task is cancelled, after the
                sandbox and everything it started are killed and reaped.
        """
        await self.wait()
        return self.result()

    async def wait(self, *, warm_up: bool = False) -> None:
        """Submit the call (a spare's warm-up with ``warm_up``) and wait until it is done.

        Raises:
            asyncio.CancelledError: As for run.
        """
        self._process.submit(self, warm_up=warm_up)
        try:
            await asyncio.shield(self.exited)
        except asyncio.CancelledError:
            self.kill()
            await _uncancellable(self.exited)
            raise

    def watch_warm_up(self) -> None:
        """Start the clock and wait for the spare's byte after its warm-up."""
        self._start_clock()
        assert self.worker is not None
        self._loop.add_reader(self.worker.sock.fileno(), self._on_channel)
        self._watching = True

    def warmed_up(self) -> bool:
        """Whether the spare finished its warm-up in time, its figures read, and lives."""
        return self.finished and self.clean and self._verdict is None

    def give_away(self) -> list[int]:
        """Make the pipes and the job's memfd, start the clock; return what the host gets.

        That is the pipes' write ends and the memfd, then the sandbox's end of the door.
        """
        for pipe in self._pipes:
            pipe.fd, write_end = os.pipe()
            self._write_ends.append(write_end)
            # Only our end: O_NONBLOCK is shared with the sandbox's copies of its ends.
            os.set_blocking(pipe.fd, False)
            self._loop.add_reader(pipe.fd, self._drain, pipe)
        job = os.memfd_create("job", os.MFD_CLOEXEC)
        self._write_ends.append(job)
        data = memoryview(encode_job(self.job, self._program))
        while data:
            data = data[os.write(job, data) :]
        os.lseek(job, 0, os.SEEK_SET)
        if self.door is not None:
            self._write_ends.append(self.door.give_away())
        self._start_clock()
        write_ends, self._write_ends = self._write_ends, []
        return write_ends

    def _start_clock(self) -> None:
        self._started = time.monotonic()
        limits = self.job.limits
        self._timer = self._loop.call_later(
            limits.timeout_ms / 1000,
            self._limit,
            RunStatus.TIMEOUT,
            f"wall-clock limit of {limits.timeout_ms} ms exceeded",
        )

    def send_to_worker(self, fds: list[int]) -> None:
        """Send the job's memfd, the call's pipes and its door to the worker (closed here)."""
        worker = self.worker
        assert worker is not None
        stdout, stderr, report, job, *door = fds
        worker.pause(False)
        try:
            socket.send_fds(worker.sock, [b"r"], [job, stdout, stderr, report, *door])
        except OSError:
            pass  # the worker is gone: the host's exited frame says how
        finally:
            _close_all(fds)
        self._loop.add_reader(worker.sock.fileno(), self._on_channel)
        self._watching = True

    def _unwatch_channel(self) -> None:
        # Before the worker's socket closes (when it is reaped), never after.
        if self._watching:
            self._watching = False
            assert self.worker is not None
            self._loop.remove_reader(self.worker.sock.fileno())

    def _on_channel(self) -> None:
        """The worker's byte after a call: now the kernel's figures from the host."""
        worker = self.worker
        assert worker is not None
        try:
            data = worker.sock.recv(1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._unwatch_channel()
        if not data or self.finished:
            return  # gone, or broke the protocol: the host's exited frame, or the clock
        self.finished = True
        self.clean = data == CALL_DONE
        self._process.call_finished(self)

    def measured(self, cpu_ms: float, hwm_kb: int) -> None:
        """The kernel's figures for the worker's call, which ended with a report."""
        worker = self.worker
        assert worker is not None
        self._wait_status = 0
        self._cpu_ms = max(0.0, cpu_ms - worker.cpu_ms)
        worker.cpu_ms = cpu_ms
        self._maxrss_kb = hwm_kb
        self._end()

    def no_figures(self) -> None:
        """The kernel's figures of the worker cannot be read: kill it, no result."""
        self._limit(RunStatus.CRASHED, "the kernel's figures of the sandbox worker are missing")

    def exited_with(self, message: dict[str, Any]) -> None:
        """The host reaped the sandbox (or could not start one)."""
        error = message.get("error")
        if error is not None:
            self._verdict = self._verdict or (
                RunStatus.CRASHED,
                f"the sandbox host could not start the sandbox process: {error}",
            )
        else:
            self._wait_status = message["status"]
            worker_cpu_ms = 0.0 if self.worker is None else self.worker.cpu_ms
            self._cpu_ms = max(0.0, message["cpu_ms"] - worker_cpu_ms)
            self._maxrss_kb = message["maxrss_kb"]
            if self.worker is not None:
                # A worker that ended during a call left no result, whatever it wrote.
                self.finished = False
                self._report_void = True
        self._unwatch_channel()
        self._end()

    def host_died(self) -> None:
        """The host died, and the sandbox with it."""
        self._verdict = self._verdict or (RunStatus.CRASHED, _HOST_DIED)
        self._unwatch_channel()
        self._end()

    def kill(self) -> None:
        """Have the sandbox killed, whatever it is doing (for a cancellation)."""
        self._process.kill(self)

    def result(self) -> RunResult:
        """What happened, once the sandbox is gone."""
        for pipe in self._pipes:
            self._drain(pipe)
        stderr = self._stderr.data.decode("utf-8", "replace")
        report, problem = _parse_report(self._report.data, self.job.limits)
        if problem and self._verdict is None:
            self._verdict = (
                RunStatus.CRASHED,
                f"the sandbox process sent a malformed report: {problem}",
            )
        status, result_json, error_type, error_message, trace = self._outcome(
            report, self._wait_status, self._cpu_ms, stderr
        )
        # The kernel's figure (wait4's ru_maxrss, which the host read) bounds the claim
        # from below: code that escaped may report any number, but none smaller.
        claimed = report.get("peak_memory_bytes", 0) if report else 0
        peak = max(claimed, self._maxrss_kb * 1024)
        files: tuple[File, ...] = ()
        if report is not None and status in (RunStatus.OK, RunStatus.ERROR):
            files = report["files"]
        return RunResult(
            status=status,
            result_json=result_json,
            stdout=self._stdout.data.decode("utf-8", "replace"),
            stderr=stderr,
            error_type=error_type,
            error_message=error_message,
            traceback=trace,
            duration_ms=(self._ended - self._started) * 1000,
            cpu_time_ms=self._cpu_ms,
            peak_memory_bytes=peak,
            # A spare is a worker without a key, serving its one call.
            warm=self.worker is not None and self.worker.key != "",
            files=files,
        )

    def close(self) -> None:
        """Stop watching the pipes and the worker, and close the server's ends."""
        if self._timer is not None:
            self._timer.cancel()
        self._unwatch_channel()
        for pipe in self._pipes:
            if pipe.fd >= 0:
                self._loop.remove_reader(pipe.fd)
                os.close(pipe.fd)
                pipe.fd = -1
        _close_all(self._write_ends)
        self._write_ends = []

    def _end(self) -> None:
        self._ended = time.monotonic()
        if self._timer is not None:
            self._timer.cancel()
        if not self.exited.done():
            self.exited.set_result(None)

    def _drain(self, pipe: _Pipe) -> None:
        """Read what ``pipe`` holds now, up to its cap; past the cap, kill the sandbox."""
        while pipe.reading:
            try:
                chunk = os.read(pipe.fd, _CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                self._stop_reading(pipe)
                return
            pipe.data += chunk
            if len(pipe.data) > pipe.cap:
                del pipe.data[pipe.cap :]
                self._stop_reading(pipe)
                self._limit(RunStatus.OUTPUT_LIMIT, self._output_limit_message(pipe.name))

    def _stop_reading(self, pipe: _Pipe) -> None:
        pipe.reading = False
        self._loop.remove_reader(pipe.fd)

    def _limit(self, status: RunStatus, message: str) -> None:
        """Kill the sandbox for hitting a limit; the first limit hit is the verdict."""
        if self._verdict is None and not self.exited.done():
            self._verdict = (status, message)
            self.kill()

    def _outcome(
        self,
        report: dict[str, Any] | None,
        wait_status: int | None,
        cpu_time_ms: float,
        stderr: str,
    ) -> tuple[RunStatus, str, str, str, str]:
        """Status, result JSON, error type, error message and traceback of the run."""
        limits = self.job.limits
        verdict = self._verdict
        # The sandbox process exits 0 right after it reports: after any other end, what
        # it wrote is no result (code that escaped could report, then fail).
        if wait_status is not None and os.waitstatus_to_exitcode(wait_status) != 0:
            report = None
        # A worker exits only when told to: one that ended during a call crashed.
        if self._report_void:
            report = None
        if verdict is None and report is not None:
            status = RunStatus(report["status"])
            trace = report["traceback"]
            if status is RunStatus.MEMORY_LIMIT:
                message = f"memory limit of {limits.memory_mb} MiB exceeded"
                return status, "", _ERROR_TYPES[status], message, trace
            if report["files_over"]:
                verdict = RunStatus.OUTPUT_LIMIT, report["files_over"]
            elif len(report["result_json"].encode()) > limits.max_output_bytes:
                verdict = RunStatus.OUTPUT_LIMIT, self._output_limit_message("result")
            elif report["files_problem"] and status is RunStatus.OK:
                # The function returned, but what it left in out/ cannot come back.
                return RunStatus.ERROR, "", "OutputFilesError", report["files_problem"], ""
            else:
                error_type, message = report["error_type"], report["error_message"]
                return status, report["result_json"], error_type, message, trace
        if verdict is None:
            assert wait_status is not None  # with no verdict the host reaped it
            verdict = _explain_exit(wait_status, cpu_time_ms, limits, stderr)
        status, message = verdict
        return status, "", _ERROR_TYPES[status], message, ""

    def _output_limit_message(self, name: str) -> str:
        return f"{name} passed the output limit of {self.job.limits.max_output_bytes} bytes"


def _report_cap(limits: Limits) -> int:
    """The most an honest report of a call under ``limits`` can hold, in bytes.

    The result as an escaped JSON string, at most twice its size, next to a message and
    a traceback whose characters take at most 6 bytes each; the files in base64 with
    their names escaped, and a sentence about them.
    """
    texts = MAX_ERROR_TYPE_CHARS + 2 * MAX_MESSAGE_CHARS + MAX_TRACEBACK_CHARS
    files = 4 * math.ceil(limits.max_files_bytes / 3) + limits.max_files * (6 * 255 + 16)
    return 2 * limits.max_output_bytes + 6 * texts + files + 1024


def _parse_report(data: bytes | bytearray, limits: Limits) -> tuple[dict[str, Any] | None, str]:
    """The sandbox process's report, checked as hostile input, or what is wrong with it.

    Code that escaped the language layer writes the report itself, so nothing in it is
    trusted: the texts come back valid UTF-8 and within their caps, the result valid JSON
    that any reader can parse again (no NaN, no lone surrogate, no integer Python refuses
    to read), the peak memory within a BIGINT column, the files (``_parse_files``) as
    File values under plain names and within ``limits``; a report over those limits
    gets a ``files_over`` of the runner's own.

    Returns:
        The report and ``""``; ``None`` and ``""`` when there is none (the process died
        first); or ``None`` and the problem that makes the run CRASHED.
    """
    if not data:
        return None, ""
    try:
        report = json.loads(data)
    except (ValueError, RecursionError):
        return None, "not JSON in UTF-8"
    if not isinstance(report, dict):
        return None, f"a JSON {type(report).__name__}, not an object"
    if report.get("status") not in _REPORTED_STATUSES:
        return None, "an unknown status"
    for key in _REPORT_FIELDS:
        if not isinstance(report.get(key), str):
            return None, f"{key} is not a string"
    # Cut as the sandbox process cuts them: the traceback keeps its end, where the error is.
    report["error_type"] = _valid_text(report["error_type"][:MAX_ERROR_TYPE_CHARS])
    report["error_message"] = _valid_text(report["error_message"][:MAX_MESSAGE_CHARS])
    report["traceback"] = _valid_text(report["traceback"][-MAX_TRACEBACK_CHARS:])
    peak = report.get("peak_memory_bytes", 0)
    if type(peak) is not int or not 0 <= peak < 2**63:
        return None, "peak_memory_bytes is not a byte count"
    if report["status"] != "ok":
        report["result_json"] = ""
    elif problem := _json_problem(report["result_json"]):
        return None, f"the result is {problem}"
    if problem := _parse_files(report, limits):
        return None, problem
    return report, ""


def _parse_files(report: dict[str, Any], limits: Limits) -> str:
    """Turn the report's ``files`` into File values in place; what is wrong with them.

    A memory_limit report has none, nor one with a ``files_problem``. Past ``limits``
    the files are dropped and ``files_over`` says which limit they passed (the run is
    OUTPUT_LIMIT); the sandbox's own ``files_over`` and ``files_problem`` are kept as
    sentences, cut to a message's length.
    """
    for key in ("files_over", "files_problem"):
        text = report.get(key, "")
        if not isinstance(text, str):
            return f"{key} is not a string"
        report[key] = _valid_text(text[:MAX_MESSAGE_CHARS])
    entries = report.get("files", [])
    if report["status"] == "memory_limit" or report["files_problem"]:
        entries = []  # no files then, whatever else the report holds
    if not isinstance(entries, list):
        return "files is not a list"
    files: list[File] = []
    names: set[str] = set()
    total = 0
    for entry in entries:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and all(isinstance(part, str) for part in entry)
        ):
            return "a file is not a [name, content] pair of strings"
        name, encoded = entry
        if problem := file_name_problem(name):
            return f"the name of a file {problem}"
        if name in names:
            return f"the file {name!r} comes twice"
        names.add(name)
        try:
            content = base64.b64decode(encoded, validate=True)
        except ValueError:
            return f"the content of {name!r} is not base64"
        total += len(content)
        files.append(File(name, content))
    if len(files) > limits.max_files:
        over = f"{len(files)} files, more than the limit of {limits.max_files}"
    elif big := [file for file in files if len(file.content) > limits.max_file_bytes]:
        over = f"{OUTPUT_DIR}/{big[0].name} of {len(big[0].content)} bytes, over the limit of "
        over += f"{limits.max_file_bytes} bytes a file"
    elif total > limits.max_files_bytes:
        over = f"files of {total} bytes, more than the limit of {limits.max_files_bytes}"
    else:
        report["files"] = tuple(files)
        return ""
    report["files"] = ()
    report["files_over"] = f"{OUTPUT_DIR}/ holds {over}"
    return ""


def _valid_text(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 column stores) replaced by U+FFFD."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_problem(text: str) -> str:
    """Why ``text`` is not JSON that every reader can parse back; ``""`` if it is."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        text.encode()
        # Only an escape can decode to a lone surrogate (the sandbox writes none).
        if "\\u" in text:
            json.dumps(value, ensure_ascii=False).encode()
    except RecursionError:
        return "nested too deeply"
    except (ValueError, UnicodeEncodeError) as exc:
        return f"not valid JSON ({exc})"
    return ""


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _explain_exit(
    wait_status: int, cpu_time_ms: float, limits: Limits, stderr: str
) -> tuple[RunStatus, str]:
    """Why a process that wrote no report ended: the CPU-time limit, or a crash."""
    if os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == CPU_LIMIT_EXIT:
        # A warm worker's SIGXCPU handler at the call's soft limit.
        return RunStatus.TIMEOUT, f"CPU time limit of {cpu_limit_seconds(limits)} s exceeded"
    if os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
        cpu_seconds = cpu_limit_seconds(limits)
        # SIGXCPU at the soft limit; SIGKILL at the hard one if SIGXCPU did not kill.
        if signum == signal.SIGXCPU or (
            signum == signal.SIGKILL and cpu_time_ms >= cpu_seconds * 1000
        ):
            return RunStatus.TIMEOUT, f"CPU time limit of {cpu_seconds} s exceeded"
        try:
            how = f"was killed by {signal.Signals(signum).name}"
        except ValueError:
            how = f"was killed by signal {signum}"
    else:
        how = f"exited with code {os.WEXITSTATUS(wait_status)}"
    message = f"the sandbox process {how} without reporting a result"
    tail = stderr[-_STDERR_TAIL_CHARS:].strip()
    if tail:
        message += f"; its stderr ends with:\n{tail}"
    return RunStatus.CRASHED, message
