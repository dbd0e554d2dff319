"""Red-team attacks on fresh calls' early end, with the language layer assumed fallen.

Each job runs as full Python (``SandboxHost(language_layer=False)``), in a spare (made
ahead of time, one call each) or in a sandbox forked for the call. A spare's call ends
when it says it is done, before the host has reaped it: these tests check what
SECURITY.md claims for that ("Spares"): a call that says it is done (or lets go of its
pipes) and goes on computing gets its figures from the kernel, not from its report, is
stopped and killed, and one that never says so ends at its wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox.test_run import children
from tests.sandbox.test_warm import plain, scenario
from toolvault.sandbox import RunResult, RunStatus, SandboxHost

# Work for the kernel to see (CPU and 64 MiB touched), then a report that claims none of
# it, the call's pipes closed and (``done``) the worker's "done" byte on its channel,
# fd 0 of a spare; then more work.
EARLY_END = """\
import json, os, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
def main(done=True, after=10.0):
    ballast = bytearray(64 << 20)
    burn(0.3)
    report = {"status": "ok", "result_json": "1", "error_type": "", "error_message": "",
              "traceback": "", "peak_memory_bytes": 0}
    os.write(3, json.dumps(report).encode())
    for fd in (1, 2, 3):
        os.close(fd)
    if done:
        os.write(0, b"d")
    burn(after)
    return len(ballast)
"""
MIB = 1 << 20


@pytest.fixture(params=[0, 2], ids=["forked", "spare"])
def any_host(request: pytest.FixtureRequest) -> Iterator[tuple[SandboxHost, int]]:
    """A host, and how many spares it keeps."""
    sandbox_host = SandboxHost(preload=(), language_layer=False, spares=request.param)
    yield sandbox_host, request.param
    asyncio.run(sandbox_host.close())


async def spares_ready(host: SandboxHost, count: int = 2) -> list[int]:
    """Wait until ``count`` spares are ready and no other sandbox is left; their pids."""
    deadline = time.monotonic() + 10
    while host.spares != count or len(children(host.pid)) != count:
        assert time.monotonic() < deadline, (host.spares, children(host.pid))
        await asyncio.sleep(0.01)
    return children(host.pid)


def test_a_spare_that_says_done_and_goes_on_is_killed_and_billed_by_the_kernel() -> None:
    host = SandboxHost(preload=(), language_layer=False, spares=2)

    async def steps() -> tuple[RunResult, float, list[int]]:
        await host.run(plain("def main():\n    return 1\n", timeout_ms=5_000))
        spares = await spares_ready(host)
        result = await host.run(plain(EARLY_END, timeout_ms=5_000))
        returned = time.monotonic()
        # The spare that served it must be gone at once: stopped at its done byte, killed.
        while all(Path(f"/proc/{pid}").exists() for pid in spares):
            await asyncio.sleep(0.01)
        gone_after = time.monotonic() - returned
        await host.close()
        return result, gone_after, spares

    try:
        result, gone_after, _ = scenario(host, steps)
    finally:
        asyncio.run(host.close())
    # Its report's word for the outcome, the kernel's for what it used: not the zeros
    # it claimed, all of the 0.3 s and the 64 MiB before its done byte.
    assert result.status is RunStatus.OK, result.error_message
    assert result.result_json == "1"
    assert result.cpu_time_ms >= 250, result.cpu_time_ms
    assert result.peak_memory_bytes >= 64 * MIB, result.peak_memory_bytes
    # Ended at its done byte, not after the 10 s it went on for (with room for a busy
    # machine: it takes milliseconds).
    assert result.duration_ms < 5_000, result.duration_ms
    assert gone_after < 2.0, gone_after


def test_a_call_that_lets_go_of_its_pipes_and_goes_on_ends_at_its_wall_clock(
    any_host: tuple[SandboxHost, int],
) -> None:
    host, spares = any_host

    async def steps() -> tuple[RunResult, list[int], list[int]]:
        await host.run(plain("def main():\n    return 1\n", timeout_ms=1_000))
        before = await spares_ready(host, spares)
        result = await host.run(plain(EARLY_END, {"done": False}, timeout_ms=1_000))
        return result, before, await spares_ready(host, spares)

    result, before, after = scenario(host, steps)
    # Its report came, its pipes closed: no result until the process is gone, which
    # takes the wall clock here.
    assert result.status is RunStatus.TIMEOUT, (result.status, result.error_message)
    assert result.error_message == "wall-clock limit of 1000 ms exceeded"
    assert result.result_json == ""
    assert 1_000 <= result.duration_ms < 5_000
    assert result.cpu_time_ms >= 250
    # Nothing of it survives: with spares, one of those before it is gone.
    assert len(set(before) - set(after)) == (1 if spares else 0)
