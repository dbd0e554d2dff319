"""Three replicas on one PostgreSQL database, one of them killed under load.

One SDK client spreads calls round-robin over the three servers while threads publish new
versions of the same functions, move their alias and invoke them with idempotency keys.
The client runs without gRPC's retries, so that the calls the kill breaks are seen here;
each is retried by the test with the same arguments (and, for invokes, the same key) until
it succeeds.
"""

from __future__ import annotations

import functools
import itertools
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from tests.conftest import ServerProcess
from tests.processes import descendants, stopped
from toolvault.client import Client, Execution, ToolvaultError, Unavailable

T = TypeVar("T")
NAMES = ("alpha", "beta")
ALIAS = "live"
LEASE_S = 3
# Long enough that each replica has calls running when one is killed.
SPIN_S = 0.3
INVOKERS = 6
PUBLISHERS = 3
# Every failed attempt must fail this fast: a broken connection, not a hang.
CLEAN_FAILURE_S = 5.0


def source(tag: str) -> str:
    """A function that runs for ``s`` seconds of wall time and returns its ``call``."""
    return (
        f"# {tag}\nimport datetime\n\n"
        "def main(s, call):\n"
        "    end = datetime.datetime.now() + datetime.timedelta(seconds=s)\n"
        "    while datetime.datetime.now() < end:\n"
        "        pass\n"
        "    return call\n"
    )


def running(pid: int) -> list[int]:
    """The processes below ``pid`` that may run: its sandbox host's, and one per call."""
    return [child for child in descendants(pid) if not stopped(child)]


@dataclass
class Load:
    """What the threads did, as the client saw it."""

    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: dict[str, str] = field(default_factory=dict)  # call id -> execution id
    # name -> source -> sha256, as publish acknowledged it
    published: dict[str, dict[str, str]] = field(default_factory=lambda: {n: {} for n in NAMES})
    failures: list[tuple[str, str, float]] = field(default_factory=list)  # what, error, seconds
    recovered: dict[str, float] = field(default_factory=dict)  # what failed -> seconds to success
    errors: list[BaseException] = field(default_factory=list)

    def thread(
        self, work: Callable[[Client, int], None], client: Client, number: int
    ) -> threading.Thread:
        """Run ``work`` on a thread, keeping what it raises for the test to see."""

        def run() -> None:
            try:
                work(client, number)
            except BaseException as e:
                self.errors.append(e)
                raise

        return threading.Thread(target=run)

    def until_ok(self, what: str, call: Callable[[], T]) -> T:
        """Call until it succeeds; only UNAVAILABLE, failing fast, is expected on the way."""
        first = time.monotonic()
        for attempt in itertools.count():
            started = time.monotonic()
            try:
                result = call()
            except ToolvaultError as e:
                with self.lock:
                    self.failures.append((what, type(e).__name__, time.monotonic() - started))
                if not isinstance(e, Unavailable):
                    raise
                time.sleep(0.05)
                continue
            if attempt:
                with self.lock:
                    self.recovered[what] = time.monotonic() - first
            return result
        raise AssertionError("unreachable")

    def invoker(self, client: Client, number: int) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            name = NAMES[n % len(NAMES)]
            call = f"i{number}-{n}"
            invoke = functools.partial(
                client.invoke, f"{name}@{ALIAS}", {"s": SPIN_S, "call": call}, idempotency_key=call
            )
            execution: Execution = self.until_ok(call, invoke)
            assert execution.ok and execution.result == call, execution
            with self.lock:
                self.acknowledged[call] = execution.execution_id

    def publisher(self, client: Client, number: int) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            name = NAMES[n % len(NAMES)]
            text = source(f"p{number}-{n}")
            version = self.until_ok(f"p{number}-{n}", functools.partial(client.publish, name, text))
            with self.lock:
                self.published[name][text] = version.sha256
            move = functools.partial(client.set_alias, name, ALIAS, version.version)
            self.until_ok(f"a{number}-{n}", move)


@pytest.fixture
def replicas(pg_url: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Three servers started together on one empty PostgreSQL schema."""
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    servers = [
        ServerProcess(
            db=url,
            data_dir=tmp_path / f"replica{i}",
            env={"TOOLVAULT_IDEMPOTENCY_LEASE_S": str(LEASE_S)},
        )
        for i in range(3)
    ]
    try:
        # Together, as a Deployment's pods do: each upgrades the same empty database.
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda server: server.start(), servers))
        yield servers
    finally:
        for server in servers:
            if server.process is not None:
                server.stop()


@pytest.mark.timeout(90)
def test_replicas_keep_versions_dense_and_runs_once_when_one_is_killed_under_load(
    replicas: list[ServerProcess],
) -> None:
    target = "ipv4:" + ",".join(server.address for server in replicas)
    load = Load()
    killed = replicas[0]
    assert killed.process is not None
    # Its sandbox host's processes, without a call running (warm workers idle are stopped).
    idle = len(running(killed.process.pid))
    with Client(target, timeout=30, retries=False) as client:
        for name in NAMES:
            first = client.publish(name, source("first"))
            client.set_alias(name, ALIAS, first.version)
            load.published[name][first.source] = first.sha256
        threads = [
            *(load.thread(load.invoker, client, i) for i in range(INVOKERS)),
            *(load.thread(load.publisher, client, i) for i in range(PUBLISHERS)),
        ]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 30
            while len(load.acknowledged) < 2 * INVOKERS and time.monotonic() < deadline:
                time.sleep(0.05)
            before_kill = len(load.acknowledged)
            assert before_kill >= 2 * INVOKERS, "the load did not start"
            # Kill it while it runs a sandbox, so that an invoke is surely in flight on it.
            while len(running(killed.process.pid)) <= idle:
                assert time.monotonic() < deadline, "the replica never ran a call"
                time.sleep(0.005)
            assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
            # Past the lease, so that keys the dead replica held are taken over and run.
            time.sleep(LEASE_S + 2)
            while len(load.acknowledged) < before_kill + 2 * INVOKERS:
                assert time.monotonic() < deadline, "the load stalled after the kill"
                time.sleep(0.05)
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        assert load.errors == []

        for name in NAMES:
            versions = client.versions(name)
            numbers = sorted(v.version for v in versions)
            # Dense and unique: 1..N with N the number of distinct sources published.
            assert numbers == list(range(1, len(load.published[name]) + 1))
            assert sorted(v.sha256 for v in versions) == sorted(load.published[name].values())
            assert client.function(name).aliases[ALIAS] in numbers

        history = [e for name in NAMES for e in client.history(name, limit=None)]

    # Each call succeeded in the end, so the history holds exactly one run per call, and
    # it is the run the call acknowledged: a call cut off on the killed replica either
    # left no row (its retry ran elsewhere once the key's lease ended) or a recorded run,
    # which its retry returned. No call ran twice and no run belongs to no call.
    runs = Counter(e.result for e in history)
    assert runs == Counter(load.acknowledged.keys()), "a call ran twice, or a run has no call"
    assert {e.result: e.execution_id for e in history} == load.acknowledged
    # The kill broke calls in flight on the killed replica, quickly and as UNAVAILABLE,
    # and each was retried (same key) on the others until it succeeded.
    broken = {what for what, _, _ in load.failures if what.startswith("i")}
    assert broken, "no invoke was in flight on the killed replica"
    assert all(error == "Unavailable" for _, error, _ in load.failures), load.failures
    assert max(seconds for _, _, seconds in load.failures) < CLEAN_FAILURE_S, load.failures
    assert broken <= set(load.acknowledged)
    # A retry whose key the dead replica held waits for the key's lease to end, no longer.
    assert max(load.recovered[what] for what in broken) < LEASE_S + CLEAN_FAILURE_S
