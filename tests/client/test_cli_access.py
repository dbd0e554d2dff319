"""`toolvault keys` and `toolvault audit` against a server that requires API keys."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from toolvault.client import Client

RunCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        db=f"sqlite:///{tmp_path / 'db'}", data_dir=tmp_path, extra_args=["--auth", "required"]
    )
    server.start()
    yield server
    server.stop()


def test_keys_are_created_listed_and_revoked_and_the_audit_shows_it(
    auth_server: ServerProcess, cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = ("--server", auth_server.address, "--api-key", auth_server.bootstrap_key())
    code, out, err = cli(
        *admin, "--json", "keys", "create", "--role", "invoker", "--namespace", "t"
    )
    assert (code, err) == (0, "")
    created = json.loads(out)
    assert re.fullmatch(r"tvk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", created["key"])
    assert (created["role"], created["namespaces"]) == ("invoker", ["t"])
    assert created["key"].startswith(created["prefix"] + "_")

    code, out, err = cli(*admin, "keys", "create", "--role", "agent", "--agent", "t/bot")
    assert code == 0 and re.fullmatch(r"tvk_\S+\n", out) and "shown only now" in err

    monkeypatch.setenv("TOOLVAULT_API_KEY", created["key"])
    assert cli("--server", auth_server.address, "functions") == (
        0,
        "NAME  LATEST  ALIASES  UPDATED  DESCRIPTION\n",
        "",
    )
    code, _, err = cli("--server", auth_server.address, "keys", "list")
    assert (code, err) == (2, "error: a key with role invoker may not call ListKeys\n")

    code, out, _ = cli(*admin, "keys", "list")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["PREFIX", "ROLE", "SCOPE", "CREATED", "REVOKED", "DESCRIPTION"]
    assert [row[1:3] for row in rows[1:]] == [["agent", "t/bot"], ["invoker", "t"], ["admin", "*"]]
    assert cli(*admin, "keys", "revoke", created["prefix"])[0] == 0
    code, _, err = cli("--server", auth_server.address, "functions")
    assert (code, err) == (2, "error: the API key is unknown or revoked\n")

    code, out, _ = cli(*admin, "--json", "audit", "--action", "key.revoke")
    (event,) = json.loads(out)
    assert (event["actor"], event["target"]) == (admin[3][:16], created["prefix"])
    code, out, _ = cli(*admin, "audit")
    assert [line.split()[2] for line in out.splitlines()[1:]] == [
        "key.revoke",
        "key.create",
        "key.create",
        "key.create",
    ]


def test_without_a_key_the_cli_says_how_to_send_one(
    auth_server: ServerProcess, cli: RunCli
) -> None:
    code, out, err = cli("--server", auth_server.address, "functions")
    assert (code, out) == (2, "")
    assert "requires an API key" in err and "--api-key or TOOLVAULT_API_KEY" in err
    # Health needs no key: orchestrators' probes carry none.
    assert cli("--server", auth_server.address, "health")[0] == 0


def test_keys_generate_prints_a_key_the_server_accepts(cli: RunCli, tmp_path: Path) -> None:
    code, out, _ = cli("keys", "generate")
    assert code == 0 and re.fullmatch(r"tvk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}\n", out)
    assert cli("keys", "generate")[1] != out
    key = out.strip()
    server = ServerProcess(
        db=f"sqlite:///{tmp_path / 'db'}",
        data_dir=tmp_path,
        extra_args=["--auth", "required"],
        env={"TOOLVAULT_ADMIN_KEY": key},
    )
    server.start()
    try:
        assert cli("--server", server.address, "--api-key", key, "keys", "list")[0] == 0
        with Client(server.address, api_key=key, retries=False) as client:
            assert [(k.prefix, k.role) for k in client.keys()] == [(key[:16], "admin")]
    finally:
        server.stop()
