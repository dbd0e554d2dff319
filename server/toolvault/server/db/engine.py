"""Database engine, sessions and migrations.

SQLite (the embedded default) runs in WAL mode with foreign keys on; a write unit of work
starts with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing
when one upgrades a read to a write. PostgreSQL needs nothing special, except that
replicas starting together each upgrade the database: an advisory lock queues them.

:meth:`Database.scalar_now` reads one value on a DB-API connection kept open for it, for
the one read on every call's path (the functions' generation): a pooled connection costs
checkout, ``BEGIN`` and rollback, some 60 µs on SQLite, where the statement costs 2 µs.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, PoolProxiedConnection, create_engine, event, text
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
        self._side: PoolProxiedConnection | None = None
        self._side_lock = threading.Lock()

    @property
    def reads_block(self) -> bool:
        """Whether a read waits on the network (PostgreSQL), not only on a local file."""
        return self.url.get_backend_name() != "sqlite"

    def scalar_now(self, statement: str) -> Any:
        """The first column of the first row of ``statement``, as committed right now.

        Runs in autocommit on a DB-API connection of its own, opened on first use and kept
        (a broken one is dropped, and the next read opens another). Raises the driver's
        errors (``dbapi_error``), not SQLAlchemy's.
        """
        with self._side_lock:
            if self._side is None:
                side = self.engine.raw_connection()
                if self.reads_block:
                    # On SQLite, the connect listener already leaves transactions alone.
                    side.driver_connection.autocommit = True  # type: ignore[union-attr]
                self._side = side
            try:
                cursor = self._side.cursor()
                try:
                    cursor.execute(statement)
                    row = cursor.fetchone()
                    assert row is not None, f"no row: {statement}"
                    return row[0]
                finally:
                    cursor.close()
            except Exception:
                self._drop_side()
                raise

    def _drop_side(self) -> None:
        # Closed, not handed back to the pool: on PostgreSQL it is in autocommit.
        if self._side is not None:
            self._side.invalidate()
            self._side = None

    @property
    def dbapi_error(self) -> type[Exception]:
        """The base class of the driver's errors, which :meth:`scalar_now` raises."""
        error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        return error

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
        """Close every pooled connection, and the one of :meth:`scalar_now`."""
        with self._side_lock:
            self._drop_side()
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
