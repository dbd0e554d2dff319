"""`toolvault serve` and `toolvault db upgrade` as a user runs them."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TOOLVAULT, ServerProcess
from toolvault.server.config import Settings

README = Path(__file__).parents[2] / "README.md"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TOOLVAULT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_serve_without_options_uses_a_sqlite_file_in_the_default_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    server = ServerProcess(db="", data_dir=tmp_path, env={"HOME": str(tmp_path)})
    server.start(command=[TOOLVAULT, "serve", "--listen", "127.0.0.1:0"])
    try:
        assert "database sqlite:///" in "".join(server.log)
        assert (tmp_path / ".local" / "share" / "toolvault" / "toolvault.db").is_file()
    finally:
        assert server.stop() == 0


def test_environment_variables_configure_the_server_and_flags_win(tmp_path: Path) -> None:
    env = {"TOOLVAULT_DATA_DIR": str(tmp_path / "env"), "TOOLVAULT_LISTEN": "127.0.0.1:1"}
    server = ServerProcess(db="", data_dir=tmp_path, env=env)
    server.start(command=[TOOLVAULT, "serve", "--listen", "127.0.0.1:0"])
    try:
        assert server.address != "127.0.0.1:1"
        assert (tmp_path / "env" / "toolvault.db").is_file()
    finally:
        server.stop()


def test_the_readmes_configuration_table_lists_every_setting_and_only_settings() -> None:
    section = README.read_text().split("## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = "\n".join(line for line in section.splitlines() if line.startswith("| "))
    documented = set(re.findall(r"`TOOLVAULT_([A-Z_]+)`", rows))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_a_bad_setting_is_named_and_exits_2(tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--data-dir", str(tmp_path), env={"TOOLVAULT_DEFAULT_TIMEOUT_MS": "soon"}
    )
    assert result.returncode == 2
    assert "default_timeout_ms (TOOLVAULT_DEFAULT_TIMEOUT_MS)" in result.stderr
    result = run_cli("serve", "--listen", "nowhere", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "listen (TOOLVAULT_LISTEN): Value error, expected HOST:PORT, got 'nowhere'" in (
        result.stderr
    )
    result = run_cli(
        "serve", "--data-dir", str(tmp_path), env={"TOOLVAULT_FRESH_NAMESPACES": "team,Ops"}
    )
    assert result.returncode == 2
    assert (
        "fresh_namespaces (TOOLVAULT_FRESH_NAMESPACES): Value error, 'Ops' is not a namespace"
        in result.stderr
    )


def test_a_port_in_use_is_reported_and_exits_1(tmp_path: Path, busy_port: int) -> None:
    result = run_cli("serve", "--listen", f"127.0.0.1:{busy_port}", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert (
        f"cannot listen on 127.0.0.1:{busy_port}: the port is in use; choose another address "
        "with --listen (TOOLVAULT_LISTEN), and point clients at it with --server"
    ) in result.stderr


def test_db_upgrade_creates_the_schema_and_is_repeatable(db_url: str) -> None:
    for _ in range(2):
        result = run_cli("db", "upgrade", "--db", db_url)
        assert result.returncode == 0, result.stderr
        assert "database at head" in result.stdout


def test_an_unreachable_database_is_reported_and_exits_1(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    result = run_cli("db", "upgrade", "--db", url)
    assert result.returncode == 1
    assert "error: database upgrade failed" in result.stderr
    result = run_cli("serve", "--listen", "127.0.0.1:0", "--db", url, "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "database error" in result.stderr
