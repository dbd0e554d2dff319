"""The history of runs: the writer that records them, and the reads of the HistoryService.

Every run is recorded by :class:`HistoryWriter`, which commits concurrent calls' rows
together from one thread (on SQLite, on the event loop while the lock is free);
:class:`History` reads them back, hiding other namespaces' runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from toolvault.server.db import executions, idempotency
from toolvault.server.db.engine import Database
from toolvault.server.domain.errors import InvalidArgument, not_found
from toolvault.server.domain.executions import (
    DEFAULT_FILE_RETENTION_S,
    ExecutionFilter,
    ExecutionInfo,
    ExecutionStatus,
    FileDirection,
)
from toolvault.server.domain.names import EVERYWHERE, Scope, check_name
from toolvault.server.domain.paging import decode_token, encode_token, page_size

log = logging.getLogger("toolvault.server")
STATUSES = tuple(status.value for status in ExecutionStatus)
# The most rows one history commit takes (the others wait for the next).
_MAX_ROWS_PER_COMMIT = 256
# Commits on the event loop between two checkpoints of the WAL in a worker thread: at about
# a dozen pages a row, near SQLite's own default of a checkpoint per 1000 pages.
_CHECKPOINT_EVERY = 100


@dataclass
class _PendingRow:
    """A history row waiting for its commit, and the caller waiting for it.

    ``outputs`` are the rows of the bytes of its output files, committed with it.
    """

    values: dict[str, Any]
    execution_id: uuid.UUID
    idempotency_key: str
    loop: asyncio.AbstractEventLoop
    committed: asyncio.Future[None] = field(repr=False)
    outputs: list[dict[str, Any]] = field(default_factory=list, repr=False)


def _settle(rows: list[tuple[_PendingRow, BaseException | None]]) -> None:
    """Wake the callers of ``rows`` (with their errors), from the writer's thread.

    One wake-up per event loop for a whole commit: each costs a write to the loop's
    self-pipe and a turn of the loop, and every row of a commit is settled at once.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_PendingRow, BaseException | None]]] = {}
    for row, error in rows:
        by_loop.setdefault(row.loop, []).append((row, error))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
            loop.call_soon_threadsafe(_wake, settled)


def _wake(rows: list[tuple[_PendingRow, BaseException | None]]) -> None:
    for row, error in rows:
        if row.committed.done():  # the caller was cancelled; the row is written all the same
            continue
        if error is None:
            row.committed.set_result(None)
        else:
            row.committed.set_exception(error)


class _OnTheLoop:
    """Commits on the event loop's thread, on SQLite, while its write lock is free.

    A commit costs SQLite some 100 us of CPU wherever it runs; from the writer's thread it
    costs two thread wake-ups and the GIL's hand-overs besides, more than the commit
    itself under load (bench/compare.py: a tenth of the server's CPU per call). The rows
    written during one turn of the loop share one commit. The lock is only tried
    (``busy_timeout`` 0), so the loop never waits for it: when another writer holds it,
    or anything else fails, the rows go to the writer's thread, which waits, retries and
    reports. No checkpoint runs on the loop either: this connection's automatic
    checkpoints are off, and after every ``_CHECKPOINT_EVERY`` commits a worker thread runs
    a TRUNCATE one, which holds the write lock while it copies the WAL into the database,
    then empties the WAL. Rows written meanwhile go to the writer's thread. (A PASSIVE
    one never caught up with the commits going on meanwhile, and a RESTART one often left
    the WAL to grow: to 41 and 24 MB over the 1000 commits of the test.)
    """

    def __init__(
        self, db: Database, fallback: Callable[[_PendingRow], None], retention: dt.timedelta
    ) -> None:
        self._db = db
        self._retention = retention
        self._fallback = fallback
        self._rows: list[_PendingRow] = []
        self._connection: Connection | None = None
        self._since_checkpoint = 0
        self._checkpoint: asyncio.Future[None] | None = None

    def add(self, row: _PendingRow) -> None:
        """Commit ``row`` with the others of this turn of the loop, or have the thread do it."""
        self._rows.append(row)
        if len(self._rows) == 1:
            row.loop.call_soon(self._flush)

    def _flush(self) -> None:
        rows, self._rows = self._rows, []
        if not self._commit(rows):
            for row in rows:
                self._fallback(row)
            return
        for row in rows:
            if not row.committed.done():  # the caller was cancelled; the row is written
                row.committed.set_result(None)
        self._since_checkpoint += 1
        if self._since_checkpoint >= _CHECKPOINT_EVERY and self._checkpoint is None:
            self._since_checkpoint = 0
            self._checkpoint = asyncio.get_running_loop().run_in_executor(None, self._truncate)
            self._checkpoint.add_done_callback(self._checkpointed)

    def _commit(self, rows: list[_PendingRow]) -> bool:
        try:
            if self._connection is None:
                self._connection = self._db.write_engine.connect()
                settings = self._connection.connection.driver_connection
                assert settings is not None, "a new connection has its driver's"
                settings.execute("PRAGMA busy_timeout=0")
                settings.execute("PRAGMA wal_autocheckpoint=0")
            with self._connection.begin():
                _insert(self._connection, rows, self._retention)
        except OperationalError as e:
            if getattr(e.orig, "sqlite_errorname", "") != "SQLITE_BUSY":
                self._drop()
            return False
        except Exception:
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        # Closed, not handed back to the pool: its settings are not for other users.
        if self._connection is not None:
            self._connection.invalidate()
            self._connection = None

    def _truncate(self) -> None:
        connection = self._db.engine.raw_connection()
        try:
            driver = connection.driver_connection
            assert driver is not None, "a pooled connection has its driver's"
            driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not done.cancelled() and (error := done.exception()) is not None:
            log.warning("checkpoint of the history's WAL failed", exc_info=error)

    def close(self) -> None:
        """Close the connection (a checkpoint under way finishes on its own)."""
        self._drop()


class HistoryWriter:
    """Writes the history's rows from one thread, committing concurrent calls' rows together.

    A call's row is committed before write() returns, as with a transaction of its own;
    rows that arrive while a commit is under way share the next one: one write lock, one
    statement and one commit for all of them instead of one each, and no writers queuing
    on SQLite's lock. When a shared commit fails, each of its rows is retried alone, so
    that a row that cannot be written fails its own call only.

    On SQLite, a row is first committed on the event loop, when the write lock is free at
    once (:class:`_OnTheLoop`); the thread takes it otherwise, and always a row with output
    files, whose megabytes would hold up the loop.

    A commit with output files also deletes the bytes of those older than ``file_retention_s``
    (reads never return those anyway: see History.get).
    """

    def __init__(self, db: Database, *, file_retention_s: float = DEFAULT_FILE_RETENTION_S) -> None:
        self._db = db
        self._retention = dt.timedelta(seconds=file_retention_s)
        self._pending: queue.SimpleQueue[_PendingRow | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._on_the_loop = (
            None if db.reads_block else _OnTheLoop(db, self._to_thread, self._retention)
        )

    async def write(
        self,
        values: dict[str, Any],
        execution_id: uuid.UUID,
        idempotency_key: str,
        outputs: list[dict[str, Any]] | None = None,
    ) -> None:
        """Insert one execution row (binding ``idempotency_key`` to it); wait for the commit.

        ``outputs`` are the rows of its output files' bytes (``executions.output_rows``).
        """
        loop = asyncio.get_running_loop()
        row = _PendingRow(
            values, execution_id, idempotency_key, loop, loop.create_future(), outputs or []
        )
        if self._on_the_loop is not None and not row.outputs:
            self._on_the_loop.add(row)
        else:
            self._to_thread(row)
        await row.committed

    def _to_thread(self, row: _PendingRow) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="toolvault-history", daemon=True
                )
                self._thread.start()
        self._pending.put(row)

    def close(self) -> None:
        """Write the rows already queued, then stop the thread."""
        if self._on_the_loop is not None:
            self._on_the_loop.close()
        with self._starting:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._pending.put(None)
            thread.join()

    def _serve(self) -> None:
        # Held from one commit to the next: a checkout from the pool and its return
        # (with its rollback) cost a fifth of a commit of one row on SQLite.
        connection: Connection | None = None
        try:
            while True:
                first = self._pending.get()
                if first is None:
                    return
                rows = [first]
                stopping = False
                while len(rows) < _MAX_ROWS_PER_COMMIT:
                    try:
                        row = self._pending.get_nowait()
                    except queue.Empty:
                        break
                    if row is None:
                        stopping = True
                        break
                    rows.append(row)
                try:
                    connection = self._commit(connection, rows)
                except Exception:
                    # Alone, each on a connection from the pool (checked there): a broken
                    # held connection or one bad row fails no other call.
                    connection = None
                    _settle([(row, self._commit_alone(row)) for row in rows])
                else:
                    _settle([(row, None) for row in rows])
                if stopping:
                    return
        finally:
            if connection is not None:
                connection.close()

    def _commit(self, connection: Connection | None, rows: list[_PendingRow]) -> Connection:
        """Commit ``rows`` on ``connection`` (a new one if None); return it for the next."""
        held = connection or self._db.write_engine.connect()
        try:
            with held.begin():
                _insert(held, rows, self._retention)
        except Exception:
            held.close()
            raise
        return held

    def _commit_alone(self, row: _PendingRow) -> Exception | None:
        try:
            with self._db.write_engine.begin() as connection:
                _insert(connection, [row], self._retention)
        except Exception as exc:
            return exc
        return None


def _insert(connection: Connection, rows: list[_PendingRow], retention: dt.timedelta) -> None:
    executions.insert(connection, [row.values for row in rows])
    outputs = [output for row in rows for output in row.outputs]
    if outputs:
        executions.delete_expired_outputs(connection, dt.datetime.now(dt.UTC) - retention)
        executions.insert_outputs(connection, outputs)
    for row in rows:
        if row.idempotency_key:
            idempotency.bind(connection, row.idempotency_key, row.execution_id)


class History:
    """Reads recorded executions, and the output files' bytes kept for ``file_retention_s``."""

    def __init__(self, db: Database, *, file_retention_s: float = DEFAULT_FILE_RETENTION_S) -> None:
        self._db = db
        self._retention = dt.timedelta(seconds=file_retention_s)

    def get(
        self, execution_id: str, *, scope: Scope = EVERYWHERE, outputs: bool = False
    ) -> ExecutionInfo:
        """One execution by id, if it ran a function in ``scope``.

        With ``outputs``, the bytes of its output files too, as far as they are kept: never
        those older than the retention period, deleted or not yet.
        """
        try:
            key = uuid.UUID(execution_id)
        except ValueError as e:
            raise InvalidArgument(f"id {execution_id!r} is not a UUID") from e
        with self._db.read.begin() as session:
            info = executions.find(session, key)
            if info is None or not scope.allows(info.function_name):
                raise not_found("execution", execution_id, quoted=False)
            if outputs and any(file.direction is FileDirection.OUT for file in info.files):
                since = dt.datetime.now(dt.UTC) - self._retention
                info = replace(info, outputs=executions.outputs(session, key, since))
        return info

    def executions(
        self, where: ExecutionFilter, *, scope: Scope = EVERYWHERE, size: int, token: str
    ) -> tuple[list[ExecutionInfo], str]:
        """A page of the executions in ``scope``, newest first, and the next page's token."""
        if where.function_name:
            check_name(where.function_name)
        if where.status and where.status not in STATUSES:
            raise InvalidArgument(f"status {where.status!r} is not one of {STATUSES}")
        if where.version and not where.function_name:
            raise InvalidArgument("version filters need function_name")
        key = decode_token(token, str, str)
        after = None
        if key is not None:
            try:
                after_time, after_id = dt.datetime.fromisoformat(key[0]), uuid.UUID(key[1])
                # Issued tokens hold UTC times; a naive or unrepresentable one fails in SQL.
                if after_time.tzinfo is None:
                    raise ValueError("naive time")
                after = (after_time.astimezone(dt.UTC), after_id)
            except (TypeError, ValueError, OverflowError) as e:
                raise InvalidArgument("page_token is not a token this server issued") from e
        limit = page_size(size)
        with self._db.read.begin() as session:
            rows = executions.page(session, where, scope=scope, after=after, limit=limit + 1)
        if len(rows) <= limit:
            return rows, ""
        last = rows[limit - 1]
        return rows[:limit], encode_token([last.start_time.isoformat(), str(last.id)])
