"""This checkout's calls without a worker key against another commit's, interleaved.

Run ``python bench/fresh_ab.py REV`` (``--spares N`` for this checkout, default 2;
``--their-spares N`` for REV, default the same, 0 for a commit without spares;
``--quick`` for a short run). It installs REV into a throw-away
virtualenv as compare.py does, starts one process per checkout (this file with
``--serve``, each with a ``SandboxHost(spares=N)`` of its own) and sends them blocks of
no-op calls in turn, paced (20 ms apart) and back to back, so that drift on a shared
machine hits both alike. It prints a Markdown table: per call, the medians of the wall
clock of SandboxHost.run and of its result's CPU figure, and the CPU time of the runner
(the serving process) and of the sandbox host with every sandbox it reaped, over all
blocks; all in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from compare import install
from fresh import LIMITS, NOOP, PAUSE_S, host_cpu_ms

from toolvault.sandbox import Job, SandboxHost

PACES = {"paced": PAUSE_S, "back to back": 0.0}


async def serve(spares: int) -> None:
    """Answer blocks asked for on stdin ("PAUSE CALLS") with their figures on stdout."""
    host = SandboxHost(preload=(), **({"spares": spares} if spares else {}))
    job = Job(NOOP, "main", "{}", (), LIMITS, filename="noop@1")
    loop = asyncio.get_running_loop()
    try:
        await host.start()
        for _ in range(30):
            await host.run(job)
            await asyncio.sleep(PAUSE_S)
        print("ready", flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            pause, calls = float(line.split()[0]), int(line.split()[1])
            await asyncio.sleep(0.2)  # the previous block's spares made again
            assert host.pid is not None
            runner_before, host_before = time.process_time(), host_cpu_ms(host.pid)
            walls, cpus = [], []
            for _ in range(calls):
                if pause:
                    await asyncio.sleep(pause)
                started = time.perf_counter()
                result = await host.run(job)
                walls.append((time.perf_counter() - started) * 1000)
                cpus.append(result.cpu_time_ms)
                assert result.status.value == "ok", result
            await asyncio.sleep(0.2)
            runner_ms = (time.process_time() - runner_before) * 1000
            figures = {
                "wall": walls,
                "cpu": cpus,
                "runner": runner_ms,
                "host": host_cpu_ms(host.pid) - host_before,
            }
            print(json.dumps(figures), flush=True)
    finally:
        await host.close()


def ask(process: subprocess.Popen[str], pause: float, calls: int) -> dict[str, Any]:
    """One block of ``calls`` from ``process``."""
    stdin, stdout = process.stdin, process.stdout
    assert stdin is not None and stdout is not None
    stdin.write(f"{pause} {calls}\n")
    stdin.flush()
    figures: dict[str, Any] = json.loads(stdout.readline())
    return figures


def start(python: str, spares: int) -> subprocess.Popen[str]:
    """A serving process of ``python``'s checkout, once it is warm."""
    process = subprocess.Popen(
        [python, str(Path(__file__).resolve()), "--serve", str(spares)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parent,
    )
    out: IO[str] | None = process.stdout
    assert out is not None and out.readline().strip() == "ready"
    return process


def main() -> None:
    """Measure both checkouts in alternating blocks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", nargs="?", help="the commit to compare with, e.g. main")
    parser.add_argument("--spares", type=int, default=2)
    parser.add_argument("--their-spares", type=int)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve is not None:
        asyncio.run(serve(options.serve))
        return
    blocks, calls = (4, 25) if options.quick else (10, 50)
    theirs = options.their_spares
    with tempfile.TemporaryDirectory() as scratch:
        other = str(Path(install(options.rev, Path(scratch))).parent / "python")
        processes = {
            "this checkout": start(sys.executable, options.spares),
            options.rev: start(other, options.spares if theirs is None else theirs),
        }
        found: dict[str, dict[str, list[dict[str, Any]]]] = {
            pace: {name: [] for name in processes} for pace in PACES
        }
        try:
            for block in range(blocks):
                names = list(processes)[:: 1 if block % 2 == 0 else -1]
                for pace, pause in PACES.items():
                    for name in names:
                        found[pace][name].append(ask(processes[name], pause, calls))
        finally:
            for process in processes.values():
                assert process.stdin is not None
                process.stdin.close()
                process.wait()
    print(
        f"spares: {options.spares} here, {options.spares if theirs is None else theirs} in "
        f"{options.rev}; {blocks} blocks of {calls} calls per side and pace\n"
    )
    print("| pace | checkout | wall | result cpu | runner cpu | host cpu |")
    print("|---|---|---|---|---|---|")
    for pace, by_name in found.items():
        for name, runs in by_name.items():
            total = blocks * calls
            wall = statistics.median(w for run in runs for w in run["wall"])
            cpu = statistics.median(c for run in runs for c in run["cpu"])
            runner = sum(run["runner"] for run in runs) / total
            host = sum(run["host"] for run in runs) / total
            print(f"| {pace} | {name} | {wall:.2f} | {cpu:.2f} | {runner:.2f} | {host:.2f} |")


if __name__ == "__main__":
    main()
