"""What RestrictedPython's guards cost compute-bound code: per guard, per call, per sieve.

Run ``python bench/guards.py`` (``--quick`` for a short run). In this process, with the
globals a sandbox gives user code, it times bench/run.py's prime sieve compiled three
ways: plain CPython, as the sandbox compiles it, and as it did before loops took the
write guard out (a list test at every item write). Then, for each guard the sieve
meets, how often it runs per sieve and what one call costs over the bare operation (a
loop of the guarded statement against the same loop compiled plainly), so that calls x
cost adds up to the measured gap. Times are this thread's CPU time; it writes
``bench/GUARDS.md``.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from textwrap import dedent
from typing import Any

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.transformer import RestrictingNodeTransformer
from run import SIEVE

from toolvault.sandbox._globals import restricted_globals
from toolvault.sandbox._validate import RestrictingTransformer

ROOT = Path(__file__).resolve().parent
N = 100_000
# The guards a compiled sieve may call.
GUARDS = ("_getitem_", "_getiter_", "_type_", "_write_", "_loop_writes_")


class PerWriteTest(RestrictingTransformer):
    """The compile before loops took the write guard out: a list test at every write."""

    def visit_Module(self, node: ast.Module) -> ast.AST | Iterable[ast.AST] | None:
        """RestrictedPython's own transformation of the module, nothing after it."""
        return RestrictingNodeTransformer.visit_Module(self, node)


def compiled(source: str, policy: type[RestrictingNodeTransformer] | None) -> Callable[..., Any]:
    """``main`` of ``source``, plain (policy None) or restricted, in its usual globals."""
    source = dedent(source)
    if policy is None:
        namespace: dict[str, Any] = {}
        exec(compile(source, "<bench>", "exec"), namespace)
    else:
        result = compile_restricted_exec(source, "<bench>", policy=policy)
        assert result.code is not None, result.errors
        namespace = restricted_globals(())
        exec(result.code, namespace)
    return namespace["main"]  # type: ignore[no-any-return]


def cpu_ms(call: Callable[[], object], runs: int) -> float:
    """Median CPU milliseconds of ``call`` on this thread."""
    times = []
    for _ in range(runs):
        started = time.thread_time_ns()
        call()
        times.append((time.thread_time_ns() - started) / 1e6)
    return statistics.median(times)


def guard_calls(policy: type[RestrictingNodeTransformer]) -> Counter[str]:
    """How often each guard runs in one sieve compiled under ``policy``."""
    result = compile_restricted_exec(SIEVE, "<bench>", policy=policy)
    assert result.code is not None
    namespace = restricted_globals(())
    calls: Counter[str] = Counter()
    for name in GUARDS:
        guard = namespace[name]

        def counted(*args: Any, _name: str = name, _guard: Any = guard) -> Any:
            calls[_name] += 1
            return _guard(*args)

        namespace[name] = counted
    exec(result.code, namespace)
    namespace["main"](N)
    return calls


# The compiles compared: RestrictedPython's own, this one before loops took the write
# guard out, and this one.
POLICIES: dict[str, type[RestrictingNodeTransformer]] = {
    "RestrictedPython's own compile (a call of the write guard at every item write)": (
        RestrictingNodeTransformer
    ),
    "before (a list test at every item write)": PerWriteTest,
    "as the sandbox compiles it (the write guard out of loops)": RestrictingTransformer,
}
# Per guard: what it stands for, a loop of the guarded operation (LOOP times: the guard
# in the restricted compile, the bare operation in the plain one), and the compile.
LOOP = 200_000
WRITES = "for i in r:\n    xs[i] = i"
STATEMENTS: dict[str, tuple[str, str, type[RestrictingNodeTransformer]]] = {
    "_getitem_": (
        "item read `xs[i]`",
        "t = 0\nfor i in r:\n    t += xs[i]",
        RestrictingTransformer,
    ),
    "_getiter_": (
        "`for x in ...`",
        "for i in r:\n    for j in s:\n        pass",
        RestrictingTransformer,
    ),
    "_write_": ("item write, RestrictedPython's own compile", WRITES, RestrictingNodeTransformer),
    "_type_": ("item write, a list test at the write", WRITES, PerWriteTest),
    "_loop_writes_": (
        "item write in a loop, to what `_loop_writes_` gave once before it",
        WRITES,
        RestrictingTransformer,
    ),
}


def guard_cost(statement: str, policy: type[RestrictingNodeTransformer], runs: int) -> float:
    """Nanoseconds one run of ``statement``'s guard adds to the bare operation."""
    source = f"def main():\n    xs, r, s = [1] * {LOOP}, range({LOOP}), range(0)\n" + "".join(
        f"    {line}\n" for line in statement.splitlines()
    )
    plain, restricted = compiled(source, None), compiled(source, policy)
    return (cpu_ms(restricted, runs) - cpu_ms(plain, runs)) * 1e6 / LOOP


def main() -> None:
    """Measure, print and write bench/GUARDS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    runs = 9 if parser.parse_args().quick else 31
    sieves = {"plain CPython": compiled(SIEVE, None)}
    sieves |= {name: compiled(SIEVE, policy) for name, policy in POLICIES.items()}
    assert len({sieve(N) for sieve in sieves.values()}) == 1
    times: dict[str, list[float]] = {name: [] for name in sieves}
    for _ in range(3):  # alternating blocks: drift hits all alike
        for name, sieve in sieves.items():
            times[name].append(cpu_ms(lambda sieve=sieve: sieve(N), runs))  # type: ignore[misc]
    ms = {name: statistics.median(values) for name, values in times.items()}
    counts = [guard_calls(policy) for policy in POLICIES.values()]
    # What the hoisted writes cost is paid per write: the writes that lost their list test.
    counts[-1]["_loop_writes_"] = counts[1]["_type_"] - counts[-1]["_type_"]
    cost = {
        name: guard_cost(statement, policy, runs)
        for name, (_, statement, policy) in STATEMENTS.items()
    }
    sieve_rows = "".join(
        f"| {name} | {ms[name]:.2f} ms | {ms[name] / ms['plain CPython']:.2f}x |\n" for name in ms
    )
    guard_rows = "".join(
        f"| `{name}` | {what} | {cost[name]:.1f} ns | "
        + " | ".join(
            f"{count[name]:,} = {count[name] * cost[name] / 1e6:.2f} ms" for count in counts
        )
        + " |\n"
        for name, (what, _, _) in STATEMENTS.items()
    )
    report = f"""# Guard costs in compute-bound code

Measured with `python bench/guards.py{" --quick" if runs == 9 else ""}` (Python {sys.version.split()[0]}) in one
process with the globals a sandbox gives user code: CPU time of this thread, medians of
{runs} runs in 3 alternating blocks. The sieve is bench/run.py's, up to {N:,}.

| sieve compiled | CPU time | vs plain |
| --- | --- | --- |
{sieve_rows}
Per guard: what one run costs over the bare operation (a loop of {LOOP:,} of it, compiled
restricted minus plain; about 1 ns is noise), and how often it runs in one sieve x that
cost, in each compile above (for `_loop_writes_`, the writes to what it gave). `_write_`
itself runs only for objects that are not lists (none here) once the compile tests for
a list; `_inplacevar_` never runs: `n += 1` on a name compiles as it is.

| guard | stands for | cost per run | RestrictedPython's own | before | now |
| --- | --- | --- | --- | --- | --- |
{guard_rows}"""
    (ROOT / "GUARDS.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
