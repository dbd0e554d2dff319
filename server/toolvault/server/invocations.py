"""Invocation and history: runs a version in a sandbox and records every run.

A run waits for one of ``max_concurrent_runs`` sandbox slots; when
``max_queued_runs`` calls are already waiting, a new call is refused at once rather
than queued without bound. A version's ``max_concurrency`` bounds the calls of its
function (all versions, counted per server process) that hold or wait for a slot; one
over it is refused at once too. Every run that reached a sandbox is recorded, including
runs whose caller went away (status CANCELLED).

A successful run of a deterministic version is kept in the result cache (see
``cache``); an equal call then gets the result without a sandbox, recorded as its own
execution with ``cached`` set and ``cached_from`` naming the run it came from. Invoke's
idempotency keys are kept in ``idempotency``.

Plugins hear of each call once its arguments are checked (and may refuse it), and of each
recorded run. A run's spans are ``validate``, ``queue``, ``sandbox`` and ``record``, under
the RPC's span; the execution keeps the trace id.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from opentelemetry import trace
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from toolvault import sandbox
from toolvault.server import idempotency, metrics
from toolvault.server.cache import MAX_ENTRY_BYTES, ResultCache, cache_key
from toolvault.server.config import Settings
from toolvault.server.db import Database
from toolvault.server.errors import InvalidArgument, NotFound, ResourceExhausted
from toolvault.server.functions import FunctionStore, check_name, parse_json
from toolvault.server.models import Execution, utcnow
from toolvault.server.names import EVERYWHERE, Scope, namespace_of
from toolvault.server.paging import decode_token, encode_token, page_size
from toolvault.server.plugins import Call, Plugins
from toolvault.server.store import VersionInfo
from toolvault.server.toolspec import derived_schema_json
from toolvault.server.tracing import trace_id

log = logging.getLogger("toolvault.server")
CANCELLED = "CANCELLED"
OUTPUT_SCHEMA_MISMATCH = "OUTPUT_SCHEMA_MISMATCH"
# What the history keeps of each run; Invoke's reply carries the whole (capped) output.
HISTORY_TEXT_BYTES = 64 * 1024
HISTORY_OUTPUT_TAIL_BYTES = 4 * 1024
STATUSES = (*(s.name for s in sandbox.RunStatus), CANCELLED, OUTPUT_SCHEMA_MISMATCH)
_MAX_REPORTED_PROBLEMS = 20
# jsonschema quotes the failing value whole: a megabyte quoted twenty times made a 20 MB
# message, which overflowed a status's metadata and, in a few history rows, a page.
# Twenty problems of this size stay within gRPC's 8 KiB soft limit on a status's metadata.
_MAX_PROBLEM_CHARS = 200
_INSERT_EXECUTION = Execution.metadata.tables["executions"].insert()
# A duplicate call polls its idempotency key this often while the first call runs.
_KEY_POLL_S = 0.1
# The most rows one history commit takes (the others wait for the next).
_MAX_ROWS_PER_COMMIT = 256


@dataclass(frozen=True)
class CallContext:
    """On whose behalf a run happens: a plain Invoke, or an agent's tool call."""

    caller: str
    agent: str = ""
    agent_revision: int = 0
    conversation_id: str = ""
    chain_depth: int = 0


@dataclass(frozen=True)
class ExecutionInfo:
    """One run, as returned by Invoke or read from the history."""

    id: uuid.UUID
    function_name: str
    version: int
    sha256: str
    status: str
    args_json: str
    args_truncated: bool
    result_json: str
    result_truncated: bool
    stdout: str
    stderr: str
    error_type: str
    error_message: str
    traceback: str
    start_time: dt.datetime
    duration_ms: float
    cpu_time_ms: float
    peak_memory_bytes: int
    context: CallContext
    cached: bool = False
    cached_from: uuid.UUID | None = None
    trace_id: str = ""


@dataclass(frozen=True)
class ExecutionFilter:
    """Which executions to list; empty fields match everything."""

    function_name: str = ""
    status: str = ""
    version: int = 0
    start_from: dt.datetime | None = None
    start_to: dt.datetime | None = None
    agent: str = ""
    conversation_id: str = ""


class Invocations:
    """Runs functions in sandboxes, bounded in parallelism and queue length.

    Args:
        db: Where the history and the idempotency keys live.
        functions: Resolves the references that calls name.
        settings: Concurrency, queue, cache and argument limits, and the allow-list the
            default sandbox host preloads.
        plugins: Told of each call and of each recorded run.
        tracer: Makes the spans of each run.
        sandbox_host: The host to run the calls in; by default one built from
            ``settings``. The seam the test suite uses to run code that escaped the
            language layer (a host with ``language_layer=False``); nothing in the server
            passes one, so no setting or request chooses the host.
    """

    def __init__(
        self,
        db: Database,
        functions: FunctionStore,
        settings: Settings,
        *,
        plugins: Plugins | None = None,
        tracer: trace.Tracer | None = None,
        sandbox_host: sandbox.SandboxHost | None = None,
    ) -> None:
        self._db = db
        self._functions = functions
        self._settings = settings
        self._plugins = plugins or Plugins()
        self._tracer = tracer or trace.NoOpTracer()
        self._slots = asyncio.Semaphore(settings.max_concurrent_runs)
        self._waiting = 0
        self._running = 0
        self._per_function: Counter[str] = Counter()
        self._cache: ResultCache[ExecutionInfo] = ResultCache(
            settings.cache_max_entries, settings.cache_ttl_s
        )
        self._keys = idempotency.IdempotencyKeys(
            db,
            ttl_s=settings.idempotency_ttl_s,
            lease_s=settings.idempotency_lease_s,
        )
        self._history = History(db)
        self._writer = HistoryWriter(db)
        # Started by start_sandbox (or the first run), and again whenever it dies.
        if sandbox_host is None:
            sandbox_host = sandbox.SandboxHost(
                preload=settings.allowed_imports, hidden_paths=(str(settings.data_dir),)
            )
        self._sandbox = sandbox_host
        metrics.QUEUED.set_function(lambda: self._waiting)
        metrics.IN_FLIGHT.set_function(lambda: self._running)

    async def invoke(
        self, ref: str, args_json: str, context: CallContext, *, idempotency_key: str = ""
    ) -> ExecutionInfo:
        """Resolve ``ref``, check the arguments, run the version and record the run.

        With an ``idempotency_key`` used before for the same ``ref`` and ``args_json``,
        return that call's recorded execution instead; while that call is still running,
        wait for it.
        """
        if not idempotency_key:
            return await self._resolve_and_run(ref, args_json, context, "")
        if len(idempotency_key) > idempotency.MAX_KEY_LENGTH:
            raise InvalidArgument(
                f"idempotency_key is {len(idempotency_key)} characters, more than the limit "
                f"of {idempotency.MAX_KEY_LENGTH}"
            )
        # Keys are per namespace: another namespace's keys neither collide nor show.
        idempotency_key = f"{namespace_of(ref)}/{idempotency_key}"
        request = idempotency.fingerprint(ref, args_json)
        while True:
            try:
                claim = await asyncio.to_thread(self._keys.claim, idempotency_key, request)
            except IntegrityError:
                continue  # a concurrent duplicate inserted the key first: read its state
            if claim.execution_id is not None:
                return await asyncio.to_thread(self._history.get, str(claim.execution_id))
            if claim.owned:
                break
            await asyncio.sleep(_KEY_POLL_S)
        renewal = asyncio.create_task(self._renew(idempotency_key))
        try:
            return await self._resolve_and_run(ref, args_json, context, idempotency_key)
        except BaseException:
            # No run was recorded under the key: free it, so that the caller's retry runs.
            await asyncio.shield(asyncio.to_thread(self._keys.release, idempotency_key))
            raise
        finally:
            renewal.cancel()

    async def _renew(self, key: str) -> None:
        """Renew the lease of ``key`` until cancelled, so no other replica takes it over."""
        while True:
            await asyncio.sleep(self._keys.renew_every_s)
            try:
                await asyncio.to_thread(self._keys.renew, key)
            except SQLAlchemyError:
                # The run goes on; if the database stays away for a whole lease, another
                # replica may take the key over (see idempotency).
                log.warning("could not renew idempotency key %r", key, exc_info=True)

    async def _resolve_and_run(
        self, ref: str, args_json: str, context: CallContext, idempotency_key: str
    ) -> ExecutionInfo:
        version = await asyncio.to_thread(self._functions.resolve, ref)
        content = version.content
        # Without a schema of its own, a version's arguments are checked against the one
        # derived from its type hints: the same rule as for an agent's tool calls.
        return await self.run(
            version,
            args_json,
            context,
            content.input_schema or derived_schema_json(content.source, content.entrypoint),
            args_field="args_json",
            idempotency_key=idempotency_key,
        )

    async def run(
        self,
        version: VersionInfo,
        args_json: str,
        context: CallContext,
        input_schema: str | None,
        *,
        args_field: str,
        idempotency_key: str = "",
    ) -> ExecutionInfo:
        """Check the arguments against ``input_schema``, run ``version`` and record the run.

        ``args_field`` names the arguments in error messages, as the caller's request does.
        ``idempotency_key`` (already claimed) is bound to the execution as it is recorded.

        A result that does not match the version's output schema is recorded with the
        status OUTPUT_SCHEMA_MISMATCH. A deterministic version's result may come from the
        result cache.
        """
        with self._tracer.start_as_current_span("validate"):
            args_json, args = self._checked_args(args_json, input_schema, args_field)
            if self._plugins.implemented("before_invoke"):
                call = Call(version=version, args_json=args_json, context=context)
                await asyncio.to_thread(self._plugins.before_invoke, call)
        content = version.content
        key: tuple[str, str, str] | None = None
        if content.deterministic and self._cache.enabled:
            key = cache_key(version.name, version.sha256, args)
            hit = self._cache.get(key)
            metrics.CACHE_LOOKUPS.labels("miss" if hit is None else "hit").inc()
            if hit is not None:
                return await self._record_cached(hit, args_json, context, idempotency_key)
        job = sandbox.Job(
            source=content.source,
            entrypoint=content.entrypoint,
            args_json=args_json,
            allowed_imports=content.allowed_imports,
            limits=content.limits,
            filename=f"{version.name}@{version.version}",
        )
        info = ExecutionInfo(
            id=uuid.uuid4(),
            function_name=version.name,
            version=version.version,
            sha256=version.sha256,
            status=CANCELLED,
            args_json=args_json,
            args_truncated=False,
            result_json="",
            result_truncated=False,
            stdout="",
            stderr="",
            error_type="Cancelled",
            error_message="the caller cancelled the call or its deadline passed",
            traceback="",
            start_time=utcnow(),
            duration_ms=0.0,
            cpu_time_ms=0.0,
            peak_memory_bytes=0,
            context=context,
            trace_id=trace_id(trace.get_current_span()),
        )
        started = time.monotonic()
        try:
            with self._function_slot(version):
                result = await self._run(job)
        except asyncio.CancelledError:
            cancelled = replace(info, duration_ms=(time.monotonic() - started) * 1000)
            # Shielded: the record is written even though this task is being cancelled.
            await asyncio.shield(self._record_and_report(cancelled))
            raise
        info = replace(
            info,
            status=result.status.name,
            result_json=result.result_json,
            stdout=result.stdout,
            stderr=result.stderr,
            error_type=result.error_type,
            error_message=result.error_message,
            traceback=result.traceback,
            duration_ms=result.duration_ms,
            cpu_time_ms=result.cpu_time_ms,
            peak_memory_bytes=result.peak_memory_bytes,
        )
        if result.status is sandbox.RunStatus.OK and content.output_schema is not None:
            found = problems(content.output_schema, json.loads(result.result_json))
            if found:
                info = replace(
                    info,
                    status=OUTPUT_SCHEMA_MISMATCH,
                    error_type="OutputSchemaMismatch",
                    error_message="the result does not match the output schema: " + found,
                )
        await self._record_and_report(info, idempotency_key)
        metrics.INVOCATIONS.labels(info.function_name, info.status).inc()
        metrics.RUN_SECONDS.labels(info.function_name).observe(info.duration_ms / 1000)
        if key is not None and info.status == "OK" and _output_bytes(info) <= MAX_ENTRY_BYTES:
            self._cache.put(key, info)
        return info

    async def _record_cached(
        self, hit: ExecutionInfo, args_json: str, context: CallContext, idempotency_key: str
    ) -> ExecutionInfo:
        """Record and return a call answered from the cache with ``hit``'s result."""
        info = replace(
            hit,
            id=uuid.uuid4(),
            args_json=args_json,
            start_time=utcnow(),
            duration_ms=0.0,
            cpu_time_ms=0.0,
            peak_memory_bytes=0,
            context=context,
            cached=True,
            cached_from=hit.id,
            trace_id=trace_id(trace.get_current_span()),
        )
        await self._record_and_report(info, idempotency_key)
        metrics.INVOCATIONS.labels(info.function_name, info.status).inc()
        return info

    @contextlib.contextmanager
    def _function_slot(self, version: VersionInfo) -> Iterator[None]:
        """Count a call of ``version``'s function for as long as it waits or runs."""
        limit = version.content.max_concurrency
        active = self._per_function[version.name]
        if limit and active >= limit:
            metrics.REJECTIONS.labels("function_concurrency").inc()
            raise ResourceExhausted(
                f"function {version.name!r} allows {limit} concurrent calls; {active} are running"
            )
        self._per_function[version.name] += 1
        try:
            yield
        finally:
            self._per_function[version.name] -= 1
            if not self._per_function[version.name]:
                del self._per_function[version.name]

    async def _run(self, job: sandbox.Job) -> sandbox.RunResult:
        if self._slots.locked() and self._waiting >= self._settings.max_queued_runs:
            metrics.REJECTIONS.labels("queue_full").inc()
            raise ResourceExhausted(
                f"all {self._settings.max_concurrent_runs} sandboxes are busy and "
                f"{self._waiting} calls are waiting (max_queued_runs); retry later"
            )
        self._waiting += 1
        try:
            with self._tracer.start_as_current_span("queue"):
                await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        try:
            with self._tracer.start_as_current_span("sandbox"):
                return await self._sandbox.run(job)
        finally:
            self._running -= 1
            self._slots.release()

    async def start_sandbox(self) -> tuple[sandbox.Layer, ...]:
        """Start the sandbox host; return the layers its probe sandbox found in effect."""
        return (await self._sandbox.start()).layers

    async def close(self) -> None:
        """Stop the sandbox host and the history's writer, once no call runs any more."""
        await self._sandbox.close()
        await asyncio.to_thread(self._writer.close)

    def _checked_args(
        self, args_json: str, input_schema: str | None, field: str
    ) -> tuple[str, dict[str, Any]]:
        """The arguments' text (``{}`` for none) and their parsed form, once checked."""
        size = len(args_json.encode())
        if size > self._settings.max_args_bytes:
            raise InvalidArgument(
                f"{field} is {size} bytes, more than the limit of {self._settings.max_args_bytes}"
            )
        args = parse_json(args_json or "{}", field)
        if not isinstance(args, dict):
            raise InvalidArgument(f"{field} must be a JSON object, not {type(args).__name__}")
        if input_schema is not None and (found := problems(input_schema, args)):
            raise InvalidArgument(f"{field} does not match the input schema: {found}")
        return args_json or "{}", args

    async def _record_and_report(self, info: ExecutionInfo, idempotency_key: str = "") -> None:
        """Record a run, then tell the plugins (in a worker thread, if any listens)."""
        with self._tracer.start_as_current_span("record"):
            await self._writer.write(history_row(info), info.id, idempotency_key)
        if self._plugins.implemented("after_invoke"):
            await asyncio.to_thread(self._plugins.after_invoke, info)


@dataclass
class _PendingRow:
    """A history row waiting for its commit, and the caller waiting for it."""

    values: dict[str, Any]
    execution_id: uuid.UUID
    idempotency_key: str
    loop: asyncio.AbstractEventLoop
    committed: asyncio.Future[None] = field(repr=False)

    def settle(self, error: BaseException | None) -> None:
        """Wake the caller, from the writer's thread."""
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
            self.loop.call_soon_threadsafe(_settle, self.committed, error)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the row is written all the same
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


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
                self._commit(rows)
            except Exception as exc:
                if len(rows) == 1:
                    first.settle(exc)
                else:
                    for row in rows:
                        row.settle(self._commit_alone(row))
            else:
                for row in rows:
                    row.settle(None)
            if stopping:
                return

    def _commit(self, rows: list[_PendingRow]) -> None:
        # Core on a bare connection: the ORM's insert path costs four times as much as the
        # row, and a session around it a third as much again.
        with self._db.write_engine.begin() as connection:
            connection.execute(_INSERT_EXECUTION, [row.values for row in rows])
            for row in rows:
                if row.idempotency_key:
                    idempotency.bind(connection, row.idempotency_key, row.execution_id)

    def _commit_alone(self, row: _PendingRow) -> Exception | None:
        try:
            self._commit([row])
        except Exception as exc:
            return exc
        return None


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
    }


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
            row = session.get(Execution, key)
            if row is None or not scope.allows(row.function_name):
                raise NotFound(f"execution {execution_id} not found")
            return _execution_info(row)

    def executions(
        self, where: ExecutionFilter, *, scope: Scope = EVERYWHERE, size: int, token: str
    ) -> tuple[list[ExecutionInfo], str]:
        """A page of the executions in ``scope``, newest first, and the next page's token."""
        query = select(Execution).order_by(Execution.start_time.desc(), Execution.id.desc())
        if scope.namespaces is not None:
            query = query.where(Execution.namespace.in_(scope.namespaces))
        if where.function_name:
            query = query.where(Execution.function_name == check_name(where.function_name))
        if where.status:
            if where.status not in STATUSES:
                raise InvalidArgument(f"status {where.status!r} is not one of {STATUSES}")
            query = query.where(Execution.status == where.status)
        if where.version:
            if not where.function_name:
                raise InvalidArgument("version filters need function_name")
            query = query.where(Execution.version == where.version)
        if where.start_from is not None:
            query = query.where(Execution.start_time >= where.start_from)
        if where.start_to is not None:
            query = query.where(Execution.start_time < where.start_to)
        if where.agent:
            query = query.where(Execution.agent == where.agent)
        if where.conversation_id:
            query = query.where(Execution.conversation_id == where.conversation_id)
        key = decode_token(token, str, str)
        if key is not None:
            try:
                after_time, after_id = dt.datetime.fromisoformat(key[0]), uuid.UUID(key[1])
                # Issued tokens hold UTC times; a naive or unrepresentable one fails in SQL.
                if after_time.tzinfo is None:
                    raise ValueError("naive time")
                after_time = after_time.astimezone(dt.UTC)
            except (TypeError, ValueError, OverflowError) as e:
                raise InvalidArgument("page_token is not a token this server issued") from e
            query = query.where(
                (Execution.start_time < after_time)
                | ((Execution.start_time == after_time) & (Execution.id < after_id))
            )
        limit = page_size(size)
        with self._db.read.begin() as session:
            rows = [_execution_info(r) for r in session.scalars(query.limit(limit + 1))]
        if len(rows) <= limit:
            return rows, ""
        last = rows[limit - 1]
        return rows[:limit], encode_token([last.start_time.isoformat(), str(last.id)])


def _execution_info(row: Execution) -> ExecutionInfo:
    return ExecutionInfo(
        id=row.id,
        function_name=row.function_name,
        version=row.version,
        sha256=row.sha256,
        status=row.status,
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
    )


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    # Without a registry of its own, jsonschema fetches any $ref it cannot resolve inside
    # the schema with urlopen: http(s) and file URLs, from the server process, outside the
    # sandbox. A publisher could make the server request internal URLs, and read the
    # server's JSON files back through the error messages. An empty registry (to which
    # jsonschema adds the drafts' meta-schemas) resolves only refs within the schema.
    return jsonschema.validators.validator_for(schema)(schema, registry=referencing.Registry())


def problems(schema_json: str, instance: Any) -> str:
    """Each way ``instance`` fails the schema, with its JSON path; "" when it matches.

    A schema that cannot be evaluated (a $ref it cannot resolve, or one that refers to
    itself without end) is a problem too: a schema is checked only as JSON Schema when
    it is stored, and may never match anything.

    Each problem is cut to ``_MAX_PROBLEM_CHARS`` characters, ending in "…" when cut.
    """
    try:
        errors = sorted(_validator(schema_json).iter_errors(instance), key=lambda e: e.path)
    except referencing.exceptions.Unresolvable as e:
        return f"$: the schema's $ref {e.ref!r} cannot be resolved (only refs within it can)"
    except RecursionError:
        return "$: the schema's $refs refer to each other without end"
    return "; ".join(_brief(f"{e.json_path}: {e.message}") for e in errors[:_MAX_REPORTED_PROBLEMS])


def _brief(problem: str) -> str:
    if len(problem) <= _MAX_PROBLEM_CHARS:
        return problem
    return problem[: _MAX_PROBLEM_CHARS - 1] + "\u2026"


def _output_bytes(info: ExecutionInfo) -> int:
    return sum(len(text.encode()) for text in (info.result_json, info.stdout, info.stderr))


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
