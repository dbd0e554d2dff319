"""Spares: sandboxes made ahead of time for calls without a worker key, one call each.

As in test_warm, the calls run without the language layer, so that one can show what
its process holds: module-level state (a dict kept in ``sys``), its working directory,
its fds, its uid and the processes it can see.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sandbox.test_host import in_a_pid_namespace
from tests.sandbox.test_run import children
from tests.sandbox.test_warm import plain, scenario
from toolvault.sandbox import RunStatus, SandboxHost

# What a call finds of earlier calls in its process, and what it leaves for later ones.
LOOK = """\
import os, resource, sys
def main(n=0):
    state = sys.__dict__.setdefault("tv_state", {"calls": []})
    state["calls"].append(n)
    found = {
        "calls": state["calls"],
        "files": sorted(os.listdir(".")),
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "uid": os.getuid(),
        "limits": [resource.getrlimit(getattr(resource, name))[1] for name in
                   ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC")],
    }
    with open(f"left-by-{n}", "w") as left:
        left.write("x")
    return found
"""


@pytest.fixture
def spare_host() -> Iterator[SandboxHost]:
    sandbox_host = SandboxHost(preload=(), language_layer=False, spares=2)
    yield sandbox_host
    asyncio.run(sandbox_host.close())


async def ready(host: SandboxHost, count: int) -> list[int]:
    """Wait until ``count`` spares are ready and no other sandbox is left; their pids."""
    deadline = time.monotonic() + 10
    while host.spares != count or len(children(host.pid)) != count:
        assert time.monotonic() < deadline, (host.spares, children(host.pid))
        await asyncio.sleep(0.01)
    return children(host.pid)


def test_spares_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="spares must be 0 or more, not -1"):
        SandboxHost(spares=-1)


def test_a_spare_serves_one_call_and_is_replaced(spare_host: SandboxHost) -> None:
    async def steps() -> list[tuple[dict[str, Any], list[int], list[int]]]:
        seen = []
        # The first call of a kind forks: no spare of it is made before it.
        assert (await spare_host.run(plain(LOOK))).status is RunStatus.OK
        for n in range(6):
            before = await ready(spare_host, 2)
            result = await spare_host.run(plain(LOOK, {"n": n}))
            assert result.status is RunStatus.OK, result.error_message
            after = await ready(spare_host, 2)
            seen.append((json.loads(result.result_json), before, after))
        return seen

    for n, (found, before, after) in enumerate(scenario(spare_host, steps)):
        # Its own process: no call before it ran there, no file of one is left.
        assert found["calls"] == [n]
        assert found["files"] == ["out"]  # the empty out/ of every call
        # One spare served the call and is gone; a new one took its place.
        assert len(set(before) - set(after)) == 1
        assert len(set(after) - set(before)) == 1


def test_a_spares_call_has_a_process_of_its_own(spare_host: SandboxHost) -> None:
    async def steps() -> list[dict[str, Any]]:
        forked = await spare_host.run(plain(LOOK))
        await ready(spare_host, 2)
        # Two calls at once, each in a spare of its own.
        results = await asyncio.gather(*(spare_host.run(plain(LOOK, {"n": n})) for n in (1, 2)))
        return [json.loads(result.result_json) for result in (forked, *results)]

    forked, first, second = scenario(spare_host, steps)
    for found, n in ((first, 1), (second, 2)):
        assert found["calls"] == [n]
        assert found["files"] == ["out"]
        # PID 1 of a namespace of its own, which holds nothing else.
        assert found["pids"] == [1]
        # The job's memfd was read and closed: its channel and the call's three pipes.
        assert found["fds"] == [0, 1, 2, 3, 4]  # 4: the listing's own
        # The hard limits of a sandbox forked for the call, the CPU time's included.
        assert found["limits"] == forked["limits"]
    assert first["uid"] != second["uid"]


def test_spares_stay_within_their_bound_over_many_kinds(spare_host: SandboxHost) -> None:
    async def steps() -> list[int]:
        counts = []
        for timeout_ms in [1_000, 2_000, 3_000, 1_000, 2_000, 3_000] * 2:
            result = await spare_host.run(plain(LOOK, timeout_ms=timeout_ms))
            assert json.loads(result.result_json)["calls"] == [0]
            await asyncio.sleep(0.2)
            counts.append(len(children(spare_host.pid)))
        return counts

    assert max(scenario(spare_host, steps)) <= 2


def test_a_spare_killed_for_a_limit_is_replaced(spare_host: SandboxHost) -> None:
    busy = "def main():\n    while True:\n        pass\n"

    async def steps() -> list[RunStatus]:
        statuses = []
        await spare_host.run(plain(busy, timeout_ms=300))
        for _ in range(3):
            await ready(spare_host, 2)
            statuses.append((await spare_host.run(plain(busy, timeout_ms=300))).status)
        await ready(spare_host, 2)
        return statuses

    assert scenario(spare_host, steps) == [RunStatus.TIMEOUT] * 3


def test_a_cancelled_call_in_a_spare_leaves_only_new_spares(spare_host: SandboxHost) -> None:
    async def steps() -> tuple[list[int], list[int]]:
        await spare_host.run(plain(LOOK))
        before = await ready(spare_host, 2)
        task = asyncio.create_task(
            spare_host.run(plain("import time\ndef main():\n    time.sleep(30)\n"))
        )
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return before, await ready(spare_host, 2)

    before, after = scenario(spare_host, steps)
    # The spare that served the call was killed and reaped; the other one is still there.
    assert len(set(before) & set(after)) == 1


def test_a_host_closed_while_its_spares_are_made_leaves_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = SandboxHost(preload=(), language_layer=False, spares=2)

    async def steps() -> list[int]:
        await host.start()
        host_pid = host.pid
        await host.run(plain(LOOK))  # the spares are being made when it returns
        await host.close()
        await asyncio.sleep(0.1)
        return children(host_pid)

    with caplog.at_level(logging.ERROR):
        assert asyncio.run(steps()) == []
    assert [record.getMessage() for record in caplog.records] == []


KILL_WITH_SPARES = """\
    import asyncio, json, os, signal, sys, time
    from pathlib import Path
    from toolvault.sandbox import Job, Limits, SandboxHost

    def job(source):
        limits = Limits(timeout_ms=20_000, memory_mb=256, max_output_bytes=1024)
        return Job(source, "main", "{}", (), limits)

    def children(pid):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    async def ready(host):
        while host.spares < 2:
            await asyncio.sleep(0.01)

    async def scenario(when):
        host = SandboxHost(preload=(), language_layer=False, spares=2)
        await host.start()
        await host.run(job("def main():\\n    return 1\\n"))
        await host.run(job("def main():\\n    return 1\\n"))
        await ready(host)
        first_host = host.pid
        spares = children(first_host)
        task = None
        if when == "mid-call":
            task = asyncio.create_task(
                host.run(job("import time\\ndef main():\\n    time.sleep(30)\\n"))
            )
            await asyncio.sleep(0.3)
        os.kill(first_host, signal.SIGKILL)
        crashed = None if task is None else await task
        await asyncio.sleep(0.3)
        following = await host.run(job("def main():\\n    return 42\\n"))
        await host.run(job("def main():\\n    return 1\\n"))
        await ready(host)
        replaced = host.pid != first_host and len(children(host.pid)) == 2
        await host.close()
        await asyncio.sleep(0.1)
        print(json.dumps({
            "spares": len(spares),
            "old_spares_left": [pid for pid in spares if Path(f"/proc/{pid}").exists()],
            "crashed": None if crashed is None else [crashed.status.name, crashed.error_message],
            "following": [following.status.name, following.result_json],
            "replaced": replaced,
            "left": children(os.getpid()),
        }))

    asyncio.run(scenario(sys.argv[1]))
"""


@pytest.mark.parametrize("when", ["idle", "mid-call"])
def test_a_host_that_dies_takes_its_spares_and_the_next_host_makes_new_ones(when: str) -> None:
    found = in_a_pid_namespace(KILL_WITH_SPARES, when)
    assert found["spares"] == 2
    assert found["old_spares_left"] == []
    if when == "mid-call":
        assert found["crashed"] == ["CRASHED", "the sandbox host died while the function ran"]
    assert found["following"] == ["OK", "42"]
    assert found["replaced"]
    assert found["left"] == []
