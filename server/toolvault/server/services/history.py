"""The history of runs: the writer that records them, and the reads of the HistoryService.

Every run is recorded by :class:`HistoryWriter`, which commits concurrent calls' rows
together from one thread; :class:`History` reads them back, hiding other namespaces' runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import queue
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from toolvault.server.db import executions, idempotency
from toolvault.server.db.engine import Database
from toolvault.server.domain.errors import InvalidArgument, not_found
from toolvault.server.domain.executions import ExecutionFilter, ExecutionInfo, ExecutionStatus
from toolvault.server.domain.names import EVERYWHERE, Scope, check_name
from toolvault.server.domain.paging import decode_token, encode_token, page_size

STATUSES = tuple(status.value for status in ExecutionStatus)
# The most rows one history commit takes (the others wait for the next).
_MAX_ROWS_PER_COMMIT = 256


@dataclass
class _PendingRow:
    """A history row waiting for its commit, and the caller waiting for it."""

    values: dict[str, Any]
    execution_id: uuid.UUID
    idempotency_key: str
    loop: asyncio.AbstractEventLoop
    committed: asyncio.Future[None] = field(repr=False)


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


class HistoryWriter:
    """Writes the history's rows from one thread, committing concurrent calls' rows together.

    A call's row is committed before write() returns, as with a transaction of its own;
    rows that arrive while a commit is under way share the next one: one write lock, one
    statement and one commit for all of them instead of one each, and no writers queuing
    on SQLite's lock. When a shared commit fails, each of its rows is retried alone, so
    that a row that cannot be written fails its own call only.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: queue.SimpleQueue[_PendingRow | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    async def write(
        self, values: dict[str, Any], execution_id: uuid.UUID, idempotency_key: str
    ) -> None:
        """Insert one execution row (binding ``idempotency_key`` to it); wait for the commit."""
        loop = asyncio.get_running_loop()
        row = _PendingRow(values, execution_id, idempotency_key, loop, loop.create_future())
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="toolvault-history", daemon=True
                )
                self._thread.start()
        self._pending.put(row)
        await row.committed

    def close(self) -> None:
        """Write the rows already queued, then stop the thread."""
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
                _insert(held, rows)
        except Exception:
            held.close()
            raise
        return held

    def _commit_alone(self, row: _PendingRow) -> Exception | None:
        try:
            with self._db.write_engine.begin() as connection:
                _insert(connection, [row])
        except Exception as exc:
            return exc
        return None


def _insert(connection: Connection, rows: list[_PendingRow]) -> None:
    executions.insert(connection, [row.values for row in rows])
    for row in rows:
        if row.idempotency_key:
            idempotency.bind(connection, row.idempotency_key, row.execution_id)


class History:
    """Reads recorded executions."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, execution_id: str, *, scope: Scope = EVERYWHERE) -> ExecutionInfo:
        """One execution by id, if it ran a function in ``scope``."""
        try:
            key = uuid.UUID(execution_id)
        except ValueError as e:
            raise InvalidArgument(f"id {execution_id!r} is not a UUID") from e
        with self._db.read.begin() as session:
            info = executions.find(session, key)
        if info is None or not scope.allows(info.function_name):
            raise not_found("execution", execution_id, quoted=False)
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
