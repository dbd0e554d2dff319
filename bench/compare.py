"""This checkout against another commit, in the same run: is a change faster or slower?

Run ``python bench/compare.py REV`` (a commit, branch or tag; add ``--quick`` for a short
run) from a checkout with the ``server`` extra installed. It installs REV into a
throw-away virtualenv, starts a server of each on its own loopback port and SQLite data
directory, and measures both in alternating rounds, so that drift on a noisy machine
hits both alike: sequential invoke latency of a trivial function, throughput with 4
concurrent clients (``--clients``) and the server process's CPU time per call under that
load, and the sandbox's CPU time per call (the execution record's ``cpu_time_ms``) of the
prime sieve (bench/run.py's SIEVE) and of the trivial function. The servers run in ``--mode warm`` (the default) or ``fresh``. The clients are this
checkout's SDK for both (the wire protocol is the same). It prints a Markdown table with
the medians and the ratios this / REV.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from run import NOOP, SIEVE, Server, _cpu_seconds, latency, throughput, toolvault_caller

from toolvault.client import Client

ROOT = Path(__file__).resolve().parent.parent


def install(rev: str, into: Path) -> str:
    """Install ``rev`` of this repository with the server extra; return its `toolvault`."""
    source = into / "source"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(source), rev], check=True
    )
    try:
        subprocess.run([sys.executable, "-m", "venv", str(into / "venv")], check=True)
        pip = [str(into / "venv" / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"{source}[server]"], check=True)
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(source)], check=True
        )
    return str(into / "venv" / "bin" / "toolvault")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rev", help="the commit to compare with, e.g. HEAD~1 or main")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter runs")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (4)")
    parser.add_argument("--mode", choices=("warm", "fresh"), default="warm", help="sandbox mode")
    options = parser.parse_args()
    rounds, calls, seconds = (3, 200, 2.0) if options.quick else (7, 400, 4.0)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        binaries = {"this checkout": str(Path(sys.executable).parent / "toolvault")}
        binaries[options.rev] = install(options.rev, work / "other")
        mode = {"TOOLVAULT_SANDBOX_MODE": options.mode}
        servers = {
            name: Server(work / f"data{i}", toolvault=binary, env=mode)
            for i, (name, binary) in enumerate(binaries.items())
        }
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        rates: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        sandbox_cpu: dict[tuple[str, str], list[float]] = {
            (name, function): [] for name in servers for function in ("sieve", "noop")
        }
        try:
            for server in servers.values():
                with Client(server.address, timeout=120) as client:
                    client.publish("noop", NOOP)
                    client.publish("sieve", SIEVE)
                    client.invoke("sieve", {"n": 10})  # its warm worker, started
            for round_ in range(rounds):
                # Each goes first in every other round: what runs first finds the caches colder.
                for name in list(servers)[:: 1 if round_ % 2 == 0 else -1]:
                    caller = toolvault_caller(servers[name].address)
                    latencies[name] += latency(caller, calls)
                    before = _cpu_seconds(servers[name].process.pid)
                    rate, made = throughput(caller, options.clients, seconds)
                    used = _cpu_seconds(servers[name].process.pid) - before
                    rates[name].append(rate)
                    cpu[name].append(used * 1000 / made)
                    with Client(servers[name].address, timeout=120) as client:
                        for function, args in (("sieve", {"n": 100_000}), ("noop", {})):
                            sandbox_cpu[name, function] += [
                                client.invoke(function, args).cpu_time_ms
                                for _ in range(calls // 20)
                            ]
        finally:
            for server in servers.values():
                server.stop()
    this, other = binaries
    p50 = {name: statistics.median(values) for name, values in latencies.items()}
    rate = {name: statistics.median(values) for name, values in rates.items()}
    ms = {name: statistics.median(values) for name, values in cpu.items()}
    used = {key: statistics.median(values) for key, values in sandbox_cpu.items()}
    clients = options.clients
    print(f"""{options.mode} mode
| measure | this checkout | {other} | this / {other} |
| --- | --- | --- | --- |
| invoke latency p50 ({rounds} x {calls} calls) | {p50[this]:.2f} ms | {p50[other]:.2f} ms | {p50[this] / p50[other]:.2f} |
| invocations/s, {clients} clients (median of {rounds} x {seconds:.0f} s) | {rate[this]:.0f} | {rate[other]:.0f} | {rate[this] / rate[other]:.2f} |
| server CPU per call, {clients} clients | {ms[this]:.2f} ms | {ms[other]:.2f} ms | {ms[this] / ms[other]:.2f} |
| sandbox CPU per sieve call, n = 100,000 ({rounds} x {calls // 20} calls) | {used[this, "sieve"]:.2f} ms | {used[other, "sieve"]:.2f} ms | {used[this, "sieve"] / used[other, "sieve"]:.2f} |
| sandbox CPU per trivial call ({rounds} x {calls // 20} calls) | {used[this, "noop"]:.3f} ms | {used[other, "noop"]:.3f} ms | {used[this, "noop"] / used[other, "noop"]:.2f} |""")


if __name__ == "__main__":
    main()
