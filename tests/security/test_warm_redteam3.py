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
import contextlib
import errno
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
from tests.security.conftest import UNSHARE, calling_the_probe, children_by_parent, descendants
from tests.server import ACTOR
from toolvault.client import Client, ExecutionStatus
from toolvault.sandbox import RunResult, RunStatus, SandboxHost
from toolvault.sandbox._isolation import PRIVATE_WORKDIR
from toolvault.sandbox._runner import _status_field
from toolvault.server.config import Settings
from toolvault.server.db.engine import Database
from toolvault.server.domain.executions import CallContext
from toolvault.server.services.functions import FunctionStore, PublishRequest
from toolvault.server.services.invocations import Invocations

# An OK report of ``value``, as code that escaped writes it in place of the runtime's.
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


async def cpu_while_idle(pid: int, seconds: float) -> float:
    """The CPU time ``pid`` uses over ``seconds``, or until it is killed and reaped."""
    before = last = cpu_seconds(pid)
    assert before is not None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (now := cpu_seconds(pid)) is not None:
        last = now
        await asyncio.sleep(0.05)
    return last - before


async def reaped(host: SandboxHost, seconds: float = 5.0) -> None:
    """Wait until the host has no worker process left, and the runner has heard so."""
    deadline = time.monotonic() + seconds
    while worker_pids(host) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # the exited frames


def fd_links(pid: int | str = "self") -> list[str]:
    """What the fds of ``pid`` point to."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return links


def fd_count(pid: int | str = "self") -> int:
    """How many fds ``pid`` holds."""
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
    spec = Itimerspec(Timespec(0, 50_000_000), Timespec(0, 200_000_000))  # every 50 ms from 200
    if libc.timer_settime(timer, 0, ctypes.byref(spec), None):
        return ["timer_settime", ctypes.get_errno()]
    return "armed"
"""


def test_a_worker_cannot_wake_itself_between_calls_with_a_timer(open_host: SandboxHost) -> None:
    async def steps() -> tuple[RunResult, float, RunResult]:
        armed = await open_host.run(
            plain(TIMER_WAKES_THE_WORKER, timeout_ms=500), worker_key="timer"
        )
        (worker,) = worker_pids(open_host)
        idle_cpu_s = await cpu_while_idle(worker, 2)
        following = await open_host.run(plain(WHO, timeout_ms=500), worker_key="timer")
        return armed, idle_cpu_s, following

    armed, idle_cpu_s, following = scenario(open_host, steps)
    assert armed.status is RunStatus.OK, armed.error_message
    assert json.loads(armed.result_json) == ["timer_create", errno.EPERM]  # the filter
    # Held idle for 2 s after a call of 0.5 s of wall clock: it must not have run.
    assert idle_cpu_s < 0.2, f"the idle worker used {idle_cpu_s:.2f} s of CPU"
    # Nor may the next call of the key be billed past its own CPU budget (2 s) and pass.
    assert following.status is not RunStatus.OK or following.cpu_time_ms < 2000, following


# The one-shot variant, with no timer: the call keeps its stdout's write end with O_ASYNC
# and F_SETSIG SIGCONT, so the kernel sends it SIGCONT when the runner closes the read end
# after the call, right after the stop. Its handler computes: the worker runs again, so it
# is never idle; its stop does not land within the grace, so it is killed.
PIPE_WAKES_THE_WORKER = """\
import fcntl, os, signal, time
def main(seconds=3.0):
    end = time.monotonic() + seconds
    def compute(*_):
        while time.monotonic() < end:
            pass
    signal.signal(signal.SIGCONT, compute)
    kept = os.dup(1)
    fcntl.fcntl(kept, fcntl.F_SETOWN, os.getpid())
    try:
        fcntl.fcntl(kept, 10, signal.SIGCONT)  # F_SETSIG
    except OSError as exc:
        return ["F_SETSIG", exc.errno]
    fcntl.fcntl(kept, fcntl.F_SETFL, fcntl.fcntl(kept, fcntl.F_GETFL) | os.O_ASYNC)
    return "armed"
"""


def test_a_worker_woken_by_its_own_pipe_after_its_call_gets_no_cpu_while_idle(
    open_host: SandboxHost,
) -> None:
    async def steps() -> tuple[RunResult, float, RunResult]:
        armed = await open_host.run(plain(PIPE_WAKES_THE_WORKER, timeout_ms=500), worker_key="pipe")
        (worker,) = worker_pids(open_host)
        idle_cpu_s = await cpu_while_idle(worker, 2)
        following = await open_host.run(plain(WHO, timeout_ms=500), worker_key="pipe")
        return armed, idle_cpu_s, following

    armed, idle_cpu_s, following = scenario(open_host, steps)
    assert armed.status is RunStatus.OK, armed.error_message
    assert json.loads(armed.result_json) == ["F_SETSIG", errno.EPERM]  # the filter
    assert idle_cpu_s < 0.2, f"the idle worker used {idle_cpu_s:.2f} s of CPU"
    # Its handler runs on the SIGCONT that starts the key's next call: a harm to its own
    # key's calls (which SECURITY.md grants escaped code), within that call's budget.
    assert following.cpu_time_ms < 2000, following


# Computes on SIGCONT, whoever sends it: here the test, standing for any way the filter
# missed of having the kernel resume the worker between calls.
COMPUTES_ON_SIGCONT = """import resource, signal, time
def main(seconds=3.0):
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    end = time.monotonic() + seconds
    def compute(*_):
        while time.monotonic() < end:
            pass
    signal.signal(signal.SIGCONT, compute)
    return "armed"
"""


def test_an_idle_worker_resumed_by_anything_is_killed_not_trusted(open_host: SandboxHost) -> None:
    async def steps() -> tuple[RunResult, float, bool, RunResult]:
        armed = await open_host.run(plain(COMPUTES_ON_SIGCONT, timeout_ms=500), worker_key="k")
        (worker,) = worker_pids(open_host)
        os.kill(worker, signal.SIGCONT)
        idle_cpu_s = await cpu_while_idle(worker, 2)
        following = await open_host.run(plain(WHO, {"key": "k"}, timeout_ms=500), worker_key="k")
        return armed, idle_cpu_s, cpu_seconds(worker) is None, following

    armed, idle_cpu_s, gone, following = scenario(open_host, steps)
    assert armed.status is RunStatus.OK and armed.result_json == '"armed"', armed
    # Found running within the idle check's period, and killed.
    assert gone, "the resumed worker was kept"
    assert idle_cpu_s < 0.6, f"the resumed worker used {idle_cpu_s:.2f} s of CPU"
    assert following.status is RunStatus.OK, following
    assert json.loads(following.result_json)[1] == 1  # a new worker, billed for its own call
    assert following.cpu_time_ms < 500, following


def test_a_worker_cannot_forge_the_state_the_runner_reads_from_its_status(
    open_host: SandboxHost,
) -> None:
    # The runner takes a worker for stopped when its /proc status says State: T. The
    # first line of that file is the process's name, which the process sets itself.
    forges = """\
import ctypes, time
def main():
    ctypes.CDLL(None).prctl(15, b"\\nState:\\tT", 0, 0, 0)  # PR_SET_NAME
    time.sleep(3)
    return 1
"""

    async def steps() -> tuple[list[bytes], bytes, RunResult]:
        # The same limits for both calls: the same worker.
        await open_host.run(plain("def main():\n    return 0\n", timeout_ms=10_000), worker_key="k")
        (worker,) = worker_pids(open_host)
        call = asyncio.create_task(open_host.run(plain(forges, timeout_ms=10_000), worker_key="k"))
        status = b""
        deadline = time.monotonic() + 5
        # Once it has renamed itself and sleeps.
        while b"Name:\t\\nState" not in status and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            status = Path(f"/proc/{worker}/status").read_bytes()
        await asyncio.sleep(0.2)
        status = Path(f"/proc/{worker}/status").read_bytes()
        stat = Path(f"/proc/{worker}/stat").read_bytes()
        return _status_field(status, b"State:"), stat.rpartition(b")")[2].split()[0], await call

    state, kernels, result = scenario(open_host, steps)
    assert result.status is RunStatus.OK
    assert state[:1] == [kernels] and kernels != b"T", (state, kernels)


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
    async def steps() -> tuple[list[RunResult], list[int], list[int], list[str]]:
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
        results += beside
        # Until one succeeds: a call that a stale done byte ended early retires the worker.
        for _ in range(3):
            results.append(await open_host.run(plain(WHO, {"key": "k"}), worker_key="k"))
            if results[-1].status is RunStatus.OK:
                break
        for key in ("k", "other"):
            open_host.retire(key)
        await reaped(open_host)
        pids = ("self", open_host.pid)
        baits = [link for pid in pids for link in fd_links(pid) if "bait" in link]
        return results, fds, [fd_count(), fd_count(open_host.pid)], baits

    (first, second, other, *later), before, after, baits = scenario(open_host, steps)
    assert first.status is RunStatus.OK and first.result_json == "1"
    # A stale done byte may end a later call of the key early, never with another's result.
    assert second.status is not RunStatus.OK or second.result_json == "2", second
    assert [r.status for r in later[:-1]] == [RunStatus.CRASHED] * (len(later) - 1), later
    assert later[-1].status is RunStatus.OK, later
    assert json.loads(later[-1].result_json)[2] == ["k"] * json.loads(later[-1].result_json)[1]
    assert other.status is RunStatus.OK and json.loads(other.result_json)[1:] == [1, ["other"]]
    # Each of its 51 messages carried the same 4 bait fds: none reached the server or the
    # host (one fd more or less is the runner's own, at work when it was counted).
    assert baits == []
    assert all(a - b < 4 for a, b in zip(after, before, strict=True)), (before, after)


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


# Calls of three keys at once: one computes 0.25 s, the others print and return what
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
        for n in range(4):
            for key, burn in (("burner", 0.25), ("a", 0.0), ("b", 0.0)):
                # A wall clock that a loaded machine's two cores meet.
                job = plain(NAMED, {"key": key, "n": n, "burn": burn}, timeout_ms=10_000)
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
            assert result.cpu_time_ms >= 200, result.cpu_time_ms
        else:
            # The burner's CPU is never billed to a call of another key.
            assert result.cpu_time_ms < 100, (key, n, result.cpu_time_ms)
    # Workers of different keys never run as one uid at the same time.
    assert not (uids["a"] & uids["b"]) and not (uids["burner"] & (uids["a"] | uids["b"]))


# Faults in ``mb`` MiB in one system call, then computes until the clock kills it: the
# host must reap a worker that large well within the grace it gets before the runner
# kills the host itself (with every other call in flight).
HEAVY_TO_REAP = """\
import ctypes
def main(mb):
    libc = ctypes.CDLL(None)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    addr = libc.mmap(None, mb << 20, 3, 0x22, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    libc.madvise(addr, mb << 20, 23)  # MADV_POPULATE_WRITE
    while True:
        pass
"""


def test_a_worker_too_heavy_to_reap_quickly_harms_no_call_of_another_key(
    open_host: SandboxHost,
) -> None:
    async def steps() -> tuple[RunResult, float, RunResult, int | None, int | None]:
        await open_host.start()
        host_pid = open_host.pid
        heavy = plain(HEAVY_TO_REAP, {"mb": 1024}, timeout_ms=1500, memory_mb=1200)
        started = time.monotonic()

        async def timed() -> RunResult:
            result = await open_host.run(heavy, worker_key="heavy")
            ended.append(time.monotonic())
            return result

        ended: list[float] = []
        killed, beside = await asyncio.gather(
            timed(),
            open_host.run(
                plain(NAMED, {"key": "b", "n": 0, "burn": 0.3}, timeout_ms=5000), worker_key="b"
            ),
        )
        return killed, ended[0] - started, beside, host_pid, open_host.pid

    killed, took, beside, host_before, host_after = scenario(open_host, steps)
    assert killed.status is RunStatus.TIMEOUT, killed.error_message
    # Well within the host's grace of 5 s, on a loaded machine too.
    assert took < 1.5 + 2.5, f"the heavy worker took {took - 1.5:.2f} s past its clock to go"
    assert beside.status is RunStatus.OK and json.loads(beside.result_json)[:2] == ["b", 0]
    assert host_after == host_before, "the host was killed"


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
    # Only its working directory, and the out/ in it.
    assert wrote == [PRIVATE_WORKDIR, f"{PRIVATE_WORKDIR}/out"], wrote
    assert own_seen, "the search cannot see its own marker"
    assert found == []


# --- Host death ------------------------------------------------------------------------

# The host dies right after it said it is ready (as it would if the kernel's OOM killer
# picked it then): the call that started it resumes after the process object saw the
# death. The call must end (on a new host, or CRASHED), and the pool must count no worker
# that no process backs.
HOST_DIES_AS_IT_STARTS = """\
    import asyncio, json, os, signal, sys, time
    from pathlib import Path
    from toolvault.sandbox import Job, Limits, SandboxHost, _runner

    real = _runner._Process._dispatch

    def dispatch(self, message):
        real(self, message)
        if message["op"] == "ready":
            os.kill(self.pid, signal.SIGKILL)
            # Until it is a zombie: its pidfd is readable at the event loop's next select.
            while Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
                time.sleep(0.001)
            _runner._Process._dispatch = real

    _runner._Process._dispatch = dispatch

    def children(pid):
        if pid is None:
            return []
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    async def scenario(key):
        host = SandboxHost(preload=(), language_layer=False)
        limits = Limits(timeout_ms=1000, memory_mb=256, max_output_bytes=1024)
        job = Job("def main():\\n    return 1\\n", "main", "{}", (), limits)
        task = asyncio.create_task(host.run(job, worker_key=key or None))
        done, _ = await asyncio.wait([task], timeout=3)  # three times the call's clock
        found = {"ended": bool(done), "pool": sum(host.workers.values())}
        if done:
            found["status"] = task.result().status.name
        found["processes"] = len(children(host.pid))
        print(json.dumps(found), flush=True)
        os._exit(0)  # close() would wait for the call too

    asyncio.run(scenario(sys.argv[1]))
"""


@pytest.mark.parametrize("key", ["", "k"], ids=["fresh", "warm"])
def test_a_call_ends_when_its_host_dies_as_it_starts(key: str) -> None:
    found = in_a_pid_namespace(HOST_DIES_AS_IT_STARTS, key)
    assert found["ended"], f"the call hung: {found}"
    assert found["status"] in ("OK", "CRASHED"), found
    assert found["pool"] == found["processes"], found


# --- Outliving deletion -------------------------------------------------------------------

# About a second of CPU for the default ``n``, and code the server's validation accepts.
SPINS = """\
def main(n=10_000_000):
    total = 0
    for i in range(n):
        total += i
    return 7
"""


@pytest.fixture
def warm_invocations(tmp_path: Path) -> Iterator[tuple[Invocations, FunctionStore, SandboxHost]]:
    """The server's invocation service in warm mode, one sandbox at a time, full Python."""
    database = Database(f"sqlite:///{tmp_path / 'toolvault.db'}")
    database.upgrade()
    settings = Settings(data_dir=tmp_path, sandbox_mode="warm", max_concurrent_runs=1)
    functions = FunctionStore(database, settings)
    host = SandboxHost(preload=(), hidden_paths=(str(tmp_path),), language_layer=False)
    invocations = Invocations(database, functions, settings, sandbox_host=host)
    yield invocations, functions, host
    asyncio.run(invocations.close())
    database.dispose()


def test_a_function_deleted_while_its_call_waits_leaves_no_worker(
    warm_invocations: tuple[Invocations, FunctionStore, SandboxHost],
) -> None:
    invocations, functions, host = warm_invocations
    for name, source in (("busy", SPINS), ("doomed", "def main():\n    return 1\n")):
        request = PublishRequest(name=name, source=source, timeout_ms=30_000)
        functions.publish(request, actor=ACTOR)
    caller = CallContext(caller="test")

    async def steps() -> tuple[bool, list[str], dict[str, int]]:
        await invocations.start_sandbox()
        busy = asyncio.create_task(invocations.invoke("busy", '{"n": 20000000}', caller))
        await asyncio.sleep(0.2)
        # Queued behind the busy call (one sandbox at a time), resolved already.
        doomed = asyncio.create_task(invocations.invoke("doomed", "{}", caller))
        await asyncio.sleep(0.1)
        queued = not busy.done()
        invocations.retire(functions.delete("doomed", actor=ACTOR))  # as DeleteFunction does
        executions = await asyncio.gather(busy, doomed)
        await asyncio.sleep(0.2)
        return queued, [e.status.name for e in executions], dict(host.workers)

    queued, statuses, workers = asyncio.run(steps())
    if not queued:
        pytest.skip("the busy call ended before the deletion: the doomed call was not queued")
    assert statuses == ["OK", "OK"]  # it was resolved before the deletion: it runs
    assert not [key for key in workers if key.startswith("doomed@")], workers


# --- End to end: a real server in warm mode -------------------------------------------------


class WarmServer:
    """A server in warm mode in a throw-away PID namespace, and what its sandboxes are."""

    def __init__(self, server: ServerProcess, client: Client, data_dir: Path) -> None:
        self.server = server
        self.client = client
        self.data_dir = data_dir

    @property
    def pid(self) -> int:
        """The server process: the only child of the ``unshare`` that started it."""
        assert self.server.process is not None
        (pid,) = children_by_parent()[self.server.process.pid]
        return pid

    def host_pids(self) -> tuple[int, int]:
        """The process the server spawned (the relay) and the host it relays for."""
        for spawned in children_by_parent().get(self.pid, []):
            if b"toolvault.sandbox._host" in Path(f"/proc/{spawned}/cmdline").read_bytes():
                (host,) = children_by_parent()[spawned]
                return spawned, host
        raise AssertionError("the server has no sandbox host")

    def sandboxes(self) -> set[int]:
        """The live processes below the host: its warm workers and fresh calls."""
        return set(descendants(self.host_pids()[1]))

    def rows(self, execution_id: str) -> list[tuple[str, str]]:
        """The history rows of one execution: (status, error message)."""
        with sqlite3.connect(self.data_dir / "toolvault.db") as db:
            query = "SELECT status, error_message FROM executions WHERE id = ?"
            rows = db.execute(query, (execution_id.replace("-", ""),)).fetchall()
            if not rows:
                rows = db.execute(query, (execution_id,)).fetchall()
        return [(str(status), str(message)) for status, message in rows]


@pytest.fixture(scope="module")
def warm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmServer]:
    if UNSHARE is None:
        pytest.skip("util-linux unshare is needed to contain signalling attacks")
    data_dir = tmp_path_factory.mktemp("warm") / "data"
    data_dir.mkdir(mode=0o700)
    server = ServerProcess(
        db=f"sqlite:///{data_dir / 'toolvault.db'}",
        data_dir=data_dir,
        env={"TOOLVAULT_SANDBOX_MODE": "warm"},
    )
    command = [UNSHARE, "--pid", "--fork", "--mount-proc", "--kill-child", TOOLVAULT, "serve"]
    command += ["--listen", "127.0.0.1:0", "--db", server.db, "--data-dir", str(data_dir)]
    server.start(command=command)
    client = Client(server.address, timeout=60)
    client.publish("probe", "def main(n):\n    return n + 1\n")
    warm = WarmServer(server, client, data_dir)
    try:
        yield warm
        assert server.process is not None
        if server.process.poll() is None:  # the last test stops it itself
            os.kill(warm.pid, signal.SIGTERM)  # unshare ignores SIGTERM
    finally:
        client.close()
        server.stop(signal.SIGKILL)


def answers(warm: WarmServer, n: int = 41) -> None:
    """The server still answers a call correctly."""
    assert warm.client.invoke("probe", {"n": n}).result == n + 1


# Under the language layer: the state of ``random`` is what a call leaves in its worker.
SEEDS = """\
import random
def main(seed=0):
    if seed:
        random.seed(seed)
    return random.random()
"""


def test_state_a_function_leaves_in_its_worker_shows_in_no_other_version_or_namespace(
    warm_server: WarmServer,
) -> None:
    import random

    client = warm_server.client
    client.publish("seeds", SEEDS)
    client.publish("seeds", SEEDS + "# version 2\n")
    client.publish("other-team/seeds", SEEDS)
    client.publish("seeds_copy", SEEDS)
    seed = secrets.randbelow(2**32) + 1
    drawn = random.Random(seed)
    first, second = drawn.random(), drawn.random()

    assert client.invoke("seeds@1", {"seed": seed}).result == first
    others = [client.invoke(ref).result for ref in ("seeds@2", "other-team/seeds", "seeds_copy")]
    # The seeded worker still holds its state (so a crossing would show) ...
    assert client.invoke("seeds@1").result == second
    # ... and no other version, namespace or function drew from it.
    assert not {first, second} & set(others), others
    answers(warm_server)


def test_two_hundred_functions_called_at_once_each_get_their_own_answers(
    warm_server: WarmServer,
) -> None:
    client = warm_server.client
    names = [f"many_{n}" for n in range(200)]
    for name in names:
        client.publish(name, f"def main(n):\n    return [{name!r}, n]\n")
    wrong: list[Any] = []

    def calls(share: list[str]) -> None:
        with Client(warm_server.server.address, timeout=60) as own:
            for n, name in enumerate(share * 2):
                execution = own.invoke(name, {"n": n})
                if execution.status is not ExecutionStatus.OK or execution.result != [name, n]:
                    wrong.append((name, n, execution.status, execution.result))

    threads = [threading.Thread(target=calls, args=(names[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    # The pool's bound (16 workers) held through the churn, fresh calls included.
    assert len(warm_server.sandboxes()) <= 16
    history = client.history(limit=None)
    assert sum(1 for e in history if e.function_name.startswith("many_")) == 400
    answers(warm_server)


def test_deleting_functions_while_they_are_called_leaves_none_of_their_workers(
    warm_server: WarmServer,
) -> None:
    client = warm_server.client
    names = [f"storm_{n}" for n in range(8)]
    for name in names:
        client.publish(name, SEEDS)
    before = warm_server.sandboxes()
    seed = secrets.randbelow(2**32) + 1
    for name in names:
        assert client.invoke(name, {"seed": seed}).status is ExecutionStatus.OK
    client.publish("storm_spin", SPINS, timeout_ms=30_000)
    theirs = warm_server.sandboxes() - before
    assert theirs, "the calls left no warm worker to attack"
    spun: list[Any] = []
    spinning = threading.Thread(target=lambda: spun.append(client.invoke("storm_spin")))
    spinning.start()
    time.sleep(0.3)
    theirs |= warm_server.sandboxes() - before
    with calling_the_probe(warm_server.server.address):
        deleters = [
            threading.Thread(target=client.delete, args=(name,)) for name in [*names, "storm_spin"]
        ]
        for thread in deleters:
            thread.start()
        for thread in deleters:
            thread.join()
        spinning.join()
    assert spun[0].status is ExecutionStatus.OK and spun[0].result == 7  # resolved before
    deadline = time.monotonic() + 5
    while (left := theirs & warm_server.sandboxes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == set(), "workers of deleted functions survived"
    # Published again with the same content: a new worker, none of the old one's state.
    client.publish(names[0], SEEDS)
    drawn = random_after(seed)
    assert client.invoke(names[0]).result != drawn
    answers(warm_server)


def random_after(seed: int) -> float:
    """What ``random.random()`` gives after ``random.seed(seed)`` and one draw."""
    import random

    drawn = random.Random(seed)
    drawn.random()
    return drawn.random()


def test_a_host_killed_while_its_workers_are_idle_leaves_their_functions_answering(
    warm_server: WarmServer,
) -> None:
    client = warm_server.client
    client.publish("after_host", SEEDS)
    seed = secrets.randbelow(2**32) + 1
    assert client.invoke("after_host", {"seed": seed}).status is ExecutionStatus.OK
    relay, host = warm_server.host_pids()
    os.kill(host, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while relay in children_by_parent().get(warm_server.pid, []) and time.monotonic() < deadline:
        time.sleep(0.02)
    # A new host and a new worker: an answer, with none of the old worker's state.
    execution = client.invoke("after_host")
    assert execution.status is ExecutionStatus.OK, execution.error
    assert execution.result != random_after(seed)
    answers(warm_server)


@pytest.mark.parametrize(
    ("victim", "message"),
    [
        ("host", "the sandbox host died while the function ran"),
        ("worker", "the sandbox process was killed by SIGKILL without reporting a result"),
    ],
)
def test_a_call_whose_host_or_worker_is_killed_ends_crashed_with_its_history_row(
    warm_server: WarmServer, victim: str, message: str
) -> None:
    client = warm_server.client
    name = f"killed_{victim}"
    client.publish(name, "def main():\n    while True:\n        pass\n", timeout_ms=20_000)
    assert client.invoke("probe", {"n": 1}).result == 2  # a host to kill
    before = warm_server.sandboxes()
    executions: list[Any] = []
    started = time.monotonic()
    call = threading.Thread(target=lambda: executions.append(client.invoke(name)))
    call.start()
    deadline = time.monotonic() + 10
    while not (new := warm_server.sandboxes() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert new, "the call never started"
    time.sleep(0.2)
    if victim == "host":
        os.kill(warm_server.host_pids()[1], signal.SIGKILL)
    else:
        for pid in new:
            os.kill(pid, signal.SIGKILL)
    call.join(timeout=15)
    assert not call.is_alive(), "the call hung"
    (execution,) = executions
    assert time.monotonic() - started < 10
    assert execution.status is ExecutionStatus.CRASHED
    assert execution.error is not None and execution.error.message == message
    assert warm_server.rows(execution.execution_id) == [("CRASHED", message)]
    answers(warm_server)


# Keeps memory in its idle worker under the language layer: typing's cache of Literal
# types (128 entries) holds their arguments, here a string of ``mb`` MiB per call.
HOARDS = """\
import typing
def main(n, mb=100):
    typing.Literal["x" * (mb << 20) + str(n)]
    return n
"""


def anonymous_rss_mib(pid: int) -> float:
    """What ``pid`` holds resident that is its own (RssAnon), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.partition("RssAnon:")[2].split()[0]) / 1024


def test_idle_workers_hold_no_more_memory_than_one_call_may(warm_server: WarmServer) -> None:
    client = warm_server.client
    names = [f"hoards_{n}" for n in range(4)]
    before = warm_server.sandboxes()
    for name in names:
        client.publish(name, HOARDS, memory_mb=512)
        for n in range(2):
            client.invoke(name, {"n": n})  # OK, or refused by a fix: either way no hoard
    workers = warm_server.sandboxes() - before
    held = sum(anonymous_rss_mib(pid) for pid in workers)
    for name in names:
        client.delete(name)
    deadline = time.monotonic() + 5
    while (left := workers & warm_server.sandboxes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == set(), "the workers of deleted functions survived"
    answers(warm_server)
    # No call runs: together the idle workers hold less than one call's limit (512 MiB).
    assert held < 512, f"idle workers hold {held:.0f} MiB"


def test_the_server_stops_promptly_with_its_idle_workers_held_stopped(
    warm_server: WarmServer,
) -> None:
    # Last in this module: it stops the module's server.
    client = warm_server.client
    client.publish("before_stop", SEEDS)
    assert client.invoke("before_stop").status is ExecutionStatus.OK
    idle = warm_server.sandboxes()
    assert idle, "no idle worker to stop with"
    assert warm_server.server.process is not None
    started = time.monotonic()
    os.kill(warm_server.pid, signal.SIGTERM)
    assert warm_server.server.process.wait(timeout=20) == 0
    assert time.monotonic() - started < 15  # the drain's grace (10 s) and a margin
