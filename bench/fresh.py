"""What a fresh call costs: SandboxHost.run of a no-op without a worker key, per variant.

Run ``python bench/fresh.py`` (``--quick`` for a short run); it writes ``bench/FRESH.md``.
It starts one sandbox host per variant in this process, all under the full plan of this
machine, and differing only in how a call without a worker key gets its sandbox:

- ``forked``: the host forks and confines a sandbox for the call (``spares=0``);
- ``spares=N``: the call takes a spare forked, confined and warmed up ahead of time,
  which is killed after it; the host makes the next one off the call's path;
- ``warm worker``, the floor: the calls have a worker key, so one confined worker
  serves them all.

Blocks of calls go to each host in turn, so that drift on this shared machine hits every
variant alike. Two paces: ``paced`` calls with a pause between them (a server that is not
saturated, where spares have time to be made again) and ``back to back`` ones (every
spare's replacement competes with the next call). Per call: the wall clock of
SandboxHost.run and the CPU figure its result gives (medians), and the CPU time the
whole call cost, over every block (the kernel counts a reaped child's CPU in clock ticks):
this process's (the runner) and the sandbox host's with every sandbox it reaped (spares,
warm-ups and kills included).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from pathlib import Path

from toolvault.sandbox import Job, Limits, SandboxHost

ROOT = Path(__file__).resolve().parent
NOOP = "def main():\n    return 1\n"
LIMITS = Limits(timeout_ms=10_000, memory_mb=256, max_output_bytes=1 << 20)
PAUSE_S = 0.02
_TICKS = os.sysconf("SC_CLK_TCK")


def host_cpu_ms(pid: int) -> float:
    """CPU time of the sandbox host and every child it reaped so far, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14 to 17 of stat(5), counted after the name.
    return sum(int(value) for value in fields[11:15]) * 1000 / _TICKS


async def measure(
    variants: dict[str, tuple[int, str | None]], blocks: int, per_block: int
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Figures in ms per call, by pace, variant and measure, interleaved in blocks."""
    hosts = {name: SandboxHost(preload=(), spares=spares) for name, (spares, _) in variants.items()}
    keys = {name: key for name, (_, key) in variants.items()}
    job = Job(NOOP, "main", "{}", (), LIMITS, filename="noop@1")
    paces = {"paced": PAUSE_S, "back to back": 0.0}
    measures = ("wall", "result cpu", "runner cpu", "host cpu")
    times: dict[str, dict[str, dict[str, list[float]]]] = {
        pace: {name: {what: [] for what in measures} for name in hosts} for pace in paces
    }
    try:
        for host in hosts.values():
            await host.start()
        for name, host in hosts.items():
            for _ in range(30):  # warm: compiled, cached, pages faulted in
                await host.run(job, worker_key=keys[name])
                await asyncio.sleep(PAUSE_S)
        for block in range(blocks):
            names = list(hosts)[:: 1 if block % 2 == 0 else -1]
            for pace, pause in paces.items():
                for name in names:
                    host = hosts[name]
                    figures = times[pace][name]
                    await asyncio.sleep(0.2)  # the previous block's spares made again
                    pid = host.pid
                    assert pid is not None
                    runner_before, host_before = time.process_time(), host_cpu_ms(pid)
                    for _ in range(per_block):
                        if pause:
                            await asyncio.sleep(pause)
                        started = time.perf_counter()
                        result = await host.run(job, worker_key=keys[name])
                        figures["wall"].append((time.perf_counter() - started) * 1000)
                        figures["result cpu"].append(result.cpu_time_ms)
                        assert result.status.value == "ok", result
                    # What the last call's spare and its replacement cost lands in here too.
                    await asyncio.sleep(0.2)
                    runner_ms = (time.process_time() - runner_before) * 1000
                    # The pauses' own event-loop work is the same for every variant.
                    figures["runner cpu"].append(runner_ms)
                    figures["host cpu"].append(host_cpu_ms(pid) - host_before)
    finally:
        for host in hosts.values():
            await host.close()
    return times


def main() -> None:
    """Measure, print and write FRESH.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    quick = parser.parse_args().quick
    variants = {
        "forked": (0, None),
        "spares=1": (1, None),
        "spares=2": (2, None),
        "warm worker": (0, "noop@1"),
    }
    blocks, per_block = (4, 25) if quick else (12, 50)
    times = asyncio.run(measure(variants, blocks, per_block))
    lines = [
        "# Fresh calls: forked per call or taken from the spares",
        "",
        f"`python bench/fresh.py{' --quick' if quick else ''}` on {platform.node()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}; {blocks} blocks of {per_block} "
        f"no-op calls per variant and pace, interleaved; paced: {PAUSE_S * 1000:.0f} ms "
        "between calls. Wall and result CPU: medians per call; runner and host CPU "
        "(the host with every sandbox it reaped): totals over every block per call; "
        "all in ms.",
        "",
    ]
    calls = blocks * per_block
    for pace, by_variant in times.items():
        lines += [f"## {pace}", ""]
        first = next(iter(by_variant.values()))
        lines += ["| variant | " + " | ".join(first) + " |", "|---|" + "---|" * len(first)]
        for name, figures in by_variant.items():
            cells = [f"{statistics.median(figures[what]):.2f}" for what in ("wall", "result cpu")]
            cells += [f"{sum(figures[what]) / calls:.2f}" for what in ("runner cpu", "host cpu")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    (ROOT / "FRESH.md").write_text(text)


if __name__ == "__main__":
    main()
