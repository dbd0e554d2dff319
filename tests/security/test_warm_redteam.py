"""Red-team attacks on warm workers, with the language layer assumed fallen.

Each job runs as full Python (``SandboxHost(language_layer=False)``) in a warm worker,
confined exactly as the server's. Each test asserts a property the design claims for
warm workers (SECURITY.md, "Warm workers: what survives between calls of one key"):
a call that says it is done and goes on computing is stopped (the worker is SIGSTOPped
between calls), and a host that dies before a call reaches it does not strand the call.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox.test_host import in_a_pid_namespace
from tests.sandbox.test_warm import plain, scenario, worker_pids
from toolvault.sandbox import RunResult, RunStatus, SandboxHost

# A call that does the worker's part of the protocol itself (its report on fd 3, the
# call's fds closed, the "done" byte on the worker's channel, fd 0), then keeps running.
EARLY_DONE = """\
import json, os, time
def main(seconds=4.0):
    report = {"status": "ok", "result_json": "1", "error_type": "", "error_message": "",
              "traceback": "", "peak_memory_bytes": 0}
    os.write(3, json.dumps(report).encode())
    for fd in (1, 2, 3):
        os.close(fd)
    os.write(0, b"d")
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
"""


@pytest.fixture
def open_host() -> Iterator[SandboxHost]:
    sandbox_host = SandboxHost(preload=(), language_layer=False)
    yield sandbox_host
    asyncio.run(sandbox_host.close())


def cpu_seconds(pid: int) -> float:
    """The kernel's CPU time of ``pid`` so far (its schedstat, as the runner reads it)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def test_a_worker_runs_nothing_after_its_call_has_ended(open_host: SandboxHost) -> None:
    async def steps() -> tuple[RunResult, float, dict[str, int]]:
        result = await open_host.run(plain(EARLY_DONE, timeout_ms=500), worker_key="k")
        (worker,) = worker_pids(open_host)
        before = cpu_seconds(worker)
        await asyncio.sleep(2)
        return result, cpu_seconds(worker) - before, dict(open_host.workers)

    result, idle_cpu_s, workers = scenario(open_host, steps)
    # The call's outcome: OK, well within its clock, with almost no CPU on its bill.
    assert result.status is RunStatus.OK, result.error_message
    assert result.cpu_time_ms < 500
    assert workers == {"k": 1}  # kept as idle, ready for the next call
    # Idle for 2 s, after a call whose wall clock was 0.5 s: it must not have run.
    assert idle_cpu_s < 0.2, f"the idle worker used {idle_cpu_s:.2f} s of CPU"


# The host dies while the server compiles a call's source (a first call of a version):
# the call goes to the dead host's process object all the same.
HOST_DIES_WHILE_COMPILING = """\
    import asyncio, json, os, signal, sys, time
    from toolvault.sandbox import Job, Limits, SandboxHost, _runner

    real = _runner.compile_job

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    _runner.compile_job = slow

    async def scenario(key):
        host = SandboxHost(preload=(), language_layer=False)
        await host.start()
        limits = Limits(timeout_ms=1000, memory_mb=256, max_output_bytes=1024)
        job = Job("def main():\\n    return 1\\n", "main", "{}", (), limits)
        task = asyncio.create_task(host.run(job, worker_key=key or None))
        await asyncio.sleep(0.2)
        os.kill(host.pid, signal.SIGKILL)
        done, _ = await asyncio.wait([task], timeout=5)
        found = {"ended": bool(done), "workers": host.workers}
        if done:
            found["status"] = task.result().status.name
        print(json.dumps(found), flush=True)
        os._exit(0)  # close() would wait for the call too

    asyncio.run(scenario(sys.argv[1]))
"""


@pytest.mark.parametrize("key", ["", "k"], ids=["fresh", "warm"])
def test_a_call_ends_when_its_host_dies_before_it_is_submitted(key: str) -> None:
    found = in_a_pid_namespace(HOST_DIES_WHILE_COMPILING, key)
    assert found["ended"], found
    # The host died before the call reached it: the call runs on the next one.
    assert found["status"] == "OK", found
    assert found["workers"] == ({"k": 1} if key else {}), found


# A bystander's call: 0.3 s of CPU, under a wall clock of 0.6 s.
BYSTANDER = """\
import time
def main():
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    return 1
"""


def test_idle_workers_of_one_tenant_cant_starve_the_calls_of_others(
    open_host: SandboxHost,
) -> None:
    # Three busy processes a core, within the pool's bound of 16 workers.
    attackers = min(16, 3 * (os.cpu_count() or 1))

    async def steps() -> tuple[list[RunStatus], list[RunStatus]]:
        bystander = plain(BYSTANDER, timeout_ms=600)
        before = [(await open_host.run(bystander)).status for _ in range(2)]
        for n in range(attackers):
            attack = plain(EARLY_DONE, {"seconds": 15}, timeout_ms=500)
            assert (await open_host.run(attack, worker_key=f"attacker{n}")).status is RunStatus.OK
        await asyncio.sleep(0.5)
        after = [(await open_host.run(bystander)).status for _ in range(3)]
        return before, after

    before, after = scenario(open_host, steps)
    assert before == [RunStatus.OK] * 2
    assert after == [RunStatus.OK] * 3, after
