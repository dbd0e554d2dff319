"""The Alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from toolvault.server.db import Database
from toolvault.server.models import Base


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
