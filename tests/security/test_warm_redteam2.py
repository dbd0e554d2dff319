"""Second red-team pass on warm workers: the stop between calls and the runner's /proc figures.

As in test_warm_redteam, each job runs as full Python (``SandboxHost(language_layer=False)``)
in a warm worker confined exactly as the server's; the language layer is assumed fallen.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from tests.sandbox.test_warm import plain, scenario
from toolvault.sandbox import RunStatus, SandboxHost

# A call that does the worker's part of the protocol itself (report on fd 3, the call's
# fds closed, the "done" byte on fd 0), then, still inside one syscall, faults in a large
# anonymous mapping: MADV_POPULATE_WRITE holds the worker's mmap lock (for reading) the
# whole time, and SIGSTOP takes effect only when the syscall returns. The runner, on the
# done byte, stops the worker and writes "5" to its clear_refs, which takes that mmap
# lock for writing: the server's event loop blocks until the madvise is done.
HOLDS_MMAP_LOCK = """\
import ctypes, json, os
def main(mb=600):
    report = {"status": "ok", "result_json": "1", "error_type": "", "error_message": "",
              "traceback": "", "peak_memory_bytes": 0}
    os.write(3, json.dumps(report).encode())
    for fd in (1, 2, 3):
        os.close(fd)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    size = mb << 20
    addr = libc.mmap(None, size, 3, 0x22, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    assert addr not in (None, ctypes.c_void_p(-1).value)
    os.write(0, b"d")
    libc.madvise(addr, size, 23)  # MADV_POPULATE_WRITE
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.munmap(addr, size)
"""

# The race: the stop lands at once if the worker has not yet entered madvise when the
# runner reads the done byte (the madvise then runs at the next call). Attackers retry;
# the worker then exits (code 70) on its next call, whose fds main() closed, and the call
# after that gets a new worker: every other call of the key is an attempt.
TRIES = 6


@pytest.fixture
def open_host() -> Iterator[SandboxHost]:
    sandbox_host = SandboxHost(preload=(), language_layer=False)
    yield sandbox_host
    asyncio.run(sandbox_host.close())


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the runner opens clear_refs only with ptrace rights (root)"
)
def test_a_worker_cannot_stall_the_event_loop_through_clear_refs(
    open_host: SandboxHost,
) -> None:
    async def steps() -> tuple[RunStatus, float]:
        limits = {"timeout_ms": 5000, "memory_mb": 1024}
        first = await open_host.run(plain("def main():\n    return 0\n", **limits), worker_key="k")
        assert first.status is RunStatus.OK, first.error_message
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        watch = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        statuses = set()
        for _ in range(TRIES):
            result = await open_host.run(plain(HOLDS_MMAP_LOCK, **limits), worker_key="k")
            statuses.add(result.status)
            await asyncio.sleep(0.1)
        stop.set()
        await watch
        assert RunStatus.OK in statuses
        return RunStatus.OK, max(gaps)

    status, worst_gap = scenario(open_host, steps)
    assert status is RunStatus.OK
    # Everything else the event loop serves (other keys' calls included) waited this long.
    assert worst_gap < 0.1, f"the event loop was blocked for {worst_gap:.2f} s"


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[0]) / 1e9
    except OSError:
        return None  # killed and reaped


async def _cpu_used(pid: int, seconds: float) -> float:
    """The CPU time ``pid`` uses over ``seconds``, or until it is gone."""
    before = last = _cpu_seconds(pid)
    assert before is not None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        now = _cpu_seconds(pid)
        if now is None:
            break
        last = now
    return last - before


def test_a_worker_gets_no_cpu_after_its_call_even_inside_a_syscall(
    open_host: SandboxHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As for a server that is not root (the image's uid 10001): no clear_refs. The call
    # returns at once; the worker is kept only once its stop has landed.
    real_open = os.open

    def no_clear_refs(path: str, flags: int, *args: int) -> int:
        if str(path).endswith("/clear_refs"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_clear_refs)

    async def steps() -> tuple[RunStatus, float, dict[str, int]]:
        limits = {"timeout_ms": 1000, "memory_mb": 2048}
        statuses, idle = set(), 0.0
        for _ in range(TRIES):
            result = await open_host.run(
                plain(HOLDS_MMAP_LOCK, {"mb": 1500}, **limits), worker_key="k"
            )
            statuses.add(result.status)
            if result.status is not RunStatus.OK:
                continue
            workers = list(open_host._workers.values())  # noqa: SLF001
            if not workers:
                continue  # already killed: its stop did not land
            # The worker's pid here: from its status file, which the runner opened.
            status = os.pread(workers[0].proc_fds[0], 4096, 0).decode()
            pid = int(status.split("\nPid:")[1].split()[0])
            # Kept (stopped), or killed once its stop did not land within the grace.
            idle = max(idle, await _cpu_used(pid, 1.5))
        assert RunStatus.OK in statuses
        return RunStatus.OK, idle, dict(open_host.workers)

    status, idle_cpu_s, workers = scenario(open_host, steps)
    assert status is RunStatus.OK
    assert idle_cpu_s < 0.2, f"the idle worker used {idle_cpu_s:.2f} s of CPU"
