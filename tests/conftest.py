"""Fixtures shared by every test package: databases and real server processes.

Each test session creates its own PostgreSQL database with a random name (the server on
127.0.0.1:5432 is shared by every run on the machine) and drops it afterwards.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

PG_ADMIN_URL = os.environ.get("TOOLVAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TOOLVAULT = str(Path(sys.executable).parent / "toolvault")
LISTENING = re.compile(r"listening on (\S+:\d+)")
BOOTSTRAP = re.compile(r"bootstrap admin key \(shown once, store it now\): (tvk_\S+)")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped at the end."""
    name = f"toolvault_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database for each backend: a SQLite file, then a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'toolvault.db'}"
    url: str = request.getfixturevalue("pg_url")
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{url}?options=-csearch_path%3D{schema}"


@dataclass
class ServerProcess:
    """A `toolvault serve` process on a free loopback port."""

    db: str
    data_dir: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    address: str = ""
    log: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    pump: threading.Thread | None = None

    def start(self, timeout: float = 30.0, command: list[str] | None = None) -> str:
        """Start the server (by default on this db and data dir) and return its address."""
        cmd = command or [
            *(TOOLVAULT, "serve", "--listen", "127.0.0.1:0", "--db", self.db),
            *("--data-dir", str(self.data_dir), *self.extra_args),
        ]
        self.log = []
        self.process = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.env},
        )
        found = threading.Event()
        self.pump = threading.Thread(target=self._pump, args=(found,), daemon=True)
        self.pump.start()
        if not found.wait(timeout) or not self.address:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log))
        return self.address

    def bootstrap_key(self) -> str:
        """The admin key a server with ``--auth required`` logged on its first start."""
        keys = [m.group(1) for line in self.log if (m := BOOTSTRAP.search(line))]
        assert len(keys) == 1, "".join(self.log)
        return keys[0]

    def logged(self, wanted: Callable[[str], bool], timeout: float = 10.0) -> bool:
        """Whether a line of the log is ``wanted``, waiting for lines still on their way."""
        deadline = time.monotonic() + timeout
        while not any(wanted(line) for line in list(self.log)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _pump(self, found: threading.Event) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            match = LISTENING.search(line)
            if match and not found.is_set():
                self.address = match.group(1)
                found.set()
        found.set()  # the process ended: stop waiting

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server, wait for it to exit and return its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if self.pump is not None:
                self.pump.join()
            assert self.process.stderr is not None
            self.process.stderr.close()


def serve_and_probe(environment: dict[str, str], data_dir: Path) -> tuple[int, str, list[str]]:
    """Run bare `toolvault serve` with ``environment`` (its settings), probe it, stop it.

    Returns the health command's exit code and output, and the server's log.
    """
    server = ServerProcess(db=environment["TOOLVAULT_DB"], data_dir=data_dir, env=environment)
    server.start(command=[TOOLVAULT, "serve"])
    try:
        health = subprocess.run(
            [TOOLVAULT, "--server", server.address, "health", "--timeout", "4"],
            capture_output=True,
            text=True,
        )
    finally:
        assert server.stop() == 0
    return health.returncode, health.stdout, server.log


@pytest.fixture
def server_process(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A started server on each database backend; stopped after the test."""
    server = ServerProcess(db=db_url, data_dir=tmp_path / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(server_process: ServerProcess) -> str:
    """The address (host:port) of a running server, once per database backend."""
    return server_process.address
