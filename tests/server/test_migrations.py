"""The Alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

import secrets
import subprocess

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tests.conftest import TOOLVAULT
from toolvault.server.db.engine import Database
from toolvault.server.db.tables import Base


def test_migrations_create_the_schema_of_the_models(db_url: str) -> None:
    db = Database(db_url)
    try:
        db.upgrade()
        db.upgrade()  # a second upgrade finds nothing to do
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            tables = set(inspect(connection).get_table_names())
    finally:
        db.dispose()
    assert diff == []
    assert {"functions", "function_versions", "aliases", "executions"} <= tables


def test_concurrent_upgrades_of_an_empty_postgresql_database_all_succeed(pg_url: str) -> None:
    # Replicas that start together each upgrade the database; they must queue, not collide
    # on creating the same tables. Processes, since Alembic's context is process-global;
    # several rounds, since one round may miss the race.
    for _ in range(2):
        schema = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{pg_url}?options=-csearch_path%3D{schema}"
        upgrades = [
            subprocess.Popen(
                [TOOLVAULT, "db", "upgrade", "--db", url],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [upgrade.communicate(timeout=60)[0] for upgrade in upgrades]
        assert [upgrade.returncode for upgrade in upgrades] == [0] * 4, outputs
        db = Database(url)
        try:
            with db.engine.connect() as connection:
                diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        finally:
            db.dispose()
        assert diff == []
