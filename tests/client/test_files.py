"""Files in and out end to end: a server with small file caps, driven by the SDK and the CLI.

The examples of the README run as published: a CSV summarizer that reads the file the
call passes, and a chart maker that leaves an SVG in out/.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess
from toolvault.cli._files import save_outputs
from toolvault.cli._input import UsageError
from toolvault.client import (
    AgentSpec,
    Client,
    Execution,
    ExecutionFile,
    ExecutionStatus,
    InvalidArgument,
)

EXAMPLES = Path(__file__).parents[2] / "examples" / "functions"
CSV = b"city,temp\nOslo,3\nRome,15\nOslo,4\n"
CHART = {"labels": ["Oslo", "Rome"], "values": [3.5, 15], "title": "Mean <temp>"}
# The server's caps in these tests: small, so that going over them costs nothing.
CAPS = {"TOOLVAULT_MAX_FILES": "3", "TOOLVAULT_MAX_FILE_BYTES": "1000"}
WRITE = """\
def main(names, size):
    for name in names:
        with open("out/" + name, "w") as file:
            file.write("x" * size)
    return len(names)
"""


@pytest.fixture
def files_server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        db=db_url,
        data_dir=tmp_path / "data",
        env={**CAPS, "TOOLVAULT_MAX_FILES_BYTES": "2000", "TOOLVAULT_FILE_RETENTION_S": "3600"},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(files_server: ServerProcess) -> Iterator[Client]:
    # The SDK's own checks off: these tests are about the server's.
    with Client(
        files_server.address, max_files=None, max_file_bytes=None, max_files_bytes=None
    ) as client:
        yield client


def publish_examples(client: Client) -> None:
    for name in ("csv_summary", "svg_chart"):
        client.publish(name, (EXAMPLES / f"{name}.py").read_text())


def test_a_csv_goes_in_and_an_svg_comes_out(client: Client) -> None:
    publish_examples(client)

    summary = client.invoke("csv_summary", files={"data.csv": CSV})
    assert summary.status is ExecutionStatus.OK, summary.error
    assert summary.result == {
        "rows": 3,
        "columns": {
            "city": {"distinct": 2, "most_common": "Oslo"},
            "temp": {"count": 3, "min": 3.0, "max": 15.0, "mean": 22 / 3},
        },
    }
    digest = hashlib.sha256(CSV).hexdigest()
    assert summary.files == (ExecutionFile("in", "data.csv", len(CSV), digest),)
    assert summary.output_files == {}

    chart = client.invoke("svg_chart", CHART)
    assert chart.status is ExecutionStatus.OK, chart.error
    svg = chart.output_files["chart.svg"]
    assert svg.startswith(b'<svg xmlns="http://www.w3.org/2000/svg"')
    assert b"Mean &lt;temp&gt;" in svg and svg.count(b"<rect") == 2
    out = ExecutionFile("out", "chart.svg", len(svg), hashlib.sha256(svg).hexdigest())
    assert chart.files == (out,)

    # The history has the files' metadata; their bytes only when asked for.
    assert client.execution(summary.execution_id).files == summary.files
    recorded = client.execution(chart.execution_id)
    assert recorded.files == (out,) and recorded.output_files == {}
    assert client.execution(chart.execution_id, include_files=True).output_files == {
        "chart.svg": svg
    }
    listed = {e.execution_id: e for e in client.history()}
    assert listed[chart.execution_id].files == (out,)
    assert listed[chart.execution_id].output_files == {}


REFUSED = [
    ({"a": b"", "b": b"", "c": b"", "d": b""}, "files: 4 files, more than the limit of 3"),
    ({"big.csv": b"x" * 1001}, "files: 'big.csv' is 1001 bytes, more than the limit of 1000"),
    ({"a": b"x" * 1000, "b": b"x" * 1000, "c": b"x"}, "files: 2001 bytes together, more than"),
    ({"data/../etc": b""}, "files: the name 'data/../etc' holds '/'"),
    ({"a\\b": b""}, "files: the name 'a\\\\b' holds '\\\\'"),
    ({"": b""}, "files: the name '' is empty"),
    ({".hidden": b""}, "files: the name '.hidden' starts with \".\""),
    ({"..": b""}, "files: the name '..' starts with \".\""),
    # Refused where the server refuses NUL in every string of a request.
    ({"a\x00b": b""}, "files[0].name contains a NUL character"),
    ({"a\nb": b""}, "files: the name 'a\\nb' holds '\\n'"),
    ({"é" * 128: b""}, "is 256 bytes long, more than 255"),
    ({"out": b""}, "files: the name 'out' is taken"),
]


def test_files_over_the_caps_or_badly_named_are_refused_before_the_run(client: Client) -> None:
    publish_examples(client)
    for files, message in REFUSED:
        with pytest.raises(InvalidArgument) as info:
            client.invoke("csv_summary", files=files)
        assert message in str(info.value)
    assert client.history() == []  # nothing ran, nothing recorded


def test_the_sdk_refuses_files_over_its_caps_before_sending(closed_address: str) -> None:
    with Client(closed_address, max_files=1, max_file_bytes=10, max_files_bytes=15) as client:
        for files, message in (
            ({"a": b"", "b": b""}, "files: 2 files, more than the limit of 1"),
            ({"a": b"x" * 11}, "files: 'a' is 11 bytes, more than the limit of 10 bytes a file"),
        ):
            with pytest.raises(InvalidArgument, match=message):
                client.invoke("f", files=files)
    with Client(closed_address, max_file_bytes=10, max_files_bytes=15) as client:
        with pytest.raises(InvalidArgument, match="16 bytes together, more than the limit of 15"):
            client.invoke("f", files={"a": b"x" * 8, "b": b"x" * 8})


def test_output_files_over_the_caps_end_the_run_with_output_limit(client: Client) -> None:
    client.publish("write", WRITE)
    for args, message in (
        ({"names": ["a", "b", "c", "d"], "size": 1}, "out/ holds 4 files, more than the limit"),
        ({"names": ["a"], "size": 1001}, "out/ holds out/a of 1001 bytes, over 1000 a file"),
        ({"names": ["a", "b", "c"], "size": 1000}, "out/ holds files over the limit of 2000"),
    ):
        execution = client.invoke("write", args)
        assert execution.status is ExecutionStatus.OUTPUT_LIMIT
        assert execution.error is not None and message in execution.error.message
        assert execution.output_files == {} and execution.files == ()


def test_a_function_cannot_write_its_input_files_or_outside_out(client: Client) -> None:
    source = """\
def main():
    found = {}
    for path, mode in (("data.csv", "w"), ("data.csv", "a"), ("data.csv", "r+"),
                       ("new.txt", "w"), ("/tmp/x", "w"), ("/etc/passwd", "r"),
                       ("../x", "r"), ("out/../data.csv", "r"), ("./data.csv", "r"),
                       ("out/sub/x", "w"), ("out/.x", "w"), ("out//x", "w"), ("", "r")):
        try:
            open(path, mode)
            found[path + " " + mode] = "opened"
        except PermissionError:
            found[path + " " + mode] = "PermissionError"
        except OSError:
            found[path + " " + mode] = "OSError"
    with open("data.csv") as data:
        found["read"] = data.read()
    return found
"""
    client.publish("escape", source)
    execution = client.invoke("escape", files={"data.csv": b"a,b\n"})
    assert execution.status is ExecutionStatus.OK, execution.error
    found = execution.result
    assert found.pop("read") == "a,b\n"
    # "" is a bad file name too: every attempt is refused, none opened anything.
    assert set(found.values()) == {"PermissionError"}, found
    assert execution.output_files == {}


def test_output_file_contents_are_deleted_after_the_retention_period(
    db_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(
        db=db_url, data_dir=tmp_path / "data", env={"TOOLVAULT_FILE_RETENTION_S": "1"}
    )
    server.start()
    try:
        with Client(server.address) as client:
            client.publish("write", WRITE)
            first = client.invoke("write", {"names": ["a.txt"], "size": 3})
            assert first.output_files == {"a.txt": b"xxx"}
            time.sleep(1.5)  # past the retention period (kept before: see test_files_history)
            second = client.invoke("write", {"names": ["b.txt"], "size": 3})
            assert second.output_files == {"b.txt": b"xxx"}
            expired = client.execution(first.execution_id, include_files=True)
            # The metadata stays; the bytes are gone.
            assert [file.name for file in expired.files] == ["a.txt"]
            assert expired.output_files == {}
    finally:
        server.stop()
    assert stored_outputs(db_url) == ["b.txt"]


def stored_outputs(db_url: str) -> list[str]:
    """The names of the output files whose bytes the database still holds."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text("SELECT name FROM execution_outputs"))
            return sorted(name for (name,) in rows)
    finally:
        engine.dispose()


def test_an_agents_tool_call_passes_files_and_gets_the_outputs(client: Client) -> None:
    publish_examples(client)
    client.create_agent(AgentSpec(name="analyst", tools=("csv_summary", "svg_chart")))

    summary = client.call_tool("analyst", "csv_summary", files={"data.csv": CSV})
    assert not summary.is_error, summary.text
    assert json.loads(summary.text)["rows"] == 3
    assert [file.name for file in summary.execution.files] == ["data.csv"]
    chart = client.call_tool("analyst", "svg_chart", CHART)
    assert chart.execution.output_files["chart.svg"].startswith(b"<svg")
    assert chart.execution.agent == "analyst"


def test_the_cli_passes_files_and_saves_the_outputs(
    client: Client, files_server: ServerProcess, cli: Callable[..., Any], tmp_path: Path
) -> None:
    publish_examples(client)
    data = tmp_path / "data.csv"
    data.write_bytes(CSV)
    server = ("--server", files_server.address)

    code, out, _ = cli(*server, "invoke", "csv_summary", "--file", str(data))
    assert code == 0 and '"rows": 3' in out

    code, out, err = cli(*server, "--json", "invoke", "svg_chart", "--args", json.dumps(CHART))
    assert code == 0
    recorded = json.loads(out)
    svg = base64.b64decode(recorded["output_files"]["chart.svg"])
    assert svg.startswith(b"<svg")

    code, out, err = cli(*server, "execution", recorded["execution_id"])
    assert code == 0
    assert re.search(rf"^out\s+chart\.svg\s+{len(svg)}\s+[0-9a-f]{{64}}$", out, re.M), out

    saved = tmp_path / "saved"
    code, _, err = cli(*server, "execution", recorded["execution_id"], "--save", str(saved))
    assert code == 0, err
    assert (saved / "chart.svg").read_bytes() == svg
    assert f"saved {saved / 'chart.svg'}" in err

    # An existing file stays unless --force; a symlink in its place is never followed.
    (saved / "chart.svg").write_bytes(b"mine")
    code, _, err = cli(*server, "execution", recorded["execution_id"], "--save", str(saved))
    assert code != 0 and "exists: pass --force to replace it" in err
    assert (saved / "chart.svg").read_bytes() == b"mine"
    code, _, err = cli(
        *server, "execution", recorded["execution_id"], "--save", str(saved), "--force"
    )
    assert code == 0 and (saved / "chart.svg").read_bytes() == svg
    target = tmp_path / "target"
    target.write_bytes(b"untouched")
    (saved / "chart.svg").unlink()
    (saved / "chart.svg").symlink_to(target)
    code, _, err = cli(
        *server, "execution", recorded["execution_id"], "--save", str(saved), "--force"
    )
    assert code != 0 and "cannot write" in err
    assert target.read_bytes() == b"untouched"

    # invoke --save in one go.
    code, _, err = cli(
        *server, "invoke", "svg_chart", "--args", json.dumps(CHART), "--save", str(tmp_path / "b")
    )
    assert code == 0 and (tmp_path / "b" / "chart.svg").read_bytes() == svg


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/b", "..", ".", "", "a\\b"])
def test_save_never_writes_outside_its_directory(tmp_path: Path, name: str) -> None:
    # As from a server that broke its own rules: names are checked again before writing.
    execution = dataclasses.replace(
        EMPTY,
        files=(ExecutionFile("out", name, 1, "0" * 64),),
        output_files={name: b"x"},
    )
    with pytest.raises(UsageError, match="not a plain file name"):
        save_outputs(execution, str(tmp_path / "dir"), force=True)
    assert [p.name for p in tmp_path.rglob("*")] == ["dir"]


EMPTY = Execution(
    execution_id="e",
    function_name="f",
    version=1,
    sha256="0" * 64,
    status=ExecutionStatus.OK,
    result=None,
    result_json="",
    args={},
    args_json="{}",
    stdout="",
    stderr="",
    error=None,
    started_at=datetime.now(UTC),
    duration_ms=0.0,
    cpu_time_ms=0.0,
    peak_memory_bytes=0,
    caller="",
    args_truncated=False,
    result_truncated=False,
)
