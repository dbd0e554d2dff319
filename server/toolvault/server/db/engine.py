"""Database engine, sessions and migrations.

SQLite (the embedded default) runs in WAL mode with foreign keys on; a write unit of work
starts with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing
when one upgrades a read to a write. PostgreSQL needs nothing special, except that
replicas starting together each upgrade the database: an advisory lock queues them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

_WRITE = "toolvault_write"


class Database:
    """An engine with two session factories: ``read()`` and ``write()`` units of work."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.engine = create_engine(self.url, **_engine_options(url))
        if self.url.get_backend_name() == "sqlite":
            _configure_sqlite(self.engine)
        # For Core-only writes on the hot path, where a session costs more than the statement.
        self.write_engine = self.engine.execution_options(**{_WRITE: True})
        self.read = sessionmaker(self.engine, expire_on_commit=False)
        self.write = sessionmaker(self.write_engine, expire_on_commit=False)

    def upgrade(self) -> None:
        """Apply every Alembic migration not yet applied."""
        if self.url.get_backend_name() == "sqlite" and self.url.database:
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        config = Config()
        config.set_main_option("script_location", "toolvault.server.db:migrations")
        with self.engine.begin() as connection:
            if self.url.get_backend_name() == "postgresql":
                # Held to the commit: a concurrent upgrader (another replica starting)
                # waits here, then finds the schema at head, instead of racing to create
                # the same tables. Keyed by schema so that schemas upgrade independently.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:name || current_schema()))"),
                    {"name": "toolvault.upgrade:"},
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _engine_options(url: str) -> dict[str, Any]:
    if make_url(url).get_backend_name() == "sqlite":
        # Sessions run on worker threads; each checks out its own connection.
        return {"connect_args": {"check_same_thread": False, "timeout": 30}}
    return {"pool_pre_ping": True}


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that "begin" below decides the mode.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
