"""The warm sandbox host: calls are forked from it, isolated from each other, supervised.

Tests that signal processes (or whose host's sandboxes do with trusted probe code) run in
a throw-away PID namespace, so that a failing layer can at worst hit that namespace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from tests.sandbox.test_run import BUSY, children, job, outcome, running_sandbox
from toolvault.sandbox import Plan, RunStatus, SandboxHost, detect

UNSHARE = shutil.which("unshare")


@pytest.fixture
def host() -> Iterator[SandboxHost]:
    sandbox_host = SandboxHost()
    yield sandbox_host
    asyncio.run(sandbox_host.close())


def in_a_pid_namespace(code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` as root of a throw-away PID namespace; return the JSON it prints."""
    if UNSHARE is None:
        pytest.skip("util-linux unshare is needed to contain the test")
    done = subprocess.run(
        [UNSHARE, "--pid", "--fork", "--mount-proc", "--kill-child"]
        + [sys.executable, "-I", "-c", dedent(code), *args],
        env={},
        capture_output=True,
        timeout=60,
        start_new_session=True,
    )
    assert done.stdout, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_call_runs_in_a_process_forked_by_the_warm_host(host: SandboxHost) -> None:
    async def scenario() -> tuple[int | None, int, bytes, bytes]:
        await host.start()
        task = asyncio.create_task(host.run(job(BUSY, timeout_ms=3000)))
        pid = await running_sandbox(lambda: host.pid)
        stat = Path(f"/proc/{pid}/stat").read_text()
        parent = int(stat.rpartition(")")[2].split()[1])
        seen = Path(f"/proc/{pid}/cmdline").read_bytes(), Path(f"/proc/{host.pid}/cmdline")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return host.pid, parent, seen[0], seen[1].read_bytes()

    host_pid, parent, cmdline, host_cmdline = asyncio.run(scenario())

    assert parent == host_pid
    assert cmdline == host_cmdline  # forked, not a new interpreter
    assert b"toolvault.sandbox._host" in cmdline


def test_the_same_source_is_compiled_once(host: SandboxHost) -> None:
    async def calls() -> list[int]:
        counts = []
        for source, n in [("def main(n):\n    return n\n", 1), ("def main(n):\n    return n\n", 2)]:
            assert (await host.run(job(source, {"n": n}))).result_json == str(n)
            counts.append(host.compilations)
        assert (await host.run(job("def main():\n    return 0\n"))).result_json == "0"
        return [*counts, host.compilations]

    assert asyncio.run(calls()) == [1, 1, 2]


@pytest.mark.parametrize(
    ("source", "limits", "status"),
    [
        (BUSY, {"timeout_ms": 300}, RunStatus.TIMEOUT),
        ("def main():\n    while True:\n        print('x' * 1000)\n", {}, RunStatus.OUTPUT_LIMIT),
    ],
    ids=["time", "output"],
)
def test_a_sandbox_killed_for_a_limit_leaves_no_process(
    host: SandboxHost, source: str, limits: dict[str, int], status: RunStatus
) -> None:
    async def scenario() -> RunStatus:
        return (await host.run(job(source, **limits))).status

    assert asyncio.run(scenario()) is status
    assert children(host.pid) == []


def test_a_cancelled_call_leaves_no_process(host: SandboxHost) -> None:
    async def scenario() -> int:
        task = asyncio.create_task(host.run(job(BUSY)))
        pid = await running_sandbox(lambda: host.pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    pid = asyncio.run(scenario())

    assert not Path(f"/proc/{pid}").exists()
    assert children(host.pid) == []


def test_a_host_killed_mid_call_ends_the_call_as_crashed_and_the_next_call_starts_a_new_one() -> (
    None
):
    found = in_a_pid_namespace(
        """\
        import asyncio, json, os, signal, time
        from pathlib import Path
        from toolvault.sandbox import Job, Limits, SandboxHost

        def job(source):
            limits = Limits(timeout_ms=20_000, memory_mb=256, max_output_bytes=1024)
            return Job(source, "main", "{}", ("json",), limits)

        def descendants(pid):
            found, stack = [], [pid]
            while stack:
                p = stack.pop()
                kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
                found += map(int, kids)
                stack += map(int, kids)
            return found

        async def scenario():
            host = SandboxHost()
            await host.start()
            first = host.pid
            busy = "def main():\\n    while True:\\n        pass\\n"
            task = asyncio.create_task(host.run(job(busy)))
            while not Path(f"/proc/{first}/task/{first}/children").read_text().split():
                await asyncio.sleep(0.01)
            killed = time.monotonic()
            os.kill(first, signal.SIGKILL)
            crashed = await task
            ended_after = time.monotonic() - killed
            following = await host.run(job("def main():\\n    return 42\\n"))
            second = host.pid
            left = descendants(os.getpid())
            await host.close()
            return {
                "crashed": [crashed.status.name, crashed.error_type, crashed.error_message],
                "ended_after": ended_after,
                "following": [following.status.name, following.result_json],
                "hosts": [first, second],
                "left_while_open": len(left),
                "left": descendants(os.getpid()),
            }

        print(json.dumps(asyncio.run(scenario())))
        """
    )

    assert found["crashed"] == [
        "CRASHED",
        "Crashed",
        "the sandbox host died while the function ran",
    ]
    assert found["ended_after"] < 2
    assert found["following"] == ["OK", "42"]
    first, second = found["hosts"]
    assert second not in (None, first)
    assert found["left"] == []


def test_concurrent_sandboxes_run_as_distinct_uids_and_cant_see_or_signal_each_other(
    tmp_path: Path,
) -> None:
    plan = detect().plan
    workdir = tmp_path / "work"
    workdir.mkdir()
    if not plan.namespaces:
        pytest.skip("this host does not allow the layer (toolvault doctor says why)")
    found = in_a_pid_namespace(
        """\
        import json, os, signal, sys
        from toolvault.sandbox._isolation import Plan, confine, enter_host, fork_sandbox, set_limits
        from toolvault.sandbox._models import Limits

        plan, workdir = Plan.from_json(sys.argv[1]), sys.argv[2]
        workdir = enter_host(plan, workdir)
        limits = Limits(timeout_ms=5000, memory_mb=256, max_output_bytes=1024)
        ready_r, ready_w = os.pipe()
        report_r, report_w = os.pipe()
        hold_r, hold_w = os.pipe()  # never written: the first sandbox waits on it

        def sandbox(slot, body):
            pid = fork_sandbox(plan)
            if pid == 0:
                try:
                    confine(plan, workdir, slot)
                    body()
                finally:
                    os._exit(1)
            return pid

        def sleeper():
            os.dup2(ready_w, 3)
            os.dup2(hold_r, 0)
            set_limits(limits)
            os.write(3, str(os.getuid()).encode())
            os.read(0, 1)  # until killed

        first = sandbox(0, sleeper)
        first_uid = int(os.read(ready_r, 64))

        def attempt(action):
            try:
                return ["ok", action()]
            except OSError as exc:
                return [type(exc).__name__, exc.errno]

        def prober():
            os.dup2(report_w, 3)
            set_limits(limits)
            result = {
                "uid": os.getuid(),
                "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                "kill_sibling": attempt(lambda: os.kill(first, signal.SIGKILL)),
                "kill_all": attempt(lambda: os.kill(-1, signal.SIGKILL)),
                "sibling_group": attempt(lambda: os.killpg(first, signal.SIGKILL)),
            }
            os.write(3, json.dumps(result).encode())
            os._exit(0)

        second = sandbox(1, prober)
        os.close(report_w)
        seen = json.loads(os.read(report_r, 65536))
        os.waitpid(second, 0)
        alive = os.waitpid(first, os.WNOHANG) == (0, 0)
        os.kill(first, signal.SIGKILL)
        os.waitpid(first, 0)
        print(json.dumps({"first_uid": first_uid, "first_alive": alive, **seen}), flush=True)
        os._exit(0)
        """,
        plan.to_json(),
        str(workdir),
    )

    if plan.uid is not None:
        assert (found["first_uid"], found["uid"]) == (plan.uid, plan.uid + 1)
    assert found["pids"] == [1]
    assert found["kill_sibling"] == ["ProcessLookupError", 3]
    assert found["kill_all"] == ["ProcessLookupError", 3]
    assert found["sibling_group"] == ["ProcessLookupError", 3]
    assert found["first_alive"]


def test_the_probe_runs_in_a_sandbox_of_the_host(host: SandboxHost) -> None:
    isolation = asyncio.run(host.start())

    assert isinstance(isolation.plan, Plan)
    assert [layer.name for layer in isolation.layers][:3] == [
        "process",
        "rlimits",
        "unprivileged-user",
    ]
    assert outcome(asyncio.run(host.run(job("def main():\n    return 1\n"))))[:2] == (
        RunStatus.OK,
        "1",
    )


def test_each_sandbox_draws_its_own_random_numbers(host: SandboxHost) -> None:
    source = "import random\n\ndef main():\n    return [random.random(), random.getrandbits(64)]\n"

    async def calls() -> list[str]:
        drawing = dataclasses.replace(job(source), allowed_imports=("random",))
        return [(await host.run(drawing)).result_json for _ in range(3)]

    draws = asyncio.run(calls())

    assert len(set(draws)) == 3, draws


def test_the_hosts_objects_stay_out_of_the_sandboxs_collector(host: SandboxHost) -> None:
    # Frozen before the fork, so that a collection in the sandbox does not touch (and so
    # copy) the pages it shares with the host: with namespaces, the host and the sandbox
    # are both PID 1 of their namespaces, which once made the sandbox unfreeze them.
    source = "import gc\n\ndef main():\n    return gc.get_freeze_count()\n"
    counting = dataclasses.replace(job(source), allowed_imports=("gc",))

    result = asyncio.run(host.run(counting))

    assert result.status is RunStatus.OK, result
    assert int(result.result_json) > 10_000
