"""Attacks on the server's resources through the real server: memory, CPU, time, output.

Each case asserts the exact status and message the limit gives, and (through the
harness) that the server answers its next call, nothing of the call survives and calls
running alongside return correct results. Fork and thread bombs and disk filling need
modules the language layer refuses, so tests/sandbox/test_isolation.py runs them against
the process and kernel layers directly.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.security.conftest import Attack
from toolvault.client import Execution, ExecutionStatus

FAST = {"timeout_ms": 700}


def failure(execution: Execution) -> tuple[ExecutionStatus, str, str]:
    assert execution.error is not None, execution
    return execution.status, execution.error.type, execution.error.message


TIMEOUT = (ExecutionStatus.TIMEOUT, "TimeoutError", "wall-clock limit of 700 ms exceeded")
OUT_OF_MEMORY = (ExecutionStatus.MEMORY_LIMIT, "MemoryError", "memory limit of 64 MiB exceeded")


@pytest.mark.parametrize(
    "body",
    [
        "return len('x' * 10 ** 10)",
        "return len(bytearray(10 ** 10))",
        "data = []\n    while True:\n        data.append(bytearray(10 ** 6))",
        "return len([0] * 10 ** 9)",
    ],
    ids=["string", "bytearray", "growing-list", "huge-list"],
)
def test_cant_use_too_much_memory(attack: Attack, body: str) -> None:
    execution = attack.run(f"def main():\n    {body}\n", memory_mb=64)

    assert failure(execution) == OUT_OF_MEMORY


@pytest.mark.parametrize(
    "source",
    [
        "def main():\n    while True:\n        pass\n",
        "import itertools\n\ndef main():\n    for _ in itertools.count():\n        pass\n",
        "import itertools\n\ndef main():\n    return sum(x for x in itertools.count())\n",
        "def main():\n    return 10 ** (10 ** 10)\n",
        # A C-level loop that never returns to the interpreter: only a kill stops it.
        "import re\n\ndef main():\n    return bool(re.match(r'(a+)+$', 'a' * 64 + 'b'))\n",
    ],
    ids=["spin", "count", "generator", "giant-power", "regex-backtracking"],
)
def test_cant_use_too_much_time(attack: Attack, bystanders: None, source: str) -> None:
    execution = attack.run(source, **FAST)

    assert failure(execution) == TIMEOUT
    assert 700 <= execution.duration_ms < 3_000


def test_cant_recurse_without_bound(attack: Attack) -> None:
    source = "def main():\n    def down(n):\n        return down(n + 1)\n    return down(0)\n"

    execution = attack.run(source)

    assert failure(execution) == (
        ExecutionStatus.ERROR,
        "RecursionError",
        "maximum recursion depth exceeded",
    )


def test_cant_print_too_much(attack: Attack) -> None:
    source = "def main():\n    while True:\n        print('x' * 1000)\n"

    execution = attack.run(source, max_output_bytes=4096)

    assert failure(execution) == (
        ExecutionStatus.OUTPUT_LIMIT,
        "OutputLimitExceeded",
        "stdout passed the output limit of 4096 bytes",
    )
    assert execution.stdout == ("x" * 1000 + "\n") * 4 + "x" * 92


def test_cant_return_too_much(attack: Attack) -> None:
    execution = attack.run(
        "def main(n):\n    return 'x' * n\n", {"n": 10**6}, max_output_bytes=4096
    )

    assert failure(execution) == (
        ExecutionStatus.OUTPUT_LIMIT,
        "OutputLimitExceeded",
        "result passed the output limit of 4096 bytes",
    )
    assert execution.result_json == ""


def test_a_huge_exception_message_is_cut(attack: Attack) -> None:
    execution = attack.run("def main(n):\n    raise ValueError('x' * n)\n", {"n": 10**7})

    assert failure(execution) == (ExecutionStatus.ERROR, "ValueError", "x" * 2_000)


def test_a_result_nested_too_deep_to_encode_is_an_error(attack: Attack) -> None:
    source = (
        "def main():\n    a = []\n    for _ in range(10 ** 5):\n        a = [a]\n    return a\n"
    )

    execution = attack.run(source)

    assert failure(execution) == (
        ExecutionStatus.ERROR,
        "TypeError",
        "result is not JSON-serializable: maximum recursion depth exceeded while encoding a "
        "JSON object",
    )


def test_many_attacks_at_once_leave_the_calls_alongside_correct(
    attack: Attack, bystanders: None
) -> None:
    spin = "def main():\n    while True:\n        pass\n"
    bomb = "def main():\n    return len('x' * 10 ** 10)\n"
    names = []
    for i, source in enumerate([spin, bomb] * 3):
        names.append(f"swarm_{i}")
        limits = {"timeout_ms": 700} if source is spin else {"memory_mb": 64}
        attack.client.publish(names[-1], source, **limits)  # type: ignore[arg-type]

    with ThreadPoolExecutor(len(names)) as pool:
        executions = list(pool.map(lambda name: attack.client.invoke(name, {}), names))

    assert [failure(e) for e in executions] == [TIMEOUT, OUT_OF_MEMORY] * 3
    for execution in executions:
        attack.assert_no_secret(execution)
    attack.assert_nothing_survives()
    assert attack.listener.connections == 0
