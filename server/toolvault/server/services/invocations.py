"""Invocation: runs a version in a sandbox and records every run.

A run is admitted by ``admission`` (a sandbox slot, the function's ``max_concurrency``)
and recorded by ``history``'s writer. Every run that reached a sandbox is recorded,
including runs whose caller went away (status CANCELLED).

A successful run of a deterministic version is kept in the result cache (see
``cache``); an equal call then gets the result without a sandbox, recorded as its own
execution with ``cached`` set and ``cached_from`` naming the run it came from. Invoke's
idempotency keys are kept in ``idempotency``.

A version that declares secrets gets their values from its function's namespace in its
job (``secrets``); a call fails before it runs (FAILED_PRECONDITION, not recorded: no
run happened, as for arguments that fail their schema) while one is not set. Every
occurrence of those values in the execution is replaced with ``***`` (``Redactor``)
before it is recorded, cached, reported to plugins or returned.

A call's files (``sandbox.File``) are checked against the server's caps before anything
runs; the history records the names, sizes and sha256 of the files in and out, and keeps
the bytes of the files out for ``file_retention_s``. Calls with files skip the cache.

Plugins hear of each call once its arguments are checked (and may refuse it), and of each
recorded run. A run's spans are ``validate``, ``queue``, ``sandbox`` and ``record``, under
the RPC's span; the execution keeps the trace id.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import json
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from opentelemetry import trace
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from toolvault import sandbox
from toolvault.server.config import Settings
from toolvault.server.db.engine import Database
from toolvault.server.db.executions import history_row, output_rows
from toolvault.server.db.tables import utcnow
from toolvault.server.domain.errors import InvalidArgument
from toolvault.server.domain.executions import (
    CallContext,
    ExecutionFile,
    ExecutionInfo,
    ExecutionStatus,
    FileDirection,
)
from toolvault.server.domain.functions import Isolation, VersionInfo
from toolvault.server.domain.names import namespace_of
from toolvault.server.domain.schemas import parse_json, problems
from toolvault.server.domain.secrets import Redactor
from toolvault.server.domain.toolspec import derived_schema_json
from toolvault.server.services import idempotency
from toolvault.server.services.admission import Admission
from toolvault.server.services.cache import MAX_ENTRY_BYTES, ResultCache, cache_key
from toolvault.server.services.functions import FunctionStore
from toolvault.server.services.history import History, HistoryWriter
from toolvault.server.services.plugins import Call, Plugins
from toolvault.server.services.secrets import Secrets
from toolvault.server.telemetry import metrics
from toolvault.server.telemetry.tracing import QuietTracer, trace_id

log = logging.getLogger("toolvault.server")
# A duplicate call polls its idempotency key this often while the first call runs.
_KEY_POLL_S = 0.1


class Invocations:
    """Runs functions in sandboxes, bounded in parallelism and queue length.

    Args:
        db: Where the history and the idempotency keys live.
        functions: Resolves the references that calls name.
        settings: Concurrency, queue, cache and argument limits, and the allow-list the
            default sandbox host preloads.
        plugins: Told of each call and of each recorded run.
        secrets: Where the values of the secrets that versions declare come from; by
            default the database's, under ``settings``' keys.
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
        secrets: Secrets | None = None,
        tracer: trace.Tracer | None = None,
        sandbox_host: sandbox.SandboxHost | None = None,
    ) -> None:
        self._db = db
        self._secrets = secrets or Secrets(db, settings.secrets_keys())
        self._functions = functions
        self._settings = settings
        self._plugins = plugins or Plugins()
        self._tracer = tracer or QuietTracer()
        self._admission = Admission(
            settings.max_concurrent_runs, settings.max_queued_runs, self._tracer
        )
        self._cache: ResultCache[ExecutionInfo] = ResultCache(
            settings.cache_max_entries, settings.cache_ttl_s
        )
        self._keys = idempotency.IdempotencyKeys(
            db,
            ttl_s=settings.idempotency_ttl_s,
            lease_s=settings.idempotency_lease_s,
        )
        self._history = History(db, file_retention_s=settings.file_retention_s)
        self._writer = HistoryWriter(db, file_retention_s=settings.file_retention_s)
        # Started by start_sandbox (or the first run), and again whenever it dies.
        if sandbox_host is None:
            sandbox_host = sandbox.SandboxHost(
                preload=settings.allowed_imports
                + (sandbox.EGRESS_PRELOAD if settings.egress != "off" else ()),
                hidden_paths=(str(settings.data_dir),),
                max_workers=settings.warm_workers,
                max_workers_per_key=settings.warm_workers_per_version,
                max_calls_per_worker=settings.warm_worker_calls,
                worker_idle_s=settings.warm_worker_idle_s,
                idle_memory_bytes=settings.warm_idle_memory_mb << 20,
                spares=settings.fresh_spares,
            )
        self._sandbox = sandbox_host
        self._private = tuple(
            ipaddress.ip_network(network, strict=False) for network in settings.egress_allow_private
        )

    async def invoke(
        self,
        ref: str,
        args_json: str,
        context: CallContext,
        *,
        idempotency_key: str = "",
        files: tuple[sandbox.File, ...] = (),
    ) -> ExecutionInfo:
        """Resolve ``ref``, check the arguments and files, run the version and record the run.

        With an ``idempotency_key`` used before for the same ``ref``, ``args_json`` and
        ``files``, return that call's recorded execution instead (with its output files
        while they are kept); while that call is still running, wait for it.
        """
        if not idempotency_key:
            return await self._resolve_and_run(ref, args_json, context, "", files)
        if len(idempotency_key) > idempotency.MAX_KEY_LENGTH:
            raise InvalidArgument(
                f"idempotency_key is {len(idempotency_key)} characters, more than the limit "
                f"of {idempotency.MAX_KEY_LENGTH}"
            )
        # Keys are per namespace: another namespace's keys neither collide nor show.
        idempotency_key = f"{namespace_of(ref)}/{idempotency_key}"
        request = idempotency.fingerprint(ref, args_json, _digests(files))
        while True:
            try:
                claim = await asyncio.to_thread(self._keys.claim, idempotency_key, request)
            except IntegrityError:
                continue  # a concurrent duplicate inserted the key first: read its state
            if claim.execution_id is not None:
                return await asyncio.to_thread(
                    self._history.get, str(claim.execution_id), outputs=True
                )
            if claim.owned:
                break
            await asyncio.sleep(_KEY_POLL_S)
        renewal = asyncio.create_task(self._renew(idempotency_key))
        try:
            return await self._resolve_and_run(ref, args_json, context, idempotency_key, files)
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
        self,
        ref: str,
        args_json: str,
        context: CallContext,
        idempotency_key: str,
        files: tuple[sandbox.File, ...],
    ) -> ExecutionInfo:
        version = await self._functions.resolve_call(ref)
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
            files=files,
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
        files: tuple[sandbox.File, ...] = (),
    ) -> ExecutionInfo:
        """Check the arguments against ``input_schema``, run ``version`` and record the run.

        ``args_field`` names the arguments in error messages, as the caller's request does.
        ``idempotency_key`` (already claimed) is bound to the execution as it is recorded.
        ``files`` are put in the run's working directory, once checked against the caps.

        A result that does not match the version's output schema is recorded with the
        status OUTPUT_SCHEMA_MISMATCH. A deterministic version's result may come from the
        result cache.
        """
        with self._tracer.start_as_current_span("validate"):
            args_json, args = self._checked_args(args_json, input_schema, args_field)
            self._check_files(files)
            if self._plugins.implemented("before_invoke"):
                call = Call(version=version, args_json=args_json, context=context)
                await asyncio.to_thread(self._plugins.before_invoke, call)
        content = version.content
        secrets: dict[str, str] = {}
        if content.secrets:
            secrets = await asyncio.to_thread(
                self._secrets.values, namespace_of(version.name), content.secrets
            )
        redactor = Redactor(secrets.values())
        key: tuple[str, str, str] | None = None
        if content.deterministic and self._cache.enabled and not files:
            key = cache_key(version.name, version.sha256, args, secrets)
            hit = self._cache.get(key)
            metrics.CACHE_LOOKUPS.labels("miss" if hit is None else "hit").inc()
            if hit is not None:
                return await self._record_cached(
                    hit, redactor.json_text(args_json), context, idempotency_key
                )
        job = sandbox.Job(
            source=content.source,
            entrypoint=content.entrypoint,
            args_json=args_json,
            allowed_imports=content.allowed_imports,
            limits=replace(
                content.limits,
                max_files=self._settings.max_files,
                max_file_bytes=self._settings.max_file_bytes,
                max_files_bytes=self._settings.max_files_bytes,
            ),
            filename=f"{version.name}@{version.version}",
            secrets=secrets,
            files=files,
        )
        inputs = _described(FileDirection.IN, files)
        info = ExecutionInfo(
            id=uuid.uuid4(),
            function_name=version.name,
            version=version.version,
            sha256=version.sha256,
            status=ExecutionStatus.CANCELLED,
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
            files=inputs,
        )
        started = time.monotonic()
        try:
            with self._admission.function_slot(version):
                result = await self._run(job, self._worker_key(version), self._egress(version))
        except asyncio.CancelledError:
            cancelled = redactor.execution(
                replace(info, duration_ms=(time.monotonic() - started) * 1000)
            )
            # Shielded: the record is written even though this task is being cancelled.
            await asyncio.shield(self._record_and_report(cancelled))
            raise
        # The files too: what the call returns, and what the history keeps while kept.
        outputs = tuple(
            replace(file, content=redactor.content(file.content)) for file in result.files
        )
        info = replace(
            info,
            status=ExecutionStatus(result.status.name),
            result_json=result.result_json,
            stdout=result.stdout,
            stderr=result.stderr,
            error_type=result.error_type,
            error_message=result.error_message,
            traceback=result.traceback,
            duration_ms=result.duration_ms,
            cpu_time_ms=result.cpu_time_ms,
            peak_memory_bytes=result.peak_memory_bytes,
            isolation=Isolation.WARM if result.warm else Isolation.FRESH,
            egress=result.egress,
            files=inputs + _described(FileDirection.OUT, outputs),
            outputs=outputs,
        )
        _count_egress(info)
        if result.status is sandbox.RunStatus.OK and content.output_schema is not None:
            found = problems(content.output_schema, json.loads(result.result_json))
            if found:
                info = replace(
                    info,
                    status=ExecutionStatus.OUTPUT_SCHEMA_MISMATCH,
                    error_type="OutputSchemaMismatch",
                    error_message="the result does not match the output schema: " + found,
                )
        info = redactor.execution(info)
        await self._record_and_report(info, idempotency_key)
        metrics.INVOCATIONS.labels(info.function_name, info.status).inc()
        metrics.RUN_SECONDS.labels(info.function_name).observe(info.duration_ms / 1000)
        if (
            key is not None
            and info.status == ExecutionStatus.OK
            and not info.outputs
            and _output_bytes(info) <= MAX_ENTRY_BYTES
        ):
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
            isolation=None,
            egress=(),  # no sandbox ran: nothing reached the network for it
        )
        await self._record_and_report(info, idempotency_key)
        metrics.INVOCATIONS.labels(info.function_name, info.status).inc()
        return info

    async def _run(
        self, job: sandbox.Job, worker_key: str | None, egress: sandbox.Egress | None
    ) -> sandbox.RunResult:
        await self._admission.acquire()
        try:
            with self._tracer.start_as_current_span("sandbox"):
                return await self._sandbox.run(job, worker_key=worker_key, egress=egress)
        finally:
            self._admission.release()

    def retire(self, versions: list[VersionInfo]) -> None:
        """Retire the warm workers of ``versions``, which no call can name any more."""
        for version in versions:
            if (key := self._worker_key(version)) is not None:
                self._sandbox.retire(key)

    def _worker_key(self, version: VersionInfo) -> str | None:
        """The warm workers that may run ``version``: its own, or None for a fresh process.

        Fresh when the version was published so, or the operator forces it for every
        call (``sandbox_mode``) or for the version's namespace (``fresh_namespaces``).

        The key names the namespace (in the name), the version, its content and when it
        was stored, so that a worker never serves another version, nor one published
        again under the same number after its function was deleted. Workers of a deleted
        version serve nothing more and retire when idle.
        """
        if (
            version.content.isolation is Isolation.FRESH
            or self._settings.sandbox_mode == "fresh"
            or namespace_of(version.name) in self._settings.fresh_namespaces
        ):
            return None
        stored = version.created_at.isoformat()
        return f"{version.name}@{version.version}#{version.sha256}#{stored}"

    def _egress(self, version: VersionInfo) -> sandbox.Egress | None:
        """What a call of ``version`` may reach: its list, within its namespace's today.

        The namespace's list (and the server's egress setting) may have narrowed since
        the version was published; a version that declares egress gets a door even when
        nothing is left, so that its requests are refused and recorded, not lost.
        """
        if not version.content.egress:
            return None
        settings = self._settings
        return sandbox.Egress(
            rules=_rules_within(
                version.content.egress, settings.egress_ceiling(namespace_of(version.name))
            ),
            private=self._private,
            max_requests=settings.egress_max_requests,
            max_bytes_sent=settings.egress_max_bytes,
            max_bytes_received=settings.egress_max_bytes,
            request_timeout_ms=settings.egress_request_timeout_ms,
        )

    async def start_sandbox(self) -> tuple[sandbox.Layer, ...]:
        """Start the sandbox host; return the layers its probe sandbox found in effect."""
        return (await self._sandbox.start()).layers

    async def close(self) -> None:
        """Stop the sandbox host and the history's writer, once no call runs any more."""
        await self._sandbox.close()
        await asyncio.to_thread(self._writer.close)

    def _check_files(self, files: tuple[sandbox.File, ...]) -> None:
        """Refuse files over the server's caps, or whose names are not plain file names."""
        settings = self._settings
        if len(files) > settings.max_files:
            raise InvalidArgument(
                f"files: {len(files)} files, more than the limit of {settings.max_files}"
            )
        names: set[str] = set()
        for file in files:
            if problem := sandbox.file_name_problem(file.name):
                raise InvalidArgument(f"files: the name {file.name!r} {problem}")
            if file.name == sandbox.OUTPUT_DIR:
                raise InvalidArgument(
                    f"files: the name {file.name!r} is taken: it is the directory where the "
                    "function leaves the files it returns"
                )
            if file.name in names:
                raise InvalidArgument(f"files: the name {file.name!r} comes twice")
            names.add(file.name)
            if len(file.content) > settings.max_file_bytes:
                raise InvalidArgument(
                    f"files: {file.name!r} is {len(file.content)} bytes, more than the limit "
                    f"of {settings.max_file_bytes} bytes a file"
                )
        total = sum(len(file.content) for file in files)
        if total > settings.max_files_bytes:
            raise InvalidArgument(
                f"files: {total} bytes together, more than the limit of {settings.max_files_bytes}"
            )

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
            outputs = output_rows(info) if self._settings.file_retention_s > 0 else None
            await self._writer.write(history_row(info), info.id, idempotency_key, outputs)
        if self._plugins.implemented("after_invoke"):
            await asyncio.to_thread(self._plugins.after_invoke, info)


@functools.lru_cache(maxsize=1024)
def _rules_within(
    entries: tuple[str, ...], ceiling: tuple[sandbox.EgressRule, ...]
) -> tuple[sandbox.EgressRule, ...]:
    return tuple(
        rule
        for rule in sandbox.parse_rules(entries)
        if any(allowed.covers(rule) for allowed in ceiling)
    )


def _count_egress(info: ExecutionInfo) -> None:
    for record in info.egress:
        outcome = "refused" if record.refused else "failed" if not record.address else "ok"
        metrics.EGRESS_REQUESTS.labels(info.function_name, outcome).inc()
        metrics.EGRESS_BYTES.labels(info.function_name, "sent").inc(record.bytes_sent)
        metrics.EGRESS_BYTES.labels(info.function_name, "received").inc(record.bytes_received)


def _described(
    direction: FileDirection, files: tuple[sandbox.File, ...]
) -> tuple[ExecutionFile, ...]:
    """What the history keeps of ``files``, in name order."""
    return tuple(
        ExecutionFile(direction, file.name, len(file.content), _sha256(file.content))
        for file in sorted(files, key=lambda file: file.name)
    )


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _digests(files: tuple[sandbox.File, ...]) -> list[tuple[str, str]]:
    """The names and sha256 of ``files``, in name order: what a call's fingerprint covers."""
    return [(file.name, file.sha256) for file in _described(FileDirection.IN, files)]


def _output_bytes(info: ExecutionInfo) -> int:
    return sum(len(text.encode()) for text in (info.result_json, info.stdout, info.stderr))
