"""Third red-team pass on warm workers: the stop, the channel, keys, the pool, deletion.

Most attacks run as full Python (``SandboxHost(language_layer=False)``) in warm workers
confined exactly as the server's, as in test_warm_redteam and test_warm_redteam2: the
language layer is assumed fallen. The rest run end to end through a real server in warm
mode (``TOOLVAULT_SANDBOX_MODE=warm``) in a throw-away PID namespace, under the language
layer. Each test asserts that the attack had no effect: no data crossed keys, no CPU
beyond bounds, nothing survived, the server still answers correctly. An attack that
succeeds is kept as a strict xfail whose reason says what it gets.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOOLVAULT, ServerProcess
from tests.sandbox.test_host import in_a_pid_namespace
from tests.sandbox.test_warm import WHO, plain, scenario, worker_pids
from tests.security.conftest import UNSHARE, children_by_parent, descendants
from tests.server import ACTOR
from toolvault.client import Client, ExecutionStatus
from toolvault.sandbox import RunResult, RunStatus, SandboxHost
from toolvault.sandbox._isolation import PRIVATE_WORKDIR
from toolvault.server.config import Settings
from toolvault.server.db.engine import Database
from toolvault.server.domain.executions import CallContext
from toolvault.server.services.functions import FunctionStore, PublishRequest
from toolvault.server.services.invocations import Invocations

# What every attack that writes its own report sends: an OK report of ``value``.
OWN_REPORT = """\
def own_report(value):
    return json.dumps({"status": "ok", "result_json": json.dumps(value), "error_type": "",
                       "error_message": "", "traceback": "", "peak_memory_bytes": 0}).encode()
"""


@pytest.fixture
def open_host() -> Iterator[SandboxHost]:
    sandbox_host = SandboxHost(preload=(), language_layer=False)
    yield sandbox_host
    asyncio.run(sandbox_host.close())


def cpu_seconds(pid: int) -> float | None:
    """The kernel's CPU time of ``pid`` so far (its schedstat); None once it is reaped."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except OSError:
        return None


async def reaped(host: SandboxHost, seconds: float = 5.0) -> None:
    """Wait until the host has no worker process left, and the runner has heard so."""
    deadline = time.monotonic() + seconds
    while worker_pids(host) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # the exited frames


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- Escaping the stop ------------------------------------------------------------------

# A normal call, OK in every respect, that arms a POSIX timer whose signal is SIGCONT
# (timer_create is not in the filter) and installs a SIGCONT handler that computes. The
# stop lands at once (the worker waits for its next call in user space); a SIGCONT the
# kernel generates resumes a stopped process whoever sent it, so the worker runs while
# the runner holds it idle. It first raises its soft CPU limit to the hard one (which
# code that escaped may), so that SIGXCPU does not end it at its call's budget.
TIMER_WAKES_THE_WORKER = """\
import ctypes, resource, signal, time
class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
class Itimerspec(ctypes.Structure):
    _fields_ = [("interval", Timespec), ("value", Timespec)]
class Sigevent(ctypes.Structure):
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int),
                ("notify", ctypes.c_int), ("pad", ctypes.c_byte * 48)]
def main(seconds=3.0):
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    end = time.monotonic() + seconds
    def compute(*_):
        while time.monotonic() < end:
            pass
    signal.signal(signal.SIGCONT, compute)
    libc = ctypes.CDLL(None, use_errno=True)
    timer = ctypes.c_void_p()
    event = Sigevent(None, signal.SIGCONT, 0)  # SIGEV_SIGNAL
    if libc.timer_create(1, ctypes.byref(event), ctypes.byref(timer)):  # CLOCK_MONOTONIC
        return ["timer_create", ctypes.get_errno()]
    every = Timespec(0, 50_000_000)
    if libc.timer_settime(timer, 0, ctypes.byref(Itimerspec(every, Timespec(0, 200_000_000))), None):
        return ["timer_settime", ctypes.get_errno()]
    return "armed"
"""


@pytest.mark.xfail(
    strict=True,
    reason="finding: a POSIX timer (timer_create, allowed by the filter) with SIGEV_SIGNAL "
    "SIGCONT resumes the stopped worker between calls; it computes while idle up to its "
    "hard CPU limit (budget x max_calls_per_worker + 1 s) or worker_idle_s, and that CPU "
    "is charged to the key's next call, over that call's own budget",
)
def test_a_worker_cannot_wake_itself_between_calls_with_a_timer(open_host: SandboxHost) -> None:
    async def steps() -> tuple[RunResult, float, RunResult]:
        armed = await open_host.run(plain(TIMER_WAKES_THE_WORKER, timeout_ms=500), worker_key="k")
        assert armed.status is RunStatus.OK and armed.result_json == '"armed"', armed
        (worker,) = worker_pids(open_host)
        before = cpu_seconds(worker)
        await asyncio.sleep(2)
        after = cpu_seconds(worker)
        assert before is not None and after is not None
        following = await open_host.run(plain(WHO, timeout_ms=500), worker_key="k")
        return armed, after - before, following

    armed, idle_cpu_s, following = scenario(open_host, steps)
    # Held idle for 2 s after a call of 0.5 s of wall clock: it must not have run.
    assert idle_cpu_s < 0.2, f"the idle worker used {idle_cpu_s:.2f} s of CPU"
    # Nor may the next call of the key be billed past its own CPU budget (2 s) and pass.
    assert following.status is not RunStatus.OK or following.cpu_time_ms < 2000, following


# --- The per-call channel ----------------------------------------------------------------

# Writes its own report, sends the done byte with fds attached the runner never asked
# for, then more done bytes, garbage and fds, all before the runtime's own done byte.
# The runner reads one byte a call: the rest waits in the socket for the key's next call.
FLOODS_THE_CHANNEL = (
    "import json, os, socket\n"
    + OWN_REPORT
    + """\
def main(n):
    os.write(3, own_report(n))
    null = os.open("/dev/null", os.O_WRONLY)
    os.dup2(null, 3)  # the runtime's report goes nowhere
    os.close(null)
    channel = socket.socket(fileno=os.dup(0))
    bait = [os.open("/proc/self/status", os.O_RDONLY), os.memfd_create("bait"), *os.pipe()]
    socket.send_fds(channel, [b"d"], bait)
    for _ in range(50):
        socket.send_fds(channel, [b"dd\\x00x" * 64], bait)
    channel.close()
    for fd in bait:
        os.close(fd)
    return n
"""
)


def test_bytes_and_fds_a_worker_sends_back_reach_nothing(open_host: SandboxHost) -> None:
    async def steps() -> tuple[list[RunResult], list[int], list[int]]:
        await open_host.run(plain("def main():\n    return 0\n"), worker_key="warm-up")
        open_host.retire("warm-up")
        await reaped(open_host)
        assert open_host.pid is not None
        fds = [fd_count(), fd_count(open_host.pid)]
        results = [await open_host.run(plain(FLOODS_THE_CHANNEL, {"n": 1}), worker_key="k")]
        # The key's next call beside another key's.
        beside = await asyncio.gather(
            open_host.run(plain(FLOODS_THE_CHANNEL, {"n": 2}), worker_key="k"),
            open_host.run(plain(WHO, {"key": "other"}), worker_key="other"),
        )
        results += [*beside, await open_host.run(plain(WHO, {"key": "k"}), worker_key="k")]
        for key in ("k", "other"):
            open_host.retire(key)
        await reaped(open_host)
        return results, fds, [fd_count(), fd_count(open_host.pid)]

    (first, second, other, last), before, after = scenario(open_host, steps)
    assert first.status is RunStatus.OK and first.result_json == "1"
    # A stale done byte may end the key's next call early, never with another call's result.
    assert second.status is not RunStatus.OK or second.result_json == "2", second
    assert other.status is RunStatus.OK and json.loads(other.result_json)[1:] == [1, ["other"]]
    # A new worker: a call that broke the protocol retires its worker.
    assert last.status is RunStatus.OK and json.loads(last.result_json)[1:] == [1, ["k"]]
    assert after == before, "the server or the host holds fds the worker sent"


# Frees what it allocated, then tries every way of lowering the high-water mark that the
# runner reads as the call's peak: clear_refs of its own /proc, and prctl(PR_SET_MM).
SHRINKS_ITS_PEAK = """\
import ctypes, os
def main():
    data = bytearray(300 << 20)
    for i in range(0, len(data), 4096):
        data[i] = 1
    del data
    tried = {}
    for path in ("/proc/self/clear_refs", "/proc/thread-self/clear_refs", "/proc/1/clear_refs"):
        try:
            with open(path, "w") as file:
                file.write("5")
            tried[path] = "ok"
        except OSError as exc:
            tried[path] = exc.errno
    libc = ctypes.CDLL(None, use_errno=True)
    # PR_SET_MM (35), PR_SET_MM_START_BRK (6): needs CAP_SYS_RESOURCE.
    tried["prctl"] = libc.prctl(35, 6, 0, 0, 0) or 0
    return tried
"""


def test_a_call_cannot_shrink_the_peak_memory_the_runner_reads(open_host: SandboxHost) -> None:
    async def steps() -> RunResult:
        return await open_host.run(plain(SHRINKS_ITS_PEAK, memory_mb=512), worker_key="k")

    result = scenario(open_host, steps)
    assert result.status is RunStatus.OK, result.error_message
    assert "ok" not in json.loads(result.result_json).values(), result.result_json
    assert result.peak_memory_bytes >= 300 << 20, result.peak_memory_bytes


# Calls of three keys at once: one computes 0.4 s, the others print and return what
# names them. Each call's result, output and CPU time are its own.
NAMED = """\
import os, sys, time
def main(key, n, burn=0.0):
    end = time.process_time() + burn
    while time.process_time() < end:
        pass
    print(f"{key}:{n}")
    state = sys.__dict__.setdefault("tv_state", {"keys": set()})
    state["keys"].add(key)
    return [key, n, sorted(state["keys"]), os.getuid()]
"""


def test_calls_of_keys_running_at_once_get_only_their_own_results_output_and_figures(
    open_host: SandboxHost,
) -> None:
    async def steps() -> list[tuple[str, int, RunResult]]:
        calls = []
        for n in range(6):
            for key, burn in (("burner", 0.4), ("a", 0.0), ("b", 0.0)):
                job = plain(NAMED, {"key": key, "n": n, "burn": burn}, timeout_ms=3000)
                calls.append((key, n, open_host.run(job, worker_key=key)))
        results = await asyncio.gather(*(call for _, _, call in calls))
        return [(key, n, result) for (key, n, _), result in zip(calls, results, strict=True)]

    uids: dict[str, set[int]] = {}
    for key, n, result in scenario(open_host, steps):
        assert result.status is RunStatus.OK, result.error_message
        found = json.loads(result.result_json)
        assert found[:3] == [key, n, [key]], found
        assert result.stdout == f"{key}:{n}\n"
        uids.setdefault(key, set()).add(found[3])
        if key == "burner":
            assert result.cpu_time_ms >= 350, result.cpu_time_ms
        else:
            # The burner's CPU is never billed to a call of another key.
            assert result.cpu_time_ms < 300, (key, n, result.cpu_time_ms)
    # Workers of different keys never run as one uid at the same time.
    assert not (uids["a"] & uids["b"]) and not (uids["burner"] & (uids["a"] | uids["b"]))


# --- Crossing keys through a reused uid --------------------------------------------------

# Leaves a marker in every directory it can write to (the working directory included)
# and says which uid it runs as.
LEAVES_MARKERS = """\
import os
def main(marker):
    wrote = []
    for root, dirs, _ in os.walk("/"):
        if root == "/proc":
            dirs[:] = []
            continue
        path = os.path.join(root, "tv-" + marker)
        try:
            with open(path, "w") as file:
                file.write(marker)
            wrote.append(root)
        except OSError:
            pass
    return [os.getuid(), wrote]
"""

# Searches the whole root but /proc for a marker (reversed, so that its own memory holds
# no copy) in file names and contents, after leaving its own marker in its directory.
SEARCHES_MARKERS = """\
import os
def main(reversed_marker, own):
    marker = reversed_marker[::-1]
    with open("mine", "w") as file:
        file.write(own)
    found, own_seen = [], False
    for root, dirs, files in os.walk("/"):
        if root == "/proc":
            dirs[:] = []
            continue
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as file:
                    data = file.read(1 << 20)
            except OSError:
                continue
            own_seen = own_seen or own.encode() in data
            if marker in name or marker.encode() in data:
                found.append(path)
    return [os.getuid(), found, own_seen]
"""


def test_a_uid_a_retired_worker_ran_as_carries_nothing_to_another_key(
    open_host: SandboxHost,
) -> None:
    marker = f"tv-left-{secrets.token_hex(8)}"

    async def steps() -> tuple[list[Any], list[Any]]:
        left = await open_host.run(plain(LEAVES_MARKERS, {"marker": marker}), worker_key="a")
        assert left.status is RunStatus.OK, left.error_message
        # Any outcome but OK retires the worker; its slot, and so its uid, is free again.
        failed = await open_host.run(plain("def main():\n    raise ValueError\n"), worker_key="a")
        assert failed.status is RunStatus.ERROR
        await reaped(open_host)
        args = {"reversed_marker": marker[::-1], "own": secrets.token_hex(8)}
        search = await open_host.run(plain(SEARCHES_MARKERS, args), worker_key="b")
        assert search.status is RunStatus.OK, search.error_message
        return json.loads(left.result_json), json.loads(search.result_json)

    (uid_a, wrote), (uid_b, found, own_seen) = scenario(open_host, steps)
    assert uid_a == uid_b, "the attack needs the second worker to get the first one's uid"
    assert wrote == [PRIVATE_WORKDIR], wrote  # only its working directory
    assert own_seen, "the search cannot see its own marker"
    assert found == []
