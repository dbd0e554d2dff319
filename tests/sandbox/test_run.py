"""run: real sandbox processes, their results, their limits, and what they leave behind."""

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from toolvault.sandbox import Job, Limits, RunResult, RunStatus, run
from toolvault.sandbox._runner import default_host

LIMITS = Limits(timeout_ms=5_000, memory_mb=256, max_output_bytes=64 * 1024)
BUSY = "def main():\n    while True:\n        pass\n"


def job(source: str, args: dict[str, Any] | None = None, **limits: int) -> Job:
    return Job(
        source=dedent(source),
        entrypoint="main",
        args_json=json.dumps(args or {}),
        allowed_imports=("asyncio", "json", "operator", "typing"),
        limits=replace(LIMITS, **limits),
        filename="add@3",
    )


def call(source: str, args: dict[str, Any] | None = None, **limits: int) -> RunResult:
    return asyncio.run(run(job(source, args, **limits)))


def outcome(result: RunResult) -> tuple[RunStatus, str, str, str]:
    return result.status, result.result_json, result.error_type, result.error_message


def children(pid: int | None) -> list[int]:
    """The live child processes of ``pid``."""
    if pid is None:
        return []
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def running_sandbox(host_pid: Callable[[], int | None]) -> int:
    """Wait until the host forked a sandbox; return its pid."""
    while not (pids := children(host_pid())):
        await asyncio.sleep(0.01)
    return pids[0]


def default_host_pid() -> int | None:
    return default_host().pid


def warm() -> int:
    """Start the default host (with a call); return the fds this process holds then."""
    assert call("def main():\n    return 1\n").status is RunStatus.OK
    return len(os.listdir("/proc/self/fd"))


def test_returns_the_value_as_compact_json() -> None:
    result = call("def main():\n    return {'values': [1, 2.5, None, 'é']}\n")

    assert outcome(result) == (RunStatus.OK, '{"values": [1, 2.5, null, "é"]}', "", "")
    assert (result.stdout, result.stderr, result.traceback) == ("", "", "")
    assert result.duration_ms > 0
    assert result.cpu_time_ms > 0
    assert result.peak_memory_bytes > 0


def test_passes_the_arguments_as_keywords() -> None:
    result = call("def main(a, b=10):\n    return a - b\n", {"b": 2, "a": 5})

    assert outcome(result) == (RunStatus.OK, "3", "", "")


def test_awaits_an_async_function() -> None:
    source = """\
        import asyncio

        async def main(n):
            await asyncio.sleep(0.01)
            return n * 2
    """

    assert outcome(call(source, {"n": 21})) == (RunStatus.OK, "42", "", "")


def test_captures_what_the_function_prints() -> None:
    result = call("def main():\n    print('hello', 42)\n    print('no newline', end='')\n")

    assert result.stdout == "hello 42\nno newline"


def test_cant_print_to_a_file() -> None:
    result = call("def main():\n    print('x', file=[])\n")

    assert outcome(result) == (RunStatus.ERROR, "", "TypeError", "print() can only write to stdout")


def test_the_usual_builtins_classes_and_idioms_work() -> None:
    source = """\
        class Point:
            def __init__(self, x, y):
                self.x = x
                self.y = y

        def main(pairs):
            points = [Point(x, y) for x, y in pairs]
            total = 0
            for i, point in enumerate(sorted(points, key=lambda p: p.x)):
                total += i * point.y
            first, *rest = reversed(list(zip(*pairs)))
            return {
                "total": total,
                "first": list(first),
                "rest": len(rest),
                "max": max(p.x for p in points),
                "all": all(isinstance(p, Point) for p in points),
                "text": f"{sum(p.x for p in points):>4}",
            }
    """

    result = call(source, {"pairs": [[3, 1], [1, 2]]})

    expected = {"total": 1, "first": [1, 2], "rest": 1, "max": 3, "all": True, "text": "   4"}
    assert json.loads(result.result_json) == expected


def test_an_exception_is_an_error_with_a_traceback_through_the_users_lines_only() -> None:
    source = """\
        def ratio(x):
            return 1 / x

        def main():
            return ratio(0)
    """

    result = call(source)

    assert outcome(result) == (RunStatus.ERROR, "", "ZeroDivisionError", "division by zero")
    assert result.traceback == (
        "Traceback (most recent call last):\n"
        '  File "add@3", line 5, in main\n'
        "    return ratio(0)\n"
        '  File "add@3", line 2, in ratio\n'
        "    return 1 / x\n"
        "ZeroDivisionError: division by zero\n"
    )


def test_the_traceback_counts_lines_as_python_does_despite_odd_line_breaks() -> None:
    # Form feeds and U+2028 end lines for str.splitlines but not for Python's tokenizer.
    result = call("# a\u2028b\x0cc\ndef main():\n    return 1 / 0\n")

    assert result.traceback == (
        "Traceback (most recent call last):\n"
        '  File "add@3", line 3, in main\n'
        "    return 1 / 0\n"
        "ZeroDivisionError: division by zero\n"
    )


def test_a_result_that_is_not_json_is_an_error() -> None:
    result = call("def main():\n    return {1, 2}\n")

    message = "result is not JSON-serializable: Object of type set is not JSON serializable"
    assert outcome(result) == (RunStatus.ERROR, "", "TypeError", message)
    assert result.traceback == ""


def test_arguments_must_be_a_json_object() -> None:
    result = asyncio.run(run(replace(job("def main():\n    pass\n"), args_json="[1, 2]")))

    message = "arguments must be a JSON object, not list"
    assert outcome(result) == (RunStatus.ERROR, "", "TypeError", message)


def test_arguments_must_match_the_signature() -> None:
    result = call("def main(a):\n    return a\n", {"b": 1})

    message = "main() got an unexpected keyword argument 'b'"
    assert outcome(result) == (RunStatus.ERROR, "", "TypeError", message)
    assert result.traceback == ""


def test_cant_use_too_much_time_and_keeps_what_was_printed_before() -> None:
    started = time.monotonic()
    result = call(
        "def main():\n    print('started')\n    while True:\n        pass\n", timeout_ms=1000
    )

    elapsed = time.monotonic() - started
    message = "wall-clock limit of 1000 ms exceeded"
    assert outcome(result) == (RunStatus.TIMEOUT, "", "TimeoutError", message)
    assert result.stdout == "started\n"
    assert 1000 <= result.duration_ms < 1500
    assert elapsed < 1.5


def test_cant_use_too_much_memory() -> None:
    source = """\
        def main():
            data = bytearray(600 * 1024 * 1024)
            return len(data)
    """

    result = call(source, memory_mb=256)

    message = "memory limit of 256 MiB exceeded"
    assert outcome(result) == (RunStatus.MEMORY_LIMIT, "", "MemoryError", message)
    assert result.traceback.endswith("    data = bytearray(600 * 1024 * 1024)\nMemoryError\n")


def test_reports_the_peak_memory() -> None:
    result = call("def main():\n    data = bytearray(100 * 1024 * 1024)\n    return len(data)\n")

    assert result.status is RunStatus.OK
    assert result.peak_memory_bytes >= 100 * 1024 * 1024


def test_the_peak_memory_counts_the_sandbox_process_only() -> None:
    ballast = bytearray(os.urandom(1024)) * (300 * 1024)  # 300 MiB resident in this parent
    result = call("def main():\n    return 1\n")

    assert result.status is RunStatus.OK
    assert 0 < result.peak_memory_bytes < 100 * 1024 * 1024 < len(ballast)


def test_cant_print_too_much() -> None:
    started = time.monotonic()
    result = call("def main():\n    for _ in range(100_000):\n        print('x' * 999)\n")

    message = "stdout passed the output limit of 65536 bytes"
    assert outcome(result) == (RunStatus.OUTPUT_LIMIT, "", "OutputLimitExceeded", message)
    assert result.stdout == ("x" * 999 + "\n") * 65 + "x" * 536
    assert time.monotonic() - started < 1.5


def test_cant_return_too_much() -> None:
    result = call("def main():\n    return 'x' * 100_000\n")

    message = "result passed the output limit of 65536 bytes"
    assert outcome(result) == (RunStatus.OUTPUT_LIMIT, "", "OutputLimitExceeded", message)


def test_a_crash_is_reported_as_such() -> None:
    # Nesting a million lazy maps makes the C code recurse until the stack overflows.
    source = """\
        def main():
            values = iter([1])
            for _ in range(1_000_000):
                values = map(abs, values)
            return next(values)
    """

    result = call(source)

    message = "the sandbox process was killed by SIGSEGV without reporting a result"
    assert outcome(result) == (RunStatus.CRASHED, "", "Crashed", message)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import importlib", "import of 'importlib' is not allowed"),
        ("import json\n    return json.codecs", "import of 'codecs' is not allowed"),
        ("from json import codecs", "import of 'codecs' is not allowed"),
        ("from . import sibling", "relative imports are not allowed"),
    ],
)
def test_cant_import_modules_outside_the_allow_list(source: str, message: str) -> None:
    result = call(f"def main():\n    {source}\n")

    assert result.status is RunStatus.ERROR
    assert result.error_type == "ImportError"
    assert result.error_message.startswith(message)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "import operator\ndef main():\n    return operator.attrgetter('__class__')(1)",
            "operator.attrgetter is not allowed in the sandbox",
        ),
        (
            "from operator import methodcaller\n"
            "def main():\n"
            "    return methodcaller('__sizeof__')(1)",
            "operator.methodcaller is not allowed in the sandbox",
        ),
        (
            "import typing\n"
            "def f(x: \"__import__('os').getcwd()\"):\n"
            "    pass\n"
            "def main():\n"
            "    return typing.get_type_hints(f, {})",
            "typing.get_type_hints is not allowed in the sandbox",
        ),
    ],
)
def test_cant_get_around_the_guards_through_allowed_modules(source: str, message: str) -> None:
    assert outcome(call(source)) == (RunStatus.ERROR, "", "ImportError", message)


def test_cant_reach_the_real_import_function() -> None:
    result = call("def main():\n    return __import__('os').getcwd()\n")

    message = 'Line 2: "__import__" is an invalid variable name because it starts with "_"'
    assert outcome(result) == (RunStatus.ERROR, "", "SyntaxError", message)


def test_cant_see_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLVAULT_SECRET", "hunter2")

    async def environment_of_a_running_sandbox() -> bytes:
        task = asyncio.create_task(run(job(BUSY)))
        pid = await running_sandbox(default_host_pid)
        environment = Path(f"/proc/{pid}/environ").read_bytes()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return environment

    assert asyncio.run(environment_of_a_running_sandbox()) == b""


def test_cancelling_kills_the_process_group_and_cleans_up() -> None:
    fds_before = warm()

    async def cancel_a_running_sandbox() -> int:
        task = asyncio.create_task(run(job(BUSY)))
        pid = await running_sandbox(default_host_pid)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    pid = asyncio.run(cancel_a_running_sandbox())

    assert not Path(f"/proc/{pid}").exists()  # killed and reaped
    assert children(default_host().pid) == []
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_a_finished_run_leaves_no_process_directory_or_fd_behind() -> None:
    fds_before = warm()
    workdirs = set(Path(tempfile.gettempdir()).glob("toolvault-*/*"))

    assert call("def main():\n    return 1\n").status is RunStatus.OK

    assert children(default_host().pid) == []
    # The working directory was a tmpfs of the sandbox's own mount namespace.
    assert set(Path(tempfile.gettempdir()).glob("toolvault-*/*")) == workdirs
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_runs_many_calls_at_once() -> None:
    async def twenty_at_once() -> list[RunResult]:
        jobs = [
            job("def main(n):\n    return n * n\n", {"n": n}, timeout_ms=20_000) for n in range(20)
        ]
        return await asyncio.gather(*(run(j) for j in jobs))

    results = asyncio.run(twenty_at_once())

    assert [outcome(result) for result in results] == [
        (RunStatus.OK, str(n * n), "", "") for n in range(20)
    ]
