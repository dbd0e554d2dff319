"""The history's writer: concurrent calls' rows commit together, each before its call returns."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from toolvault.server.db.engine import Database
from toolvault.server.db.executions import history_row
from toolvault.server.db.tables import utcnow
from toolvault.server.domain.executions import CallContext, ExecutionFilter, ExecutionInfo
from toolvault.server.services.history import History, HistoryWriter


def execution(execution_id: uuid.UUID | None = None) -> ExecutionInfo:
    return ExecutionInfo(
        id=execution_id or uuid.uuid4(),
        function_name="f",
        version=1,
        sha256="0" * 64,
        status="OK",
        args_json="{}",
        args_truncated=False,
        result_json="1",
        result_truncated=False,
        stdout="",
        stderr="",
        error_type="",
        error_message="",
        traceback="",
        start_time=utcnow(),
        duration_ms=1.0,
        cpu_time_ms=1.0,
        peak_memory_bytes=1,
        context=CallContext(caller="test"),
    )


def count_inserts(database: Database) -> list[int]:
    """How many statements insert into the history (an executemany counts once)."""
    inserts = [0]

    def before_cursor_execute(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("INSERT INTO EXECUTIONS"):
            inserts[0] += 1

    event.listen(database.engine, "before_cursor_execute", before_cursor_execute)
    return inserts


def test_concurrent_calls_share_commits_and_each_row_is_written_before_its_call_returns(
    database: Database,
) -> None:
    writer = HistoryWriter(database)
    history = History(database)
    inserts = count_inserts(database)

    async def call() -> str:
        info = execution()
        await writer.write(history_row(info), info.id, "")
        return (await asyncio.to_thread(history.get, str(info.id))).result_json

    async def calls() -> list[str]:
        return await asyncio.gather(*(call() for _ in range(40)))

    try:
        assert asyncio.run(calls()) == ["1"] * 40
    finally:
        writer.close()
    assert 1 <= inserts[0] < 40


def test_a_row_that_cannot_be_written_fails_its_own_call_only(database: Database) -> None:
    writer = HistoryWriter(database)
    history = History(database)
    taken = execution()

    async def write(info: ExecutionInfo) -> None:
        await writer.write(history_row(info), info.id, "")

    async def calls() -> list[BaseException | None]:
        await write(taken)
        others = [execution(), execution(taken.id), execution()]
        return await asyncio.gather(*(write(info) for info in others), return_exceptions=True)

    try:
        first, duplicate, last = asyncio.run(calls())
    finally:
        writer.close()
    assert first is None and last is None
    assert isinstance(duplicate, IntegrityError)
    rows, _ = history.executions(ExecutionFilter(), size=0, token="")
    assert len(rows) == 3


def test_a_closed_writer_starts_again_on_the_next_row(database: Database) -> None:
    writer = HistoryWriter(database)

    async def write() -> None:
        info = execution()
        await writer.write(history_row(info), info.id, "")

    asyncio.run(write())
    writer.close()
    writer.close()  # a second close does nothing
    asyncio.run(write())
    writer.close()
    assert len(History(database).executions(ExecutionFilter(), size=0, token="")[0]) == 2


def test_a_connection_that_breaks_between_commits_fails_no_call(database: Database) -> None:
    # The writer keeps its connection from one commit to the next (on SQLite, the one it
    # commits on the event loop with); when that one breaks, the rows go again on a
    # connection from the pool.
    writer = HistoryWriter(database)
    checked_out: list[Any] = []
    event.listen(database.engine, "checkout", lambda dbapi, *_: checked_out.append(dbapi))

    async def write() -> None:
        info = execution()
        await writer.write(history_row(info), info.id, "")

    try:
        asyncio.run(write())
        assert len(checked_out) == 1
        asyncio.run(write())
        assert len(checked_out) == 1  # the same connection served the second commit
        checked_out[0].close()
        asyncio.run(write())
    finally:
        writer.close()
    assert len(History(database).executions(ExecutionFilter(), size=0, token="")[0]) == 3


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'toolvault.db'}")
    db.upgrade()
    yield db
    db.dispose()


def test_on_sqlite_a_locked_database_stalls_the_call_but_never_the_event_loop(
    sqlite_database: Database, tmp_path: Path
) -> None:
    # Rows are committed on the event loop only when the write lock is free at once;
    # otherwise the writer's thread waits for it.
    writer = HistoryWriter(sqlite_database)
    other = sqlite3.connect(tmp_path / "toolvault.db", isolation_level=None)

    async def calls() -> int:
        info = execution()
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.create_task(writer.write(history_row(info), info.id, ""))
        ticks = 0
        for _ in range(20):  # the loop turns while the lock is held
            await asyncio.sleep(0.01)
            ticks += 1
        assert not write.done()
        other.execute("COMMIT")
        await write
        return ticks

    try:
        assert asyncio.run(calls()) == 20
    finally:
        writer.close()
        other.close()
    assert len(History(sqlite_database).executions(ExecutionFilter(), size=0, token="")[0]) == 1


def test_on_sqlite_rows_committed_on_the_event_loop_leave_a_bounded_wal(
    sqlite_database: Database, tmp_path: Path
) -> None:
    # Their connection makes no checkpoint (it would wait for the disk on the loop); one
    # runs in a worker thread after every hundred commits instead, and empties the WAL.
    writer = HistoryWriter(sqlite_database)

    async def calls() -> None:
        for _ in range(1000):
            info = execution()
            await writer.write(history_row(info), info.id, "")
        await asyncio.sleep(0.2)  # the last checkpoint finishes

    try:
        asyncio.run(calls())
    finally:
        writer.close()
    # A thousand commits of a dozen 4 KiB pages each, without a checkpoint: about 48 MB.
    assert (tmp_path / "toolvault.db-wal").stat().st_size < 16 * 1024 * 1024
