"""toolvault benchmarks: latency, throughput, compute speed and memory, side by side.

Run ``python bench/run.py`` (add ``--quick`` for a short run) from a checkout with the
``bench`` extra installed. It starts its own server on a free loopback port with a fresh
SQLite data directory, measures, and writes ``bench/RESULTS.md``. Every comparison is
measured in the same run as its baseline, because this machine is noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
from echo import METHOD

from toolvault.client import Client

ROOT = Path(__file__).resolve().parent
TOOLVAULT = str(Path(sys.executable).parent / "toolvault")
NOOP = "def main():\n    return 1\n"
SIEVE = """def main(n):
    flags = [True] * (n + 1)
    flags[0] = flags[1] = False
    for i in range(2, int(n ** 0.5) + 1):
        if flags[i]:
            for j in range(i * i, n + 1, i):
                flags[j] = False
    return sum(flags)
"""
ECHO_PAYLOAD = b"\n\x04noop\x12\x02{}"  # about the size of an InvokeRequest for noop
POOL, FUNCTIONS = 16, 200  # the warm pool's bound (the default), distinct functions called
SPIN = "def main(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def timed(call: Callable[[], object]) -> float:
    """Milliseconds one call takes."""
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


class Server:
    """A `toolvault serve` process on a free loopback port with its own data directory."""

    def __init__(
        self, data_dir: Path, toolvault: str = TOOLVAULT, env: dict[str, str] | None = None
    ) -> None:
        with socket.socket() as probe:  # a free port; the server logs nothing below WARNING
            probe.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{probe.getsockname()[1]}"
        self.process = subprocess.Popen(
            [toolvault, "serve", "--listen", self.address, "--data-dir", str(data_dir)],
            env={
                **os.environ,
                "TOOLVAULT_LOG_LEVEL": "WARNING",
                "TOOLVAULT_MAX_QUEUED_RUNS": "10000",
                **(env or {}),
            },
        )
        health = [toolvault, "--server", self.address, "health", "--timeout", "1"]
        deadline = time.monotonic() + 60
        while subprocess.run(health, capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        # The sandbox host's processes, there before any call: what comes later are workers.
        self.hosts = set(_descendants(self.process.pid))

    def rss_bytes(self) -> int:
        """Resident memory of the server and every process below it."""
        return sum(_rss(pid) for pid in [self.process.pid, *_descendants(self.process.pid)])

    def pss_bytes(self) -> int:
        """Proportional set size of the server and every process below it: shared pages
        count once in all, where the RSS of the tree counts them once per process."""
        tree = [self.process.pid, *_descendants(self.process.pid)]
        return sum(_smaps_rollup(pid).get("Pss", 0) for pid in tree)

    def workers(self, *, dying: bool = False) -> list[int]:
        """The warm workers below the server: those not killed, or (``dying``) only those
        killed and not gone yet (the host kills a retired worker at once and reaps it a
        moment later)."""
        return [
            pid
            for pid in _descendants(self.process.pid)
            if pid not in self.hosts and _state(pid) not in ("Z", "X", "") and _killed(pid) is dying
        ]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


class EchoServer:
    """bench/echo.py in a process of its own, on a free loopback port."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "echo.py")], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.address = f"127.0.0.1:{int(self.process.stdout.readline())}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _state(pid: int) -> str:
    """The state letter of ``pid`` (proc_pid_stat(5)), "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""


def _killed(pid: int) -> bool:
    """Whether ``pid`` has a SIGKILL pending (proc_pid_status(5): SigPnd, ShdPnd)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return True
    pending = (int(line.split()[1], 16) for line in lines if line.startswith(("SigPnd", "ShdPnd")))
    return any(mask & 1 << (signal.SIGKILL - 1) for mask in pending)


def _smaps_rollup(pid: int) -> dict[str, int]:
    """The memory totals of ``pid`` in bytes: Rss, Pss, Private_Clean, ... ({} once gone)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    except OSError:
        return {}
    return {
        name: int(value.split()[0]) * 1024
        for name, _, value in (line.partition(":") for line in lines)
    }


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


Caller = Callable[[], AbstractContextManager[Callable[[], None]]]


def toolvault_caller(address: str) -> Caller:
    """Callers that each open a channel and invoke the trivial function."""

    @contextlib.contextmanager
    def open_caller() -> Iterator[Callable[[], None]]:
        with Client(address) as client:
            yield lambda: _check(client.invoke("noop").ok)

    return open_caller


def echo_caller(address: str) -> Caller:
    """Callers that each open a channel and call the bare echo server."""

    @contextlib.contextmanager
    def open_caller() -> Iterator[Callable[[], None]]:
        with grpc.insecure_channel(address) as channel:
            echo = channel.unary_unary(METHOD)
            yield lambda: _check(echo(ECHO_PAYLOAD) == ECHO_PAYLOAD)

    return open_caller


def _check(ok: bool) -> None:
    assert ok


def latency(open_caller: Caller, calls: int) -> list[float]:
    """Milliseconds each of ``calls`` sequential calls took, after 50 to warm up."""
    with open_caller() as call:
        for _ in range(50):
            call()
        return [timed(call) for _ in range(calls)]


def spawn_per_call(calls: int) -> list[float]:
    """The floor of spawning per call: a fresh interpreter that does nothing (``-I -c pass``)."""
    command = [sys.executable, "-I", "-c", "pass"]
    return [timed(lambda: subprocess.run(command, check=True)) for _ in range(calls)]


def throughput(open_caller: Caller, clients: int, seconds: float) -> tuple[float, int]:
    """Calls per second with ``clients`` concurrent callers, and how many were made."""
    deadline = time.monotonic() + seconds
    done = [0] * clients

    def caller(index: int) -> None:
        with open_caller() as call:
            while time.monotonic() < deadline:
                call()
                done[index] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(caller, range(clients)))
    return sum(done) / (time.monotonic() - started), sum(done)


def cpu_per_call(
    server: Server, open_caller: Caller, clients: int, seconds: float
) -> dict[str, float]:
    """CPU milliseconds per call of each side, under ``clients`` concurrent callers."""
    tree = [server.process.pid, *_descendants(server.process.pid)]
    before = {pid: _cpu_seconds(pid) for pid in tree}
    client_before = resource.getrusage(resource.RUSAGE_SELF)
    _, calls = throughput(open_caller, clients, seconds)
    client_after = resource.getrusage(resource.RUSAGE_SELF)
    # A process that started meanwhile (a sandbox still running) counts from zero.
    used = {
        pid: _cpu_seconds(pid) - before.get(pid, 0.0)
        for pid in [*tree, *_descendants(server.process.pid)]
    }
    client = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    return {
        "server": used.pop(server.process.pid) * 1000 / calls,
        "sandboxes": sum(used.values()) * 1000 / calls,
        "client": client * 1000 / calls,
    }


def _cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of its children it has reaped (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of proc_pid_stat(5), after pid and comm.
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def compute(client: Client, n: int, runs: int) -> dict[str, float]:
    """CPU milliseconds of a prime sieve in a warm worker, in CPython and in smolagents.

    The sandbox's figure is the execution record's ``cpu_time_ms``: the worker's CPU time
    for the call (the kernel's), per-call set-up included, after a first call that
    started the worker. The in-process runners are timed by this process's CPU time,
    alternating with the sandbox's calls so that drift hits all alike.
    """
    from smolagents.local_python_executor import LocalPythonExecutor

    namespace: dict[str, object] = {}
    exec(SIEVE, namespace)
    plain = namespace["main"]
    expected = plain(n)  # type: ignore[operator]
    client.invoke("sieve", {"n": n})  # starts the version's warm worker
    executor = LocalPythonExecutor(additional_authorized_imports=[])
    executor.send_tools({})
    sandbox, noop, cpython, smol = [], [], [], []
    for run in range(runs):
        execution = client.invoke("sieve", {"n": n})
        assert execution.result == expected, execution
        sandbox.append(execution.cpu_time_ms)
        noop.append(client.invoke("noop").cpu_time_ms)
        cpython.append(cpu_timed(lambda: plain(n)))  # type: ignore[operator]
        if run % 2 == 0:
            smol.append(cpu_timed(lambda: executor(SIEVE + f"\nmain({n})")))
    assert executor(SIEVE + f"\nmain({n})").output == expected
    return {
        "sandbox": statistics.median(sandbox),
        "noop": statistics.median(noop),
        "cpython": statistics.median(cpython),
        "smolagents": statistics.median(smol),
    }


def cpu_timed(call: Callable[[], object]) -> float:
    """CPU milliseconds this process spends on one call (all its threads)."""
    started = time.process_time()
    call()
    return (time.process_time() - started) * 1000


def memory(server: Server, address: str) -> dict[str, int]:
    """RSS and PSS of the server's process tree idle, and with 16 calls in flight."""
    time.sleep(1)
    idle = {"idle_rss": server.rss_bytes(), "idle_pss": server.pss_bytes()}
    stop = threading.Event()

    def busy() -> None:
        with Client(address) as own:
            while not stop.is_set():
                own.invoke("spin", {"n": 3_000_000})

    workers = [threading.Thread(target=busy) for _ in range(16)]
    for worker in workers:
        worker.start()
    time.sleep(3)
    samples = [(server.rss_bytes(), server.pss_bytes()) for _ in range(5) if not time.sleep(0.2)]
    stop.set()
    for worker in workers:
        worker.join()
    return idle | {
        "loaded_rss": max(rss for rss, _ in samples),
        "loaded_pss": max(pss for _, pss in samples),
    }


def worker_memory(server: Server, client: Client, pool: int, functions: int) -> dict[str, float]:
    """Memory of warm workers as distinct functions get called, one call each.

    Once ``pool`` functions have been called (the pool's bound): each worker's RSS, PSS
    and private memory (the medians) and the server's totals; after ``functions``: how
    many workers there are, the most seen after any call (and of those killed, not yet
    gone), and the totals again.
    """
    for index in range(functions):
        client.publish(f"f{index}", f"def main():\n    return {index}\n")
    figures: dict[str, float] = {}
    most = most_dying = 0
    for index in range(functions):
        assert client.invoke(f"f{index}").result == index
        most = max(most, len(server.workers()))
        most_dying = max(most_dying, len(server.workers(dying=True)))
        if index + 1 == pool:
            time.sleep(1)  # the last worker's stop lands
            each = [_smaps_rollup(pid) for pid in server.workers()]
            figures |= {
                "pool_workers": len(each),
                "worker_rss": statistics.median(m["Rss"] for m in each),
                "worker_pss": statistics.median(m["Pss"] for m in each),
                "worker_private": statistics.median(
                    m["Private_Clean"] + m["Private_Dirty"] for m in each
                ),
                "pool_rss": server.rss_bytes(),
                "pool_pss": server.pss_bytes(),
            }
    time.sleep(1)  # retired workers reaped
    return figures | {
        "workers": len(server.workers()),
        "most": most,
        "most_dying": most_dying,
        "rss": server.rss_bytes(),
        "pss": server.pss_bytes(),
    }


def machine() -> str:
    """A one-paragraph description of this machine."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory_kb / 1024 / 1024:.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def main() -> None:
    """Run every benchmark and write bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls, shorter runs")
    options = parser.parse_args()
    calls, seconds, runs = (200, 2.0, 5) if options.quick else (1000, 5.0, 21)
    with tempfile.TemporaryDirectory() as data:
        server = Server(
            Path(data) / "warm",
            env={"TOOLVAULT_SANDBOX_MODE": "warm", "TOOLVAULT_WARM_WORKERS": str(POOL)},
        )
        echo = EchoServer()
        fresh = Server(Path(data) / "fresh", env={"TOOLVAULT_SANDBOX_MODE": "fresh"})
        try:
            with Client(fresh.address, timeout=120) as client:
                client.publish("noop", NOOP)
            with Client(server.address, timeout=120) as client:
                client.publish("noop", NOOP)
                client.publish("sieve", SIEVE, isolation="warm")
                client.publish("spin", SPIN, timeout_ms=60_000)
                ours, floor = toolvault_caller(server.address), echo_caller(echo.address)
                times, echo_times = latency(ours, calls), latency(floor, calls)
                fresh_times = latency(toolvault_caller(fresh.address), calls)
                spawned = spawn_per_call(max(10, calls // 20))
                fresh_rate = throughput(toolvault_caller(fresh.address), 16, seconds)[0]
                fresh.stop()
                rates = {c: throughput(ours, c, seconds) for c in (1, 4, 16)}
                invoked = 50 + calls + sum(count for _, count in rates.values())
                recorded = len(client.history("noop", limit=None))
                echo_rates = {c: throughput(floor, c, seconds)[0] for c in (1, 4, 16)}
                cpu = cpu_per_call(server, ours, 16, seconds)
                work = compute(client, 100_000, runs)
                held = memory(server, server.address)
                pool = worker_memory(server, client, POOL, FUNCTIONS)
        finally:
            for process in (server, fresh, echo):
                process.stop()
    p50, echo_p50, spawn_p50, fresh_p50 = (
        statistics.median(t) for t in (times, echo_times, spawned, fresh_times)
    )
    mib = 1024 * 1024
    report = (
        f"""# Benchmark results

Measured {dt.date.today().isoformat()} with `python bench/run.py{" --quick" if options.quick else ""}`
on {machine()}. Medians unless marked; every ratio compares figures taken in the same run.

## 1. Invoke latency, sequential (trivial function)

| path | p50 | p99 | p50 vs the echo |
| --- | --- | --- | --- |
| toolvault, `TOOLVAULT_SANDBOX_MODE=warm` (the default): SDK -> gRPC on loopback -> the version's warm worker -> history row | {p50:.2f} ms | {percentile(times, 99):.2f} ms | {p50 / echo_p50:.1f}x |
| toolvault, `TOOLVAULT_SANDBOX_MODE=fresh`: a sandbox per call, a spare made ahead when one is ready (`TOOLVAULT_FRESH_SPARES=2`), else forked | {fresh_p50:.2f} ms | {percentile(fresh_times, 99):.2f} ms | {fresh_p50 / echo_p50:.1f}x |
| floor: a bare gRPC unary echo server (bench/echo.py; same grpcio, loopback, client library) | {echo_p50:.2f} ms | {percentile(echo_times, 99):.2f} ms | 1.0x |
| floor of spawning per call: a fresh interpreter that does nothing (`python -I -c pass`) | {spawn_p50:.1f} ms | {percentile(spawned, 99):.1f} ms | {spawn_p50 / echo_p50:.0f}x |

toolvault is **{spawn_p50 / p50:.1f}x** faster at the median than spawning an interpreter per
call ({spawn_p50 / fresh_p50:.1f}x in fresh mode; {calls} calls of each after 50 warm-up
calls; {len(spawned)} spawns).

## 2. Throughput (trivial function, {seconds:.0f} s per row)

| concurrent clients | toolvault calls/s | echo calls/s | toolvault vs the echo |
| --- | --- | --- | --- |
"""
        + "".join(
            f"| {c} | {rate:.0f} | {echo_rates[c]:.0f} | {rate / echo_rates[c]:.0%} |\n"
            for c, (rate, _) in rates.items()
        )
        + f"""
In fresh mode, with 16 clients: {fresh_rate:.0f} calls/s ({fresh_rate / echo_rates[16]:.0%} of the echo's).

The history holds {recorded} rows for the {invoked} calls made: {"every call was recorded" if recorded == invoked else "MISMATCH"}.
Clients and server share the machine's {os.cpu_count()} cores.

CPU per call with 16 clients: server process {cpu["server"]:.2f} ms, sandbox host and
sandboxes {cpu["sandboxes"]:.2f} ms, client (SDK) {cpu["client"]:.2f} ms.

## 3. Compute-bound: prime sieve up to 100,000

CPU time per call: for the sandbox the execution record's `cpu_time_ms`, the kernel's
figure for the version's warm worker, its per-call set-up included (median of {runs}
calls after the one that started it); for the others this process's CPU time, taken
alternately with the sandbox's calls.

| runner | CPU time | vs CPython |
| --- | --- | --- |
| plain CPython, in process | {work["cpython"]:.2f} ms | 1.00x |
| toolvault sandbox, warm worker (RestrictedPython-compiled) | {work["sandbox"]:.2f} ms | {work["sandbox"] / work["cpython"]:.2f}x |
| of which the per-call floor: a trivial function's call in its warm worker | {work["noop"]:.2f} ms | |
| smolagents LocalPythonExecutor (AST interpreter) | {work["smolagents"]:.0f} ms | {work["smolagents"] / work["cpython"]:.0f}x |

The sandbox runs the sieve **{work["smolagents"] / work["sandbox"]:.0f}x** faster than smolagents' interpreter.

## 4. Memory (server and all its processes)

RSS sums each process's resident memory, so pages that processes share (the sandbox
host's, which its workers are forked from) count once per process; PSS divides each
shared page among its sharers, so it sums to what the tree really holds.

| state | RSS | PSS |
| --- | --- | --- |
| idle | {held["idle_rss"] / mib:.0f} MiB | {held["idle_pss"] / mib:.0f} MiB |
| 16 calls in flight | {held["loaded_rss"] / mib:.0f} MiB | {held["loaded_pss"] / mib:.0f} MiB |
| {POOL} distinct functions called, one warm worker each ({pool["pool_workers"]:.0f} workers) | {pool["pool_rss"] / mib:.0f} MiB | {pool["pool_pss"] / mib:.0f} MiB |
| {FUNCTIONS} distinct functions called, one call each | {pool["rss"] / mib:.0f} MiB | {pool["pss"] / mib:.0f} MiB |

One warm worker (median of the {pool["pool_workers"]:.0f}): RSS {pool["worker_rss"] / mib:.1f} MiB, PSS
{pool["worker_pss"] / mib:.1f} MiB, private (what it alone holds) {pool["worker_private"] / mib:.1f} MiB.

With the pool bounded at {POOL} (`TOOLVAULT_WARM_WORKERS`), calling {FUNCTIONS} distinct
functions left {pool["workers"]:.0f} warm workers; the most alive after any call was {pool["most"]:.0f}, beside at most
{pool["most_dying"]:.0f} retired for room, killed and not yet gone.
"""
    )
    (ROOT / "RESULTS.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
