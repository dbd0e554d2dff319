"""Queries of the execution history: the rows of runs, written and read.

Every function takes the session or connection of the caller's unit of work and never
commits. ``history_row`` decides what the history keeps of a run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.orm import Session

from toolvault.sandbox import EgressRecord, File
from toolvault.server.db.tables import Execution, ExecutionOutput
from toolvault.server.domain.executions import (
    CallContext,
    ExecutionFile,
    ExecutionFilter,
    ExecutionInfo,
    ExecutionStatus,
    FileDirection,
)
from toolvault.server.domain.functions import Isolation
from toolvault.server.domain.names import Scope, namespace_of

# What the history keeps of each run; Invoke's reply carries the whole (capped) output.
HISTORY_TEXT_BYTES = 64 * 1024
HISTORY_OUTPUT_TAIL_BYTES = 4 * 1024
_INSERT_EXECUTION = Execution.metadata.tables["executions"].insert()
_INSERT_OUTPUT = ExecutionOutput.metadata.tables["execution_outputs"].insert()


def insert(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert execution rows (made by :func:`history_row`) in one statement.

    Core on a bare connection: the ORM's insert path costs four times as much as the
    row, and a session around it a third as much again.
    """
    connection.execute(_INSERT_EXECUTION, rows)


def insert_outputs(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert the rows of output files' bytes (made by :func:`output_rows`)."""
    connection.execute(_INSERT_OUTPUT, rows)


def output_rows(info: ExecutionInfo) -> list[dict[str, Any]]:
    """The rows that keep the bytes of the files ``info``'s run left in out/."""
    return [
        {
            "execution_id": info.id,
            "name": file.name,
            "content": file.content,
            "created_at": info.start_time,
        }
        for file in info.outputs
    ]


def outputs(session: Session, execution_id: uuid.UUID, since: dt.datetime) -> tuple[File, ...]:
    """The output files of an execution still kept: stored at ``since`` or later."""
    query = (
        select(ExecutionOutput.name, ExecutionOutput.content)
        .where(ExecutionOutput.execution_id == execution_id)
        .where(ExecutionOutput.created_at >= since)
        .order_by(ExecutionOutput.name)
    )
    return tuple(File(name, content) for name, content in session.execute(query))


def delete_expired_outputs(connection: Connection, before: dt.datetime) -> None:
    """Delete the bytes of output files stored before ``before`` (their metadata stays)."""
    connection.execute(delete(ExecutionOutput).where(ExecutionOutput.created_at < before))


def find(session: Session, execution_id: uuid.UUID) -> ExecutionInfo | None:
    """The execution with this id, if there is one."""
    row = session.get(Execution, execution_id)
    return None if row is None else _execution_info(row)


def page(
    session: Session,
    where: ExecutionFilter,
    *,
    scope: Scope,
    after: tuple[dt.datetime, uuid.UUID] | None,
    limit: int,
) -> list[ExecutionInfo]:
    """Up to ``limit`` executions in ``scope`` that ``where`` selects, newest first.

    ``after`` is the start time and id of the last execution of the previous page.
    """
    query = select(Execution).order_by(Execution.start_time.desc(), Execution.id.desc())
    if scope.namespaces is not None:
        query = query.where(Execution.namespace.in_(scope.namespaces))
    if where.function_name:
        query = query.where(Execution.function_name == where.function_name)
    if where.status:
        query = query.where(Execution.status == where.status)
    if where.version:
        query = query.where(Execution.version == where.version)
    if where.start_from is not None:
        query = query.where(Execution.start_time >= where.start_from)
    if where.start_to is not None:
        query = query.where(Execution.start_time < where.start_to)
    if where.agent:
        query = query.where(Execution.agent == where.agent)
    if where.conversation_id:
        query = query.where(Execution.conversation_id == where.conversation_id)
    if after is not None:
        after_time, after_id = after
        query = query.where(
            (Execution.start_time < after_time)
            | ((Execution.start_time == after_time) & (Execution.id < after_id))
        )
    return [_execution_info(row) for row in session.scalars(query.limit(limit))]


def history_row(info: ExecutionInfo) -> dict[str, Any]:
    """The history's row of a run: long texts cut to what the history keeps."""
    args_json, args_cut = _head(info.args_json, HISTORY_TEXT_BYTES)
    result_json, result_cut = _head(info.result_json, HISTORY_TEXT_BYTES)
    return {
        "id": info.id,
        "function_name": info.function_name,
        "namespace": namespace_of(info.function_name),
        "version": info.version,
        "sha256": info.sha256,
        "status": info.status,
        "args_json": args_json,
        "args_truncated": args_cut,
        "result_json": result_json,
        "result_truncated": result_cut,
        "stdout_tail": _storable(_tail(info.stdout, HISTORY_OUTPUT_TAIL_BYTES)),
        "stderr_tail": _storable(_tail(info.stderr, HISTORY_OUTPUT_TAIL_BYTES)),
        "error_type": _storable(info.error_type),
        "error_message": _storable(info.error_message),
        "traceback": _storable(_tail(info.traceback, HISTORY_TEXT_BYTES)),
        "start_time": info.start_time,
        "duration_ms": info.duration_ms,
        "cpu_time_ms": info.cpu_time_ms,
        "peak_memory_bytes": info.peak_memory_bytes,
        "caller": info.context.caller[:256],
        "agent": info.context.agent,
        "agent_revision": info.context.agent_revision,
        "conversation_id": info.context.conversation_id,
        "chain_depth": info.context.chain_depth,
        "cached": info.cached,
        "cached_from": info.cached_from,
        "trace_id": info.trace_id,
        "isolation": "" if info.isolation is None else info.isolation.value,
        "egress": json.dumps([dataclasses.asdict(record) for record in info.egress]),
        "files": json.dumps([dataclasses.asdict(file) for file in info.files]),
    }


def _execution_info(row: Execution) -> ExecutionInfo:
    return ExecutionInfo(
        id=row.id,
        function_name=row.function_name,
        version=row.version,
        sha256=row.sha256,
        status=ExecutionStatus(row.status),
        args_json=row.args_json,
        args_truncated=row.args_truncated,
        result_json=row.result_json,
        result_truncated=row.result_truncated,
        stdout=row.stdout_tail,
        stderr=row.stderr_tail,
        error_type=row.error_type,
        error_message=row.error_message,
        traceback=row.traceback,
        start_time=row.start_time,
        duration_ms=row.duration_ms,
        cpu_time_ms=row.cpu_time_ms,
        peak_memory_bytes=row.peak_memory_bytes,
        context=CallContext(
            caller=row.caller,
            agent=row.agent,
            agent_revision=row.agent_revision,
            conversation_id=row.conversation_id,
            chain_depth=row.chain_depth,
        ),
        cached=row.cached,
        cached_from=row.cached_from,
        trace_id=row.trace_id,
        isolation=Isolation(row.isolation) if row.isolation else None,
        egress=tuple(EgressRecord(**fields) for fields in json.loads(row.egress)),
        files=tuple(
            ExecutionFile(**{**fields, "direction": FileDirection(fields["direction"])})
            for fields in json.loads(row.files)
        ),
    )


def _head(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode()
    if len(data) <= limit:
        return text, False
    return data[:limit].decode(errors="ignore"), True


def _storable(text: str) -> str:
    """``text`` with NUL characters, which PostgreSQL cannot store, as U+FFFD."""
    return text.replace("\x00", "\ufffd")


def _tail(text: str, limit: int) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[-limit:].decode(errors="ignore")
