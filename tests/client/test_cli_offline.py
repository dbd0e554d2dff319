"""The command line checks its input before talking to a server, and reports failures
with the documented exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

# The `cli` fixture (conftest.py): runs the CLI in-process, returns (exit code, out, err).
RunCli = Callable[..., tuple[int, str, str]]

TOOLVAULT = str(Path(sys.executable).parent / "toolvault")


def test_help_documents_the_exit_codes(cli: RunCli) -> None:
    code, out, _ = cli("--help")
    assert code == 0
    assert "exit codes:\n  0  success\n  1  the function failed" in out
    assert "  3  the server cannot be reached (UNAVAILABLE)\n" in out


def test_a_missing_command_is_a_usage_error(cli: RunCli) -> None:
    code, _, err = cli()
    assert code == 2
    assert "error: the following arguments are required: COMMAND" in err


def test_an_unknown_status_filter_is_a_usage_error_naming_the_valid_values(cli: RunCli) -> None:
    code, _, err = cli("history", "--status", "broken")
    assert code == 2
    assert (
        "argument --status: unknown execution status 'broken'; valid values: "
        "OK, ERROR, TIMEOUT, MEMORY_LIMIT, OUTPUT_LIMIT, CRASHED, CANCELLED"
    ) in err


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_a_history_limit_must_be_a_positive_integer(cli: RunCli, limit: str) -> None:
    code, _, err = cli("history", "--limit", limit)
    assert code == 2
    assert "argument --limit" in err


def test_publishing_an_unreadable_file_exits_2_naming_the_file(
    cli: RunCli, closed_address: str, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.py"
    code, out, err = cli("--server", closed_address, "publish", "add", str(missing))
    assert (code, out) == (2, "")
    assert err == f"error: cannot read {missing}: No such file or directory\n"


def test_publishing_with_an_invalid_schema_file_exits_2_naming_the_file(
    cli: RunCli, closed_address: str, tmp_path: Path
) -> None:
    source = tmp_path / "add.py"
    source.write_text("def main(a, b):\n    return a + b\n")
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": ')
    code, _, err = cli(
        "--server", closed_address, "publish", "add", str(source), "--input-schema", str(schema)
    )
    assert code == 2
    assert err.startswith(f"error: {schema} is not valid JSON: Expecting value: line 1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ('{"a": 1', "error: --args is not valid JSON: Expecting ',' delimiter: line 1 column 8"),
        ("[1, 2]", "error: --args must be a JSON object, not list"),
        ("@/nonexistent/args.json", "error: cannot read /nonexistent/args.json: No such file"),
    ],
)
def test_bad_invoke_arguments_exit_2_before_contacting_the_server(
    cli: RunCli, closed_address: str, args: str, message: str
) -> None:
    code, out, err = cli("--server", closed_address, "invoke", "add", "--args", args)
    assert (code, out) == (2, "")
    assert err.startswith(message)


def test_invoke_arguments_can_come_from_a_file(
    cli: RunCli, closed_address: str, tmp_path: Path
) -> None:
    args = tmp_path / "args.json"
    args.write_text("[]")
    code, _, err = cli("--server", closed_address, "invoke", "add", "--args", f"@{args}")
    assert (code, err) == (2, "error: --args must be a JSON object, not list\n")


def test_an_unreachable_server_exits_3(cli: RunCli, closed_address: str) -> None:
    code, out, err = cli("--server", closed_address, "functions")
    assert (code, out) == (3, "")
    assert err.startswith(f"error: cannot reach the server at {closed_address}: ")
    assert "failed to connect" in err.lower()


def test_health_of_an_unreachable_server_exits_3_as_every_command_does(
    cli: RunCli, closed_address: str
) -> None:
    code, out, err = cli("--server", closed_address, "health", "--timeout", "5")
    assert (code, err) == (3, "")
    assert out.startswith("UNREACHABLE (UNAVAILABLE: ")


def test_the_server_address_comes_from_the_environment(
    cli: RunCli, closed_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOLVAULT_SERVER", closed_address)
    code, _, err = cli("--json", "history")
    assert code == 3
    assert json.loads(err)["error"].startswith(f"cannot reach the server at {closed_address}: ")


def test_json_after_the_command_is_accepted_and_errors_are_json_on_stderr(
    cli: RunCli, closed_address: str
) -> None:
    code, out, err = cli("--server", closed_address, "functions", "--json")
    assert (code, out) == (3, "")
    error = json.loads(err)
    assert error["code"] == "UNAVAILABLE"
    assert error["error"].startswith(f"cannot reach the server at {closed_address}: ")
    assert cli("invoke", "--json", "add", "--args", "[1]") == (
        2,
        "",
        '{"error": "--args must be a JSON object, not list", "code": "USAGE"}\n',
    )
    code, out, err = cli("--json", "history", "--limit", "0")
    assert (code, out) == (2, "")
    assert json.loads(err) == {
        "error": "argument --limit: must be a positive integer: 0",
        "code": "USAGE",
    }


def test_without_json_a_bad_command_line_shows_the_usage_of_its_command(cli: RunCli) -> None:
    code, out, err = cli("history", "--limit", "0")
    assert (code, out) == (2, "")
    assert err.startswith("usage: toolvault history [-h]")
    assert err.endswith("history: error: argument --limit: must be a positive integer: 0\n")


def fake_server_cli(calls: list[tuple[str, dict[str, object]]]) -> types.ModuleType:
    module = types.ModuleType("toolvault.server.cli")

    def serve(**options: object) -> int:
        calls.append(("serve", options))
        return 0

    def db_upgrade(**options: object) -> int:
        calls.append(("db_upgrade", options))
        return 1

    module.serve = serve  # type: ignore[attr-defined]
    module.db_upgrade = db_upgrade  # type: ignore[attr-defined]
    return module


def test_serve_and_db_upgrade_hand_over_to_the_server_with_only_the_options_given(
    cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setitem(sys.modules, "toolvault.server.cli", fake_server_cli(calls))
    assert cli("serve", "--listen", "127.0.0.1:0", "--metrics-port", "9100")[0] == 0
    assert cli("serve", "--plugin", "a:Audit", "--plugin", "b.c:quota")[0] == 0
    assert cli("serve", "--auth", "required", "--tls-cert", "c.pem", "--tls-key", "k.pem")[0] == 0
    assert cli("serve", "--tls-client-ca", "ca.pem", "--insecure")[0] == 0
    assert cli("db", "upgrade", "--db", "sqlite:///x.db", "--data-dir", "/tmp/x")[0] == 1
    unset = dict.fromkeys(
        ("listen", "db", "data_dir", "metrics_port", "plugins", "auth", "tls_cert", "tls_key")
        + ("tls_client_ca", "insecure")
    )
    assert calls == [
        ("serve", {**unset, "listen": "127.0.0.1:0", "metrics_port": 9100}),
        ("serve", {**unset, "plugins": ("a:Audit", "b.c:quota")}),
        ("serve", {**unset, "auth": "required", "tls_cert": "c.pem", "tls_key": "k.pem"}),
        ("serve", {**unset, "tls_client_ca": "ca.pem", "insecure": True}),
        ("db_upgrade", {"db": "sqlite:///x.db", "data_dir": "/tmp/x"}),
    ]


@pytest.mark.parametrize("command", [["serve"], ["db", "upgrade"]])
def test_server_commands_without_the_server_installed_exit_2_saying_how_to_install_it(
    cli: RunCli, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "toolvault.server.cli", None)
    code, _, err = cli(*command)
    assert code == 2
    assert err.startswith(
        "error: the server is not installed: pip install '.[server]' from a checkout, "
        "or 'toolvault[server]' from a package index ("
    )


def test_keys_generate_needs_no_server_installed(
    cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "toolvault.server", None)
    monkeypatch.setitem(sys.modules, "toolvault.server.cli", None)
    code, out, err = cli("keys", "generate")
    assert (code, err) == (0, "")
    assert re.fullmatch(r"tvk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}\n", out)


def test_the_cli_runs_as_an_executable_and_as_python_dash_m(closed_address: str) -> None:
    for command in ([TOOLVAULT], [sys.executable, "-m", "toolvault.cli"]):
        result = subprocess.run(
            [*command, "--server", closed_address, "get", "add"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 3, result.stderr
        assert result.stderr.startswith("error: cannot reach the server at ")


@pytest.mark.parametrize("command", [["keys", "generate"], ["--help"]])
def test_output_into_a_closed_pipe_exits_quietly(command: list[str]) -> None:
    # As `toolvault ... | head` once head has gone: the reading end is closed first, so
    # every write fails with EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [TOOLVAULT, *command], stdout=write_end, stderr=subprocess.PIPE, timeout=30
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, b"")
