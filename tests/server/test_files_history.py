"""Output files in the history: their bytes beside the executions, read only when asked, expired."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
from typing import Any

from sqlalchemy import event

from tests.server.test_history_writer import execution
from toolvault import sandbox
from toolvault.server.db.engine import Database
from toolvault.server.db.executions import history_row, output_rows
from toolvault.server.domain.executions import (
    ExecutionFile,
    ExecutionFilter,
    ExecutionInfo,
    FileDirection,
)
from toolvault.server.services.history import History, HistoryWriter

CHART = sandbox.File("chart.svg", b"<svg/>" * 1000)


def with_chart(started: dt.datetime) -> ExecutionInfo:
    return replace(
        execution(),
        start_time=started,
        files=(ExecutionFile(FileDirection.OUT, CHART.name, len(CHART.content), "0" * 64),),
        outputs=(CHART,),
    )


def write(database: Database, retention_s: float, *infos: ExecutionInfo) -> None:
    async def writes() -> None:
        writer = HistoryWriter(database, file_retention_s=retention_s)
        try:
            for info in infos:
                await writer.write(history_row(info), info.id, "", output_rows(info))
        finally:
            writer.close()

    asyncio.run(writes())


def statements(database: Database) -> list[str]:
    seen: list[str] = []

    def before_cursor_execute(*args: Any) -> None:
        seen.append(args[2])

    event.listen(database.engine, "before_cursor_execute", before_cursor_execute)
    return seen


def test_listing_executions_never_reads_the_bytes_of_their_files(database: Database) -> None:
    info = with_chart(dt.datetime.now(dt.UTC))
    write(database, 3600, info)
    history = History(database, file_retention_s=3600)
    seen = statements(database)

    (listed,), _ = history.executions(ExecutionFilter(), size=10, token="")
    found = history.get(str(info.id))

    assert listed.files == found.files == info.files
    assert listed.outputs == found.outputs == ()
    assert not any("execution_outputs" in sql for sql in seen), seen
    assert history.get(str(info.id), outputs=True).outputs == (CHART,)
    assert any("execution_outputs" in sql for sql in seen)


def test_a_write_with_files_deletes_the_bytes_past_the_retention_period(
    database: Database,
) -> None:
    now = dt.datetime.now(dt.UTC)
    old, recent = with_chart(now - dt.timedelta(hours=2)), with_chart(now)
    history = History(database, file_retention_s=3600)

    write(database, 3600, old)
    # Stored, but past the period: never returned, deleted or not.
    assert history.get(str(old.id), outputs=True).outputs == ()
    assert History(database, file_retention_s=3 * 3600).get(str(old.id), outputs=True).outputs

    write(database, 3600, recent)
    # The next write with files deleted them; the metadata stays.
    longer = History(database, file_retention_s=3 * 3600)
    assert longer.get(str(old.id), outputs=True).outputs == ()
    assert longer.get(str(old.id)).files == old.files
    assert history.get(str(recent.id), outputs=True).outputs == (CHART,)


def test_an_execution_without_files_reads_back_none_and_asks_for_none(
    database: Database,
) -> None:
    info = execution()
    write(database, 3600, info)
    seen = statements(database)
    found = History(database).get(str(info.id), outputs=True)
    assert (found.files, found.outputs) == ((), ())
    assert not any("execution_outputs" in sql for sql in seen), seen
