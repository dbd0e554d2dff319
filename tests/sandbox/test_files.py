"""Files in and out of real sandboxes: the job's files, out/, open(), and the report's checks."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import pytest

from toolvault.sandbox import File, Job, Limits, RunResult, RunStatus, SandboxHost
from toolvault.sandbox._runner import _parse_report, _report_cap

LIMITS = Limits(
    timeout_ms=5_000,
    memory_mb=256,
    max_output_bytes=64 * 1024,
    max_files=2,
    max_file_bytes=100,
    max_files_bytes=150,
)
# What a call sees of its working directory, then it leaves files everywhere it can.
LOOK_AND_LEAVE = """\
def main(leave):
    found = {}
    for name in ("data.csv", "left.txt", "out/left.txt"):
        try:
            with open(name) as file:
                found[name] = file.read()
        except FileNotFoundError:
            found[name] = None
    for name in leave:
        with open(name, "w") as file:
            file.write("left")
    return found
"""


@pytest.fixture(scope="module")
def host() -> Iterator[SandboxHost]:
    host = SandboxHost(preload=("csv",))
    yield host
    asyncio.run(host.close())


def job(source: str, args: dict[str, object], files: tuple[File, ...] = ()) -> Job:
    return Job(source, "main", json.dumps(args), ("csv",), LIMITS, files=files)


def run_all(host: SandboxHost, *jobs: Job, worker_key: str | None = None) -> list[RunResult]:
    async def runs() -> list[RunResult]:
        return [await host.run(job, worker_key=worker_key) for job in jobs]

    return asyncio.run(runs())


@pytest.mark.parametrize("worker_key", [None, "k"])
def test_a_calls_files_are_not_visible_to_the_next_call(
    host: SandboxHost, worker_key: str | None
) -> None:
    first, second = run_all(
        host,
        job(LOOK_AND_LEAVE, {"leave": ["out/left.txt"]}, (File("data.csv", b"a,b\n"),)),
        job(LOOK_AND_LEAVE, {"leave": []}),
        worker_key=worker_key,
    )
    assert first.status is RunStatus.OK, first.error_message
    assert json.loads(first.result_json) == {
        "data.csv": "a,b\n",
        "left.txt": None,
        "out/left.txt": None,
    }
    assert first.files == (File("left.txt", b"left"),)
    assert second.status is RunStatus.OK, second.error_message
    assert json.loads(second.result_json) == dict.fromkeys(("data.csv", "left.txt", "out/left.txt"))
    assert second.files == ()
    if worker_key is not None:
        assert first.warm and second.warm


def test_a_csv_is_read_with_the_csv_module(host: SandboxHost) -> None:
    source = """\
import csv
def main():
    with open("data.csv", newline="") as data:
        rows = list(csv.DictReader(data))
    with open("out/total.txt", "w") as out:
        out.write(str(sum(int(row["n"]) for row in rows)))
    return rows
"""
    (result,) = run_all(host, job(source, {}, (File("data.csv", b"n,m\n1,x\n2,y\n"),)))
    assert result.status is RunStatus.OK, result.error_message
    assert json.loads(result.result_json) == [{"n": "1", "m": "x"}, {"n": "2", "m": "y"}]
    assert result.files == (File("total.txt", b"3"),)


def report(**fields: object) -> bytes:
    """A report as the sandbox process encodes one (an OK run of 1), with ``fields`` changed."""
    return json.dumps(
        {
            "status": "ok",
            "result_json": "1",
            "error_type": "",
            "error_message": "",
            "traceback": "",
            "peak_memory_bytes": 0,
            **fields,
        },
        ensure_ascii=False,
    ).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("files", "over"),
    [
        ([["a", ""], ["b", ""], ["c", ""]], "out/ holds 3 files, more than the limit of 2"),
        ([["a", b64(b"x" * 101)]], "out/ holds out/a of 101 bytes, over the limit of 100"),
        (
            [["a", b64(b"x" * 100)], ["b", b64(b"x" * 51)]],
            "out/ holds files of 151 bytes, more than the limit of 150",
        ),
    ],
)
def test_a_report_with_files_over_the_caps_keeps_none_and_says_which(
    files: list[list[str]], over: str
) -> None:
    parsed, problem = _parse_report(report(files=files), LIMITS)
    assert problem == "" and parsed is not None
    assert parsed["files"] == ()
    assert parsed["files_over"].startswith(over)


def test_a_report_keeps_files_within_the_caps_as_values() -> None:
    files = [["a", b64(b"x" * 100)], ["b", b64(b"y" * 50)]]
    parsed, problem = _parse_report(report(files=files), LIMITS)
    assert problem == "" and parsed is not None
    assert parsed["files"] == (File("a", b"x" * 100), File("b", b"y" * 50))
    assert parsed["files_over"] == ""


def test_a_memory_limit_report_has_no_files() -> None:
    parsed, _ = _parse_report(report(status="memory_limit", files=[["a", b64(b"x")]]), LIMITS)
    assert parsed is not None and parsed["files"] == ()


def test_the_report_pipe_holds_an_honest_report_with_files_at_their_caps() -> None:
    # Every character as long as it gets: quotes and backslashes escaped, control
    # characters as \u escapes; the result's text at the output cap.
    files = [['"' * 255, b64(b"\xff" * 75)], ["\\" * 255, b64(b"\xff" * 75)]]
    honest = report(
        result_json='"' + "\\\\" * ((LIMITS.max_output_bytes - 2) // 2) + '"',
        error_message="\x01" * 2_000,
        files=files,
        files_problem="\x01" * 2_000,
    )
    assert len(honest) <= _report_cap(LIMITS)
