"""What the kernel layer's newer fences cost per call: the same host, with and without them.

Run ``python bench/confinement.py`` (``--quick`` for a short run); it writes
``bench/CONFINEMENT.md``. It starts one sandbox host per plan in this process, all with
the same namespaces, uid and rlimits, and differing only in the layers under test:

- ``baseline``: the plan before the private root and the system-call filter (a read-only
  view of the host's whole filesystem);
- ``+ private root``: the sandboxes see a root made for them (pivot_root);
- ``+ seccomp`` (where this host installs one): the full plan every server uses.

Blocks of calls go to each host in turn, so that drift on this shared machine hits every
plan alike; the figures are the medians of ``SandboxHost.run`` for a trivial function
and for a small compute job (wall clock, and the sandbox process's CPU time), with the
ratio to the baseline. Every plan also pays the memory-hygiene cost (the job travels in a
memfd and its code is unmarshalled in the sandbox), which no plan can turn off; its
pieces are timed on their own at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import marshal
import os
import platform
import statistics
import time
from pathlib import Path

from toolvault.sandbox import Job, Limits, Plan, SandboxHost, _runner, detect
from toolvault.sandbox._child import compile_job, encode_job, read_job

ROOT = Path(__file__).resolve().parent
NOOP = "def main():\n    return 1\n"
WORK = "def main(n):\n    return sum(i * i for i in range(n))\n"
LIMITS = Limits(timeout_ms=10_000, memory_mb=256, max_output_bytes=1 << 20)


def plans(full: Plan) -> dict[str, Plan]:
    """The plans compared, weakest first, up to ``full``, the plan this host runs with."""
    found = {"baseline": dataclasses.replace(full, private_root=False, syscall_filter=False)}
    if full.private_root:
        found["+ private root"] = dataclasses.replace(full, syscall_filter=False)
    if full.syscall_filter:
        found["+ seccomp"] = full
    return found


async def start(plan: Plan) -> SandboxHost:
    """A host confined by exactly ``plan`` (the probe's search for a plan skipped)."""
    host = SandboxHost(preload=())
    chosen = _runner.candidates
    _runner.candidates = lambda: [plan]  # type: ignore[assignment]
    try:
        isolation = await host.start()
    finally:
        _runner.candidates = chosen
    assert isolation.plan == plan, isolation
    return host


async def measure(full: Plan, blocks: int, per_block: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU milliseconds per call, by plan and job, interleaved in blocks."""
    hosts = {name: await start(plan) for name, plan in plans(full).items()}
    jobs = {
        "trivial": Job(NOOP, "main", "{}", (), LIMITS, filename="noop@1"),
        "compute": Job(WORK, "main", '{"n": 20000}', (), LIMITS, filename="work@1"),
    }
    times: dict[str, dict[str, list[float]]] = {
        name: {f"{kind} {what}": [] for kind in jobs for what in ("wall", "cpu")} for name in hosts
    }
    try:
        for host in hosts.values():
            for job in jobs.values():
                for _ in range(20):  # warm: compiled, cached, pages faulted in
                    await host.run(job)
        for _ in range(blocks):
            for name, host in hosts.items():
                for kind, job in jobs.items():
                    for _ in range(per_block):
                        started = time.perf_counter()
                        result = await host.run(job)
                        times[name][f"{kind} wall"].append((time.perf_counter() - started) * 1000)
                        times[name][f"{kind} cpu"].append(result.cpu_time_ms)
                        assert result.status.value == "ok", result
    finally:
        for host in hosts.values():
            await host.close()
    return times


def hygiene(rounds: int) -> dict[str, float]:
    """Microseconds of each per-call piece the memory hygiene adds, medians."""
    job = Job(NOOP, "main", '{"x": "' + "a" * 1000 + '"}', (), LIMITS, filename="noop@1")
    program = compile_job(job.source, job.filename)
    pieces: dict[str, list[float]] = {"write the memfd": [], "read and unmarshal": []}
    for _ in range(rounds):
        started = time.perf_counter()
        fd = os.memfd_create("job", os.MFD_CLOEXEC)
        os.write(fd, encode_job(job, program))
        os.lseek(fd, 0, os.SEEK_SET)
        middle = time.perf_counter()
        _, read = read_job(fd)
        marshal.loads(read.code)
        ended = time.perf_counter()
        pieces["write the memfd"].append((middle - started) * 1e6)
        pieces["read and unmarshal"].append((ended - middle) * 1e6)
    return {name: statistics.median(values) for name, values in pieces.items()}


def main() -> None:
    """Measure, print and write CONFINEMENT.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    quick = parser.parse_args().quick
    full = detect().plan
    times = asyncio.run(measure(full, blocks=4 if quick else 20, per_block=10 if quick else 25))
    base = times["baseline"]
    lines = [
        "# Confinement cost per call",
        "",
        f"`python bench/confinement.py{' --quick' if quick else ''}` on {platform.node()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}; medians in ms of "
        f"{len(base['trivial wall'])} calls per plan and job, interleaved in blocks.",
        "",
        "| plan | " + " | ".join(base) + " |",
        "|---|" + "---|" * len(base),
    ]
    for name, figures in times.items():
        cells = []
        for key, values in figures.items():
            median = statistics.median(values)
            ratio = median / statistics.median(base[key])
            cells.append(f"{median:.2f} ({ratio:.2f}×)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Per-call pieces of the memory hygiene, paid by every plan (µs, medians):", ""]
    lines += [f"- {name}: {value:.1f}" for name, value in hygiene(2000).items()]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "CONFINEMENT.md").write_text(text)


if __name__ == "__main__":
    main()
