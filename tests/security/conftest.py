"""Harness for the attack suite: a real server in a throw-away PID namespace, with secrets
planted where a function must never reach them.

Every attack runs through the public API like any caller's code. ``Attack.run`` then
checks what must hold whatever the attack was: the secrets appear in no field of the
result (nor, at the end of the module, in any history row), no process of the call is
left, and the server answers its next call correctly.

Every module runs three times: against a server whose calls run in warm workers, one
that forks a fresh sandbox per call, and one whose fresh calls take spares (sandboxes
made ahead of time, one call each). A warm worker may outlive its call, but only idle:
stopped, with no process under it, and never after a call that failed; so may spares
waiting for a call, at most as many as the server keeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

from tests.conftest import TOOLVAULT, ServerProcess
from tests.processes import children_by_parent, descendants, stopped
from toolvault.client import Client, Execution, ExecutionStatus

SECRET = f"tv-secret-{secrets.token_hex(16)}"
UNSHARE = shutil.which("unshare")


def sandbox_host(server_pid: int) -> set[int]:
    """The processes of the server's warm sandbox host, which outlive every call.

    The process the server spawned and, with namespaces, the one it relays for: PID 1 of
    a new namespace, one level below the server's. The sandboxes of calls are their
    children (and, with namespaces, two levels below).
    """
    children = children_by_parent()
    depth = _namespace_depth(server_pid)
    found: set[int] = set()
    for spawned in children.get(server_pid, []):
        if b"toolvault.sandbox._host" not in Path(f"/proc/{spawned}/cmdline").read_bytes():
            continue
        found.add(spawned)
        found.update(c for c in children.get(spawned, []) if _namespace_depth(c) == depth + 1)
    return found


def idle_workers(server_pid: int) -> set[int]:
    """The host's children that are stopped and have no children: warm workers between calls.

    Anything else below the host (a worker running with no call, or with a process under
    it) is a process of some call that survived.
    """
    children = children_by_parent()
    found: set[int] = set()
    for host in sandbox_host(server_pid):
        for child in children.get(host, []):
            if child not in children and stopped(child):
                found.add(child)
    return found


def _namespace_depth(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return len(status.partition("NSpid:")[2].splitlines()[0].split())


@dataclass
class Listener:
    """A listening socket (TCP on loopback, or Unix) that counts the connections it accepts."""

    sock: socket.socket
    connections: int = 0

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@dataclass
class Attack:
    """Runs hostile functions on the attack server and checks they had no effect."""

    server: ServerProcess
    client: Client
    secret_file: Path
    listener: Listener
    mode: str
    count: int = 0
    # While bystanders call the probe, its workers come and go: which new idle worker
    # is whose cannot be told from outside.
    bystanders: bool = False
    names: list[str] = field(default_factory=list)

    def run(
        self,
        source: str,
        args: dict[str, object] | None = None,
        *,
        egress: Sequence[str] = (),
        files: dict[str, bytes] | None = None,
        **limits: int,
    ) -> Execution:
        """Publish and invoke ``source`` with ``files``; assert no secret leaked or survived."""
        self.count += 1
        name = f"attack_{self.count}"
        self.names.append(name)
        self.client.publish(name, source, egress=egress or None, **limits)  # type: ignore[arg-type]
        self.assert_nothing_survives()  # the last call's worker has stopped: it is idle
        idle_before = idle_workers(self.server_pid)
        execution = self.client.invoke(name, args or {}, files=files)
        self.assert_no_secret(execution)
        self.assert_nothing_survives()
        kept = set()
        if self.mode == "warm" and not self.bystanders:
            kept = idle_workers(self.server_pid) - idle_before
        if execution.status not in (ExecutionStatus.OK, ExecutionStatus.OUTPUT_SCHEMA_MISMATCH):
            assert kept == set(), f"the worker of a failed call was kept: {kept}"
        assert len(kept) <= 1, f"one call left several idle workers: {kept}"
        assert self.listener.connections == 0, "the function reached a loopback listener"
        assert self.client.invoke("probe", {"n": self.count}).result == self.count + 1
        return execution

    def assert_no_secret(self, execution: Execution) -> None:
        for f in fields(execution):
            assert SECRET not in str(getattr(execution, f.name)), f"secret leaked in {f.name}"

    @property
    def server_pid(self) -> int:
        """The server process: the only child of the ``unshare`` that started it."""
        assert self.server.process is not None
        (pid,) = children_by_parent()[self.server.process.pid]
        return pid

    def assert_nothing_survives(self) -> None:
        deadline = time.monotonic() + 5
        while (left := self.processes_of_calls()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == [], f"processes of the call survived: {left}"

    def processes_of_calls(self) -> list[int]:
        host = sandbox_host(self.server_pid)
        if self.mode != "fresh":
            idle = idle_workers(self.server_pid)
            if self.mode == "spares":
                assert len(idle) <= SPARES, f"more spares than the server keeps: {idle}"
            host |= idle
        return [pid for pid in descendants(self.server_pid) if pid not in host]


SPARES = 2
MODES = {
    "warm": {"TOOLVAULT_SANDBOX_MODE": "warm"},
    "fresh": {"TOOLVAULT_SANDBOX_MODE": "fresh", "TOOLVAULT_FRESH_SPARES": "0"},
    "spares": {"TOOLVAULT_SANDBOX_MODE": "fresh", "TOOLVAULT_FRESH_SPARES": str(SPARES)},
}


@pytest.fixture(scope="module", params=list(MODES))
def attack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Attack]:
    """A server holding secrets in its environment and in a file, in a new PID namespace.

    The namespace means an attack that signals every process (``kill(-1)``) or its parent
    can at worst take down this server, never the machine running the tests.
    """
    with attack_server(request.param, tmp_path_factory) as started:
        yield started


# What the egress attack server lets the default namespace declare: names it never
# resolves for the attacks (they are refused first), and the attack's loopback listener
# as an address, which the door refuses as not public.
EGRESS_ALLOWED = ("api.example.com:443", "*.example.org")


@pytest.fixture(scope="module", params=["warm", "fresh"])
def egress_attack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Attack]:
    """The attack server with egress on (TOOLVAULT_EGRESS=allowlist), in two modes.

    Its versions may declare EGRESS_ALLOWED and so import the stdlib's clients; it
    allows no private network, the loopback listener's included.
    """
    with attack_server(request.param, tmp_path_factory, egress=True) as started:
        yield started


@contextlib.contextmanager
def attack_server(
    mode: str, tmp_path_factory: pytest.TempPathFactory, *, egress: bool = False
) -> Iterator[Attack]:
    """The ``attack`` fixture's server in ``mode``; with ``egress``, the door's too."""
    if UNSHARE is None:
        pytest.skip("util-linux unshare is needed to contain signalling attacks")
    root = tmp_path_factory.mktemp("attack")
    data_dir = root / "data"
    data_dir.mkdir(mode=0o700)
    secret_file = data_dir / "secret.txt"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    sock = socket.create_server(("127.0.0.1", 0))
    listener = Listener(sock)
    threading.Thread(target=listener.serve, daemon=True).start()
    env = {"TOOLVAULT_TEST_SECRET": SECRET, **MODES[mode]}
    if egress:
        allowed = [*EGRESS_ALLOWED, f"127.0.0.1:{listener.port}"]
        env |= {
            "TOOLVAULT_EGRESS": "allowlist",
            "TOOLVAULT_EGRESS_NAMESPACES": json.dumps({"default": allowed}),
        }
    server = ServerProcess(db=f"sqlite:///{data_dir / 'toolvault.db'}", data_dir=data_dir, env=env)
    command = [UNSHARE, "--pid", "--fork", "--mount-proc", "--kill-child", TOOLVAULT, "serve"]
    command += ["--listen", "127.0.0.1:0", "--db", server.db, "--data-dir", str(data_dir)]
    server.start(command=command)
    client = Client(server.address, timeout=60)
    client.publish("probe", "def main(n):\n    return n + 1\n")
    attack = Attack(server, client, secret_file, listener, mode)
    try:
        yield attack
        assert server.process is not None and server.process.poll() is None, "server died"
        # unshare ignores SIGTERM: the server itself is told to drain and stop.
        os.kill(attack.server_pid, signal.SIGTERM)
    finally:
        client.close()
        sock.close()
        server.stop(signal.SIGKILL)
    with sqlite3.connect(data_dir / "toolvault.db") as db:
        rows = db.execute("SELECT * FROM executions").fetchall()
    assert rows, "the attacks were not recorded"
    assert not [row for row in rows if SECRET in repr(row)], "a secret reached the history"


@contextlib.contextmanager
def calling_the_probe(address: str) -> Iterator[None]:
    """Calls of the server's ``probe`` while the block runs; each returned the right result."""
    stop = threading.Event()
    results: list[tuple[int, object]] = []

    def call() -> None:
        with Client(address, timeout=60) as client:
            n = 0
            while not stop.is_set():
                results.append((n, client.invoke("probe", {"n": n}).result))
                n += 1

    worker = threading.Thread(target=call)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()
    assert results, "no call ran alongside the attack"
    assert all(result == n + 1 for n, result in results), results


@pytest.fixture
def bystanders(attack: Attack) -> Iterator[None]:
    """Calls running alongside an attack; after it, every one returned the right result."""
    attack.bystanders = True
    try:
        with calling_the_probe(attack.server.address):
            yield
    finally:
        attack.bystanders = False
