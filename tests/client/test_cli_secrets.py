"""`toolvault secrets` and `publish --secret` against a real server with a secrets key.

Values come from standard input or a file, never the command line; no output shows one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import ServerProcess

RunCli = Callable[..., tuple[int, str, str]]
VALUE = "sk-cli-0123456789"
SOURCE = """\
from toolvault import secrets

def main():
    return "key " + secrets["API_KEY"]
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    server = ServerProcess(
        db=f"sqlite:///{tmp_path / 'db'}",
        data_dir=tmp_path,
        env={"TOOLVAULT_SECRETS_KEY": Fernet.generate_key().decode()},
    )
    server.start()
    yield server.address
    server.stop()


def test_a_secret_is_set_from_stdin_or_a_file_listed_used_and_deleted(
    server: str, cli: RunCli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = ("--server", server)
    monkeypatch.setattr("sys.stdin", io.StringIO(VALUE + "\n"))
    assert cli(*at, "secrets", "set", "team/API_KEY") == (0, "created secret team/API_KEY\n", "")
    file = tmp_path / "value.txt"
    file.write_text(VALUE + "-2\n")
    code, out, err = cli(*at, "--json", "secrets", "set", "team/API_KEY", "--from-file", str(file))
    assert (code, err, json.loads(out)["created"]) == (0, "", False)
    assert json.loads(out)["secret"]["name"] == "team/API_KEY"

    code, out, err = cli(*at, "secrets", "list")
    rows = [line.split() for line in out.splitlines()]
    assert (code, err, rows[0]) == (0, "", ["NAME", "CREATED", "UPDATED", "UPDATED", "BY"])
    assert [row[0] for row in rows[1:]] == ["team/API_KEY"]
    code, out, _ = cli(*at, "--json", "secrets", "list", "--namespace", "other")
    assert (code, json.loads(out)) == (0, [])

    script = tmp_path / "f.py"
    script.write_text(SOURCE)
    assert cli(*at, "publish", "team/f", str(script), "--secret", "API_KEY")[0] == 0
    code, out, _ = cli(*at, "--json", "get", "team/f")
    assert (code, json.loads(out)["secrets"]) == (0, ["API_KEY"])
    # The trailing newline of the file was dropped: the whole value is redacted.
    assert cli(*at, "invoke", "team/f") == (0, '"key ***"\n', "")

    assert cli(*at, "secrets", "delete", "team/API_KEY") == (0, "deleted secret team/API_KEY\n", "")
    code, _, err = cli(*at, "invoke", "team/f")
    assert code == 2 and "not set in namespace 'team': API_KEY" in err
    code, _, err = cli(*at, "secrets", "delete", "team/API_KEY")
    assert (code, err) == (2, "error: secret 'team/API_KEY' not found\n")


def test_a_value_on_the_command_line_is_a_usage_error(server: str, cli: RunCli) -> None:
    code, out, err = cli("--server", server, "secrets", "set", "API_KEY", VALUE)
    assert (code, out) == (2, "")
    assert "unrecognized arguments" in err
    assert cli("--server", server, "--json", "secrets", "list") == (0, "[]\n", "")


def test_a_bad_value_is_refused_with_the_servers_message(
    server: str, cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("abc\n"))
    code, _, err = cli("--server", server, "secrets", "set", "API_KEY")
    assert code == 2 and "value is 3 bytes, fewer than the minimum of 4" in err


def test_generate_key_prints_a_key_the_server_accepts(cli: RunCli) -> None:
    code, out, err = cli("secrets", "generate-key")
    assert (code, err) == (0, "")
    Fernet(out.strip())
