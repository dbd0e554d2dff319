"""The `toolvault` command against a real server: plain-text and --json output, exit codes."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from toolvault.client import AgentSpec, Client, Execution, Function, FunctionVersion

# The `cli` fixture (conftest.py): runs the CLI in-process, returns (exit code, out, err).
RunCli = Callable[..., tuple[int, str, str]]

ADD = '''def main(a, b):
    """Adds two numbers."""
    print("adding", a, "and", b)
    return a + b
'''
DIVIDE = '''def main(x):
    """Divides one by x."""
    return 1 / x
'''


def words(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    (tmp_path / "add.py").write_text(ADD)
    (tmp_path / "divide.py").write_text(DIVIDE)
    return tmp_path


def test_the_cli_publishes_invokes_and_lists_in_plain_text(
    server: str, cli: RunCli, sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        return cli("--server", server, *args)

    code, out, err = run("publish", "add", str(sources / "add.py"))
    assert (code, err) == (0, "")
    name, version, sha256, state = out.splitlines()
    assert (name, version, state) == ("name:    add", "version: 1", "state:   created")
    sha = sha256.removeprefix("sha256:  ")
    assert len(sha) == 64

    monkeypatch.setattr(sys, "stdin", io.StringIO(ADD))
    assert run("publish", "add", "-") == (
        0,
        f"name:    add\nversion: 1\nsha256:  {sha}\nstate:   unchanged\n",
        "",
    )

    assert run("invoke", "add", "--args", '{"a": 1, "b": 2}') == (
        0,
        "3\n--- stdout ---\nadding 1 and 2\n",
        "",
    )
    assert run("publish", "divide", str(sources / "divide.py"))[0] == 0
    code, out, err = run("invoke", "divide", "--args", '{"x": 0}')
    assert (code, out) == (1, "")
    assert err.startswith(
        "the function failed with status ERROR: ZeroDivisionError: division by zero\n"
    )
    assert "line 3" in err
    code, out, err = run("invoke", "add@7")
    assert (code, out) == (2, "")
    assert err.startswith("error: ")

    code, out, _ = run("alias", "add", "prod", "1")
    assert code == 0
    assert ["aliases:", '{"prod":', "1}"] in words(out)
    code, out, _ = run("get", "add@prod")
    assert code == 0
    assert ["sha256:", sha] in words(out)
    assert ["entrypoint:", "main"] in words(out)
    assert out.endswith("source:\n" + "".join(f"    {line}\n" for line in ADD.splitlines()))

    code, out, _ = run("functions")
    header, add_row, divide_row = out.splitlines()
    assert header.split() == ["NAME", "LATEST", "ALIASES", "UPDATED", "DESCRIPTION"]
    assert add_row.split()[:3] == ["add", "1", "prod=1"]
    assert add_row.endswith("  Adds two numbers.")
    assert divide_row.split()[0] == "divide"

    code, out, _ = run("versions", "add")
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["VERSION", "SHA256"],
        ["1", sha[:12]],
    ]

    code, out, _ = run("history")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["ID", "STATUS", "FUNCTION", "VERSION", "STARTED", "MS", "ERROR"]
    assert [row[1:4] for row in rows[1:]] == [["ERROR", "divide", "1"], ["OK", "add", "1"]]
    assert out.splitlines()[1].endswith("  ZeroDivisionError: division by zero")
    code, out, _ = run("history", "add", "--status", "ok", "--limit", "1")
    ok_id = out.splitlines()[1].split()[0]
    code, out, _ = run("execution", ok_id)
    assert code == 0
    assert ["execution_id:", ok_id] in words(out)
    assert ["status:", "OK"] in words(out)
    assert ["result_json:", "3"] in words(out)

    assert run("unalias", "add", "prod") == (0, "removed alias add@prod\n", "")
    assert run("delete", "add") == (0, "deleted add (versions: 1)\n", "")
    code, _, err = run("get", "add")
    assert code == 2
    assert err.startswith("error: ")


def test_the_cli_json_output_uses_the_sdk_field_names(
    server: str, cli: RunCli, sources: Path
) -> None:
    def run(*args: str) -> tuple[int, Any]:
        code, out, err = cli("--server", server, "--json", *args)
        assert err == "" or code != 0, err
        return code, json.loads(out)

    code, published = run(
        "publish", "add", str(sources / "add.py"), "--allow-import", "math", "--timeout-ms", "3000"
    )
    assert code == 0
    assert list(published) == [f.name for f in fields(FunctionVersion)]
    assert (published["version"], published["created"]) == (1, True)
    assert (published["allowed_imports"], published["limits"]["timeout_ms"]) == (["math"], 3000)
    assert datetime.fromisoformat(published["created_at"]).utcoffset() is not None

    code, ran = run("invoke", "add", "--args", '{"a": 2, "b": 3}')
    assert code == 0
    assert list(ran) == [f.name for f in fields(Execution)]
    assert (ran["status"], ran["result"], ran["args"], ran["error"]) == (
        "OK",
        5,
        {"a": 2, "b": 3},
        None,
    )
    assert run("publish", "divide", str(sources / "divide.py"))[0] == 0
    code, failed = run("invoke", "divide", "--args", '{"x": 0}')
    assert code == 1
    assert (failed["status"], failed["error"]["type"]) == ("ERROR", "ZeroDivisionError")

    assert run("history") == (0, [failed, ran])
    assert run("history", "--status", "ERROR") == (0, [failed])
    assert run("execution", ran["execution_id"]) == (0, ran)
    code, got = run("get", "add@1")
    assert (code, got) == (0, {**published, "created": False})

    code, functions = run("functions")
    assert list(functions[0]) == [f.name for f in fields(Function)]
    assert [f["name"] for f in functions] == ["add", "divide"]
    code, versions = run("versions", "add")
    assert [(v["version"], v["source"]) for v in versions] == [(1, "")]
    assert run("alias", "add", "prod", "1")[1]["aliases"] == {"prod": 1}
    assert run("unalias", "add", "prod") == (0, {"name": "add", "alias": "prod"})
    assert run("delete", "add") == (0, {"name": "add", "deleted_versions": 1})


def test_json_may_follow_the_command_and_a_rejection_is_json_on_stderr(
    server: str, cli: RunCli
) -> None:
    assert cli("--server", server, "functions", "--json") == (0, "[]\n", "")
    assert cli("--server", server, "get", "nope", "--json") == (
        2,
        "",
        '{"error": "function \'nope\' not found", "code": "NOT_FOUND"}\n',
    )


def test_refused_arguments_are_named_as_the_user_gave_them_not_by_the_wire_field(
    server: str, cli: RunCli, sources: Path
) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        return cli("--server", server, *args)

    schema = sources / "schema.json"
    schema.write_text('{"type": "object", "properties": {"a": {"type": "integer"}}}')
    assert run("publish", "add", str(sources / "add.py"), "--input-schema", str(schema))[0] == 0
    with Client(server) as client:
        client.create_agent(AgentSpec(name="calc", tools=("add",)))
    for command in (("invoke", "add"), ("agents", "call", "calc", "add")):
        code, out, err = run(*command, "--args", '{"a": "one", "b": 2}')
        assert (code, out) == (2, "")
        assert err.startswith("error: --args does not match the input schema: $.a: 'one' is not")
        code, _, err = run(*command, "--args", '{"a": ' * 70 + "1" + "}" * 70)
        assert (code, err.startswith("error: --args is nested more than 64 levels")) == (2, True)

    code, out, _ = run("--json", "invoke", "add", "--args", '{"a": 1, "b": 2}')
    code, out, _ = run("execution", json.loads(out)["execution_id"])
    assert ["arguments:", '{"a":', "1,", '"b":', "2}"] in words(out)
    assert ["arguments_truncated:", "False"] in words(out)
    assert "args" not in out
