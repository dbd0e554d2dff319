"""Two replicas on one database: each caches what refs name, and never serves a stale one.

Replica B resolves a ref (and so caches it); replica A then changes what the ref names,
and B's very next call must see the change: new versions, moved and deleted aliases, a
deleted function, and one published again under the same name and number. Run on a
shared SQLite file and on PostgreSQL (the ``db_url`` fixture), with warm workers, whose
keys must follow the version too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy

from tests.conftest import ServerProcess
from toolvault.client import Client, NotFound


def returning(value: int) -> str:
    """A function's source that returns ``value``."""
    return f"def main():\n    return {value}\n"


@pytest.fixture
def replicas(db_url: str, tmp_path: Path) -> Iterator[tuple[Client, Client]]:
    """Clients of two servers on the same database (A first, so that it creates it)."""
    servers = [
        ServerProcess(db=db_url, data_dir=tmp_path / name, env={"TOOLVAULT_SANDBOX_MODE": "warm"})
        for name in ("a", "b")
    ]
    for server in servers:
        server.start()
    try:
        with Client(servers[0].address) as a, Client(servers[1].address) as b:
            yield a, b
    finally:
        for server in servers:
            server.stop()


def ran(client: Client, ref: str) -> tuple[int, object]:
    """The version a call of ``ref`` ran, and its result."""
    execution = client.invoke(ref)
    assert execution.ok, execution
    return execution.version, execution.result


def test_the_next_call_on_another_replica_sees_every_change_of_what_a_ref_names(
    replicas: tuple[Client, Client],
) -> None:
    a, b = replicas
    a.publish("tool", returning(1))
    assert ran(b, "tool") == (1, 1)
    assert ran(b, "tool@1") == (1, 1)

    a.publish("tool", returning(2))
    assert ran(b, "tool") == (2, 2)
    assert ran(b, "tool@1") == (1, 1)

    a.set_alias("tool", "prod", 1)
    assert ran(b, "tool@prod") == (1, 1)
    a.set_alias("tool", "prod", 2)
    assert ran(b, "tool@prod") == (2, 2)
    a.delete_alias("tool", "prod")
    with pytest.raises(NotFound, match="no alias 'prod'"):
        b.invoke("tool@prod")

    a.delete("tool")
    for ref in ("tool", "tool@1", "tool@2"):
        with pytest.raises(NotFound):
            b.invoke(ref)

    # The same name and number again, with other content: B must not run the old one.
    a.publish("tool", returning(3))
    assert ran(b, "tool") == (1, 3)
    assert ran(b, "tool@1") == (1, 3)
    assert len(b.history("tool", limit=None)) == 8


def test_a_change_made_outside_toolvault_is_seen_by_the_next_call(
    replicas: tuple[Client, Client], db_url: str
) -> None:
    # Triggers keep the generation, so that no writer can forget it: not another
    # release's server, nor an operator's statement.
    a, b = replicas
    a.publish("tool", returning(1))
    a.publish("tool", returning(2))
    a.set_alias("tool", "prod", 1)
    assert ran(b, "tool@prod") == (1, 1)
    move = "UPDATE aliases SET version = 2 WHERE name = 'prod'"
    if db_url.startswith("sqlite"):
        engine = sqlalchemy.create_engine(db_url)
        with engine.begin() as connection:
            connection.exec_driver_sql(move)
        engine.dispose()
    else:
        base, _, options = db_url.replace("+psycopg", "").partition("?options=")
        with psycopg.connect(base, options=options.replace("%3D", "="), autocommit=True) as c:
            c.execute(move)
    assert ran(b, "tool@prod") == (2, 2)
