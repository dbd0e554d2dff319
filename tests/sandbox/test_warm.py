"""Warm workers: calls of one key share a worker, never another key's; what stays fresh.

Most tests here run without the language layer (``language_layer=False``, as the kernel
suite does), so that a call can show which worker served it: module-level state of the
process (a dict kept in ``sys``) survives between the calls of a worker, and its id and
counter say which worker it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.sandbox.test_host import in_a_pid_namespace
from tests.sandbox.test_run import children, job
from toolvault.sandbox import Job, RunResult, RunStatus, SandboxHost, _runner

# What a call returns: which worker it ran in (the id of a dict the worker keeps), how
# many calls that worker served, and the keys they came with.
WHO = """\
import sys
def main(key="", **_):
    state = sys.__dict__.setdefault("tv_state", {"calls": 0, "keys": []})
    state["calls"] += 1
    state["keys"].append(key)
    return [id(state), state["calls"], state["keys"]]
"""


def plain(source: str, args: dict[str, Any] | None = None, **limits: int) -> Job:
    """``job`` for a host without the language layer: any import."""
    return replace(job(source, args, **limits), allowed_imports=())


@pytest.fixture
def open_host() -> Iterator[SandboxHost]:
    sandbox_host = SandboxHost(preload=(), language_layer=False)
    yield sandbox_host
    asyncio.run(sandbox_host.close())


def scenario(host: SandboxHost, steps: Callable[[], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        await host.start()
        return await steps()

    return asyncio.run(run())


async def who(host: SandboxHost, key: str, **limits: int) -> list[Any]:
    result = await host.run(plain(WHO, {"key": key}, **limits), worker_key=key)
    assert result.status is RunStatus.OK, result.error_message
    found: list[Any] = json.loads(result.result_json)
    return found


def worker_pids(host: SandboxHost) -> list[int]:
    return children(host.pid)


def test_a_worker_serves_only_calls_of_its_own_key(open_host: SandboxHost) -> None:
    async def steps() -> list[tuple[str, list[Any]]]:
        return [(key, await who(open_host, key)) for key in ["a@1", "b@1", "a@1", "ns/a@1"] * 3]

    seen = scenario(open_host, steps)
    by_key: dict[str, list[list[Any]]] = {}
    for key, found in seen:
        by_key.setdefault(key, []).append(found)
    workers = {key: {found[0] for found in calls} for key, calls in by_key.items()}
    assert all(len(ids) == 1 for ids in workers.values()), workers
    for key, calls in by_key.items():
        assert [found[1] for found in calls] == list(range(1, len(calls) + 1))
        # Module-level state never crosses keys: each worker saw its own key only.
        assert set(calls[-1][2]) == {key}
    assert open_host.workers == {"a@1": 1, "b@1": 1, "ns/a@1": 1}


def test_calls_without_a_key_run_fresh(open_host: SandboxHost) -> None:
    async def steps() -> list[RunResult]:
        return [await open_host.run(plain(WHO)) for _ in range(3)]

    results = scenario(open_host, steps)
    assert [json.loads(r.result_json)[1] for r in results] == [1, 1, 1]
    assert open_host.workers == {}


def test_globals_are_fresh_each_call() -> None:
    host = SandboxHost()
    source = "seen = []\ndef main():\n    seen.append(1)\n    return len(seen)\n"

    async def steps() -> list[str]:
        return [(await host.run(job(source), worker_key="k")).result_json for _ in range(3)]

    try:
        assert scenario(host, steps) == ["1", "1", "1"]
        assert host.workers == {"k": 1}
    finally:
        asyncio.run(host.close())


def test_the_working_directory_is_wiped_after_each_call(open_host: SandboxHost) -> None:
    source = """\
import os
def main():
    found = [sorted(os.listdir(".")), os.listdir("out")]
    os.makedirs("d/e")
    for path in ("f", "d/e/g", "out/h"):
        with open(path, "w") as file:
            file.write("x")
    return found
"""

    async def steps() -> list[str]:
        return [(await open_host.run(plain(source), worker_key="k")).result_json for _ in range(3)]

    # Each call finds only its own empty out/.
    assert scenario(open_host, steps) == ['[["out"], []]'] * 3
    assert open_host.workers == {"k": 1}


def test_a_worker_that_cannot_wipe_its_working_directory_is_replaced(
    open_host: SandboxHost,
) -> None:
    stuck = """import os, sys
def main(key="", **_):
    sys.__dict__.setdefault("tv_state", {"calls": 0, "keys": []})["calls"] += 1
    os.makedirs("d/e")
    os.chmod("d", 0)
    return 1
"""

    async def steps() -> tuple[RunResult, list[Any]]:
        result = await open_host.run(plain(stuck), worker_key="k")
        return result, await who(open_host, "k")

    result, after = scenario(open_host, steps)
    assert result.status is RunStatus.OK
    assert after[1] == 1


def test_a_cancelled_call_retires_its_worker(open_host: SandboxHost) -> None:
    async def steps() -> list[Any]:
        await who(open_host, "k")
        task = asyncio.create_task(
            open_host.run(plain("import time\ndef main():\n    time.sleep(30)\n"), worker_key="k")
        )
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await who(open_host, "k")

    assert scenario(open_host, steps)[1] == 1


@pytest.mark.parametrize(
    ("source", "limits", "status"),
    [
        ("def main():\n    raise ValueError('no')\n", {}, RunStatus.ERROR),
        ("def main():\n    while True:\n        pass\n", {"timeout_ms": 300}, RunStatus.TIMEOUT),
        ("def main():\n    return bytearray(400 << 20)\n", {}, RunStatus.MEMORY_LIMIT),
        ("import os\ndef main():\n    os._exit(9)\n", {}, RunStatus.CRASHED),
        ("def main():\n    print('x' * 100_000)\n", {}, RunStatus.OUTPUT_LIMIT),
        ("import os\ndef main():\n    os.write(3, b'{')\n", {}, RunStatus.CRASHED),
    ],
    ids=["error", "timeout", "memory", "crash", "output", "malformed-report"],
)
def test_a_worker_is_replaced_after_any_outcome_but_ok(
    open_host: SandboxHost, source: str, limits: dict[str, int], status: RunStatus
) -> None:
    async def steps() -> tuple[list[Any], RunResult, list[Any]]:
        before = await who(open_host, "k", **limits)
        failed = await open_host.run(plain(source, **limits), worker_key="k")
        return before, failed, await who(open_host, "k", **limits)

    before, failed, after = scenario(open_host, steps)
    assert failed.status is status, failed.error_message
    assert before[1] == 1
    assert after[1] == 1  # a new worker


def test_cpu_time_is_limited_per_call_across_a_workers_life(open_host: SandboxHost) -> None:
    # Each call may use 2 s of CPU (1 s of wall clock, plus one); together they use more.
    burn = """\
import resource, sys, time
def main(key="", **_):
    sys.__dict__.setdefault("tv_state", {"calls": 0, "keys": []})["calls"] += 1
    end = time.process_time() + 0.4
    while time.process_time() < end:
        pass
    return resource.getrlimit(resource.RLIMIT_CPU)
"""

    async def steps() -> list[RunResult]:
        calls = [plain(source, {"key": "k"}, timeout_ms=1000) for source in (burn, WHO)]
        return [await open_host.run(calls[i // 7], worker_key="k") for i in range(8)]

    results = scenario(open_host, steps)
    assert [r.status for r in results] == [RunStatus.OK] * 8, results[-1].error_message
    limits = [json.loads(r.result_json) for r in results[:7]]
    # The soft limit follows what the worker used; the hard one bounds its whole life.
    assert limits[0][0] in (2, 3) and limits[-1][0] >= 4
    assert all(hard == 2 * 1000 + 1 for _, hard in limits)
    assert json.loads(results[-1].result_json)[1] == 8  # all in one worker
    assert all(350 <= r.cpu_time_ms < 1000 for r in results[1:7]), [r.cpu_time_ms for r in results]
    assert results[-1].cpu_time_ms < 200


def test_peak_memory_is_the_kernels_figure_per_call(open_host: SandboxHost) -> None:
    big = "def main(key='', **_):\n    data = bytearray(80 << 20)\n    return len(data)\n"

    async def steps() -> list[RunResult]:
        return [
            await open_host.run(plain(source, {"key": "k"}), worker_key="k")
            for source in (big, WHO, big)
        ]

    results = scenario(open_host, steps)
    assert [r.status for r in results] == [RunStatus.OK] * 3
    peaks = [r.peak_memory_bytes >> 20 for r in results]
    assert peaks[0] >= 80 and peaks[2] >= 80
    assert peaks[1] < 60, peaks  # reset after each call


def test_where_the_peak_cannot_be_reset_it_is_the_workers_whole_lifes(
    open_host: SandboxHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As for a server that is not root: clear_refs takes ptrace rights over the worker.
    real_open = os.open

    def no_clear_refs(path: str, flags: int, *args: int) -> int:
        if str(path).endswith("/clear_refs"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_clear_refs)
    big = "def main(key='', **_):\n    data = bytearray(80 << 20)\n    return len(data)\n"

    async def steps() -> list[RunResult]:
        return [
            await open_host.run(plain(source, {"key": "k"}), worker_key="k")
            for source in (big, WHO, WHO)
        ]

    results = scenario(open_host, steps)
    assert [r.status for r in results] == [RunStatus.OK] * 3
    assert [json.loads(r.result_json)[1] for r in results[1:]] == [1, 2]  # one worker
    assert all(r.peak_memory_bytes >> 20 >= 80 for r in results)  # a bound from above


def test_pools_stay_within_their_bounds() -> None:
    host = SandboxHost(preload=(), language_layer=False, max_workers=4, max_workers_per_key=2)

    async def steps() -> tuple[int, list[int], list[RunStatus]]:
        most = 0
        for n in range(200):
            await who(host, f"f{n}@1")
            most = max(most, sum(host.workers.values()))
        # Five calls of one key at once: two workers, the others fresh; none waits.
        results = await asyncio.gather(
            *(
                host.run(plain(WHO + "import time\ntime.sleep(0.3)\n"), worker_key="x")
                for _ in range(5)
            )
        )
        counts = [sum(host.workers.values()), host.workers.get("x", 0)]
        return most, counts, [r.status for r in results]

    try:
        most, counts, statuses = scenario(host, steps)
        assert most == 4
        assert counts == [4, 2]
        assert statuses == [RunStatus.OK] * 5
        # Retired workers are killed at once but reaped a moment later.
        deadline = time.monotonic() + 5
        while len(worker_pids(host)) > 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(worker_pids(host)) <= 4
    finally:
        asyncio.run(host.close())


def test_workers_retire_after_their_calls_their_idle_time_and_on_retire() -> None:
    host = SandboxHost(preload=(), language_layer=False, max_calls_per_worker=2, worker_idle_s=0.3)

    async def steps() -> list[int]:
        counts = [(await who(host, "k"))[1] for _ in range(3)]
        await asyncio.sleep(0.6)
        counts.append((await who(host, "k"))[1])
        host.retire("k")
        counts.append(sum(host.workers.values()))
        counts.append((await who(host, "k"))[1])
        return counts

    try:
        assert scenario(host, steps) == [1, 2, 1, 1, 0, 1]
    finally:
        asyncio.run(host.close())


KILL_MID_CALL = """\
    import asyncio, json, os, signal, sys, time
    from pathlib import Path
    from toolvault.sandbox import Job, Limits, SandboxHost

    def job(source):
        limits = Limits(timeout_ms=20_000, memory_mb=256, max_output_bytes=1024)
        return Job(source, "main", "{}", (), limits)

    def children(pid):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    async def scenario(victim):
        host = SandboxHost(preload=(), language_layer=False)
        await host.start()
        ok = await host.run(job("def main():\\n    return 1\\n"), worker_key="k")
        (worker,) = children(host.pid)
        task = asyncio.create_task(
            host.run(job("import time\\ndef main():\\n    time.sleep(30)\\n"), worker_key="k")
        )
        await asyncio.sleep(0.3)
        killed = time.monotonic()
        os.kill(worker if victim == "worker" else host.pid, signal.SIGKILL)
        crashed = await task
        ended_after = time.monotonic() - killed
        following = await host.run(job("def main():\\n    return 42\\n"), worker_key="k")
        await host.close()
        await asyncio.sleep(0.1)
        return {
            "left": children(os.getpid()),
            "ok": ok.status.name,
            "crashed": [crashed.status.name, crashed.error_message],
            "ended_after": ended_after,
            "following": [following.status.name, following.result_json],
        }

    print(json.dumps(asyncio.run(scenario(sys.argv[1]))))
"""


@pytest.mark.parametrize(
    ("victim", "message"),
    [
        ("worker", "the sandbox process was killed by SIGKILL without reporting a result"),
        ("host", "the sandbox host died while the function ran"),
    ],
)
def test_killing_a_worker_or_the_host_mid_call_ends_the_call_as_crashed(
    victim: str, message: str
) -> None:
    found = in_a_pid_namespace(KILL_MID_CALL, victim)
    assert found["ok"] == "OK"
    assert found["crashed"] == ["CRASHED", message]
    assert found["ended_after"] < 2
    assert found["following"] == ["OK", "42"]
    assert found["left"] == []


def test_a_worker_whose_stop_was_landing_when_its_loop_ended_serves_no_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = SandboxHost(preload=(), language_layer=False)
    real_state = _runner._Worker.state  # noqa: SLF001

    def never_stopped(worker: Any) -> Any:
        state = real_state(worker)
        return None if state is None else state._replace(stopped=False)

    try:
        # The first loop ends while the runner still waits for the worker's stop.
        monkeypatch.setattr(_runner._Worker, "state", never_stopped)  # noqa: SLF001
        first = asyncio.run(host.run(plain(WHO, {"key": "k"}), worker_key="k"))
        monkeypatch.setattr(_runner._Worker, "state", real_state)  # noqa: SLF001
        second = asyncio.run(
            asyncio.wait_for(host.run(plain(WHO, {"key": "k"}), worker_key="k"), 10)
        )
        assert [first.status, second.status] == [RunStatus.OK] * 2, second.error_message
        assert json.loads(second.result_json)[1] == 1  # a new worker
    finally:
        asyncio.run(host.close())


def test_a_result_says_whether_a_warm_worker_ran_it() -> None:
    host = SandboxHost(preload=(), language_layer=False, spares=1)

    async def steps() -> list[bool]:
        ran = []
        for key in ("k", "k", None, None, None):
            result = await host.run(plain(WHO, {"key": "x"}), worker_key=key)
            assert result.status is RunStatus.OK, result.error_message
            ran.append(result.warm)
            await asyncio.sleep(0.2)  # time for a spare to be made
        return ran

    try:
        # Forked for the call, or a spare: a process of its own either way.
        assert scenario(host, steps) == [True, True, False, False, False]
    finally:
        asyncio.run(host.close())
