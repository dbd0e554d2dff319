"""toolvault benchmarks: latency, throughput, compute speed and memory, side by side.

Run ``python bench/run.py`` (add ``--quick`` for a short run) from a checkout with the
``bench`` extra installed. It starts its own server on a free loopback port with a fresh
SQLite data directory, measures, and writes ``bench/RESULTS.md``. Every comparison is
measured in the same run as its baseline, because this machine is noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from toolvault.client import Client
from toolvault.sandbox import Job, Limits, RunStatus, SandboxHost

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

    def __init__(self, data_dir: Path, toolvault: str = TOOLVAULT) -> None:
        with socket.socket() as probe:  # a free port; the server logs nothing below WARNING
            probe.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{probe.getsockname()[1]}"
        self.process = subprocess.Popen(
            [toolvault, "serve", "--listen", self.address, "--data-dir", str(data_dir)],
            env={
                **os.environ,
                "TOOLVAULT_LOG_LEVEL": "WARNING",
                "TOOLVAULT_MAX_QUEUED_RUNS": "10000",
            },
        )
        health = [toolvault, "--server", self.address, "health", "--timeout", "1"]
        deadline = time.monotonic() + 60
        while subprocess.run(health, capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)

    def rss_bytes(self) -> int:
        """Resident memory of the server and every process below it."""
        return sum(_rss(pid) for pid in [self.process.pid, *_descendants(self.process.pid)])

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


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fresh_host_per_call(job: Job) -> None:
    """One call the way a spawn-per-call sandbox runs it: a sandbox host started for it alone."""

    async def once() -> None:
        host = SandboxHost(preload=job.allowed_imports)
        try:
            result = await host.run(job)
        finally:
            await host.close()
        assert result.status is RunStatus.OK, result

    asyncio.run(once())


def latency(client: Client, calls: int) -> dict[str, float]:
    """Sequential end-to-end invoke latency of a trivial function, and the spawn baseline."""
    for _ in range(50):
        client.invoke("noop")
    times = [timed(lambda: client.invoke("noop")) for _ in range(calls)]
    noop = Job(NOOP, "main", "{}", (), Limits(5000, 256, 1 << 20), filename="noop@1")
    spawned = [timed(lambda: fresh_host_per_call(noop)) for _ in range(max(10, calls // 20))]
    return {
        "p50": statistics.median(times),
        "p99": percentile(times, 99),
        "spawn_p50": statistics.median(spawned),
        "spawn_p99": percentile(spawned, 99),
    }


def throughput(address: str, clients: int, seconds: float) -> tuple[float, int]:
    """Invocations per second with ``clients`` concurrent callers, and how many ran."""
    deadline = time.monotonic() + seconds
    done = [0] * clients

    def caller(index: int) -> None:
        with Client(address) as client:
            while time.monotonic() < deadline:
                assert client.invoke("noop").ok
                done[index] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(caller, range(clients)))
    return sum(done) / (time.monotonic() - started), sum(done)


def compute(client: Client, n: int, runs: int) -> dict[str, float]:
    """A prime sieve in the sandbox, in plain CPython and in smolagents' interpreter."""
    from smolagents.local_python_executor import LocalPythonExecutor

    namespace: dict[str, object] = {}
    exec(SIEVE, namespace)
    plain = namespace["main"]
    expected = plain(n)  # type: ignore[operator]
    sandbox = []
    for _ in range(runs):
        execution = client.invoke("sieve", {"n": n})
        assert execution.result == expected, execution
        sandbox.append(execution.cpu_time_ms)
    cpython = [timed(lambda: plain(n)) for _ in range(runs)]  # type: ignore[operator]
    executor = LocalPythonExecutor(additional_authorized_imports=[])
    executor.send_tools({})
    smol = []
    for _ in range(max(1, runs // 2)):
        started = time.perf_counter()
        assert executor(SIEVE + f"\nmain({n})").output == expected
        smol.append((time.perf_counter() - started) * 1000)
    return {
        "sandbox": statistics.median(sandbox),
        "cpython": statistics.median(cpython),
        "smolagents": statistics.median(smol),
    }


def memory(server: Server, client: Client, address: str) -> tuple[int, int]:
    """RSS of the server's process tree idle, and with 16 calls in flight."""
    time.sleep(1)
    idle = server.rss_bytes()
    stop = threading.Event()

    def busy() -> None:
        with Client(address) as own:
            while not stop.is_set():
                own.invoke("spin", {"n": 3_000_000})

    workers = [threading.Thread(target=busy) for _ in range(16)]
    for worker in workers:
        worker.start()
    time.sleep(3)
    loaded = max(server.rss_bytes() for _ in range(5) if not time.sleep(0.2))
    stop.set()
    for worker in workers:
        worker.join()
    return idle, loaded


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
    calls, seconds, runs = (200, 2.0, 3) if options.quick else (1000, 5.0, 7)
    # Every baseline host warns about the layers this machine lacks; the server logs them once.
    logging.getLogger("toolvault.sandbox").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as data:
        server = Server(Path(data))
        try:
            with Client(server.address, timeout=120) as client:
                client.publish("noop", NOOP)
                client.publish("sieve", SIEVE)
                client.publish("spin", SPIN, timeout_ms=60_000)
                lat = latency(client, calls)
                rates = {c: throughput(server.address, c, seconds) for c in (1, 4, 16)}
                recorded = len(client.history("noop", limit=None))
                work = compute(client, 100_000, runs)
                idle, loaded = memory(server, client, server.address)
        finally:
            server.stop()
    invoked = 50 + calls + sum(count for _, count in rates.values())
    mib = 1024 * 1024
    report = (
        f"""# Benchmark results

Measured {dt.date.today().isoformat()} with `python bench/run.py{" --quick" if options.quick else ""}`
on {machine()}. Medians unless marked; every ratio compares figures taken in the same run.

## 1. Invoke latency, sequential (trivial function)

| path | p50 | p99 |
| --- | --- | --- |
| toolvault: SDK -> gRPC on loopback -> warm sandbox host -> history row | {lat["p50"]:.2f} ms | {lat["p99"]:.2f} ms |
| baseline: a fresh sandbox host per call (spawn, confine, probe, fork; same limits; no gRPC, no history) | {lat["spawn_p50"]:.1f} ms | {lat["spawn_p99"]:.1f} ms |

toolvault is **{lat["spawn_p50"] / lat["p50"]:.1f}x** faster at the median than spawning per call
({calls} toolvault calls after 50 warm-up calls).

## 2. Throughput (trivial function, {seconds:.0f} s per row)

| concurrent clients | invocations/s |
| --- | --- |
"""
        + "".join(f"| {c} | {rate:.0f} |\n" for c, (rate, _) in rates.items())
        + f"""
The history holds {recorded} rows for the {invoked} calls made: {"every call was recorded" if recorded == invoked else "MISMATCH"}.
Clients and server share the machine's {os.cpu_count()} cores.

## 3. Compute-bound: prime sieve up to 100,000

| runner | time | vs CPython |
| --- | --- | --- |
| plain CPython, in process | {work["cpython"]:.1f} ms | 1.0x |
| toolvault sandbox (RestrictedPython-compiled; CPU time of the sandbox process) | {work["sandbox"]:.1f} ms | {work["sandbox"] / work["cpython"]:.1f}x |
| smolagents LocalPythonExecutor (AST interpreter) | {work["smolagents"]:.1f} ms | {work["smolagents"] / work["cpython"]:.0f}x |

## 4. Memory (resident, server and all its processes)

| state | RSS |
| --- | --- |
| idle | {idle / mib:.0f} MiB |
| 16 calls in flight | {loaded / mib:.0f} MiB |
"""
    )
    (ROOT / "RESULTS.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
