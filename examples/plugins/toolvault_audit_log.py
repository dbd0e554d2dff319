"""An audit log for toolvault: one JSON line per publish, call, run and agent change.

Install it next to the server (``pip install examples/plugins``) and every ``toolvault
serve`` loads it through its ``toolvault.plugins`` entry point; or load it without
installing: ``toolvault serve --plugin toolvault_audit_log:AuditLog`` with this directory
on ``PYTHONPATH``. Lines go to the file named by ``TOOLVAULT_AUDIT_LOG`` (appended to),
or to standard error when it is unset.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
from typing import Any

from toolvault.server.domain.agents import AgentInfo
from toolvault.server.domain.executions import ExecutionInfo
from toolvault.server.domain.functions import VersionInfo
from toolvault.server.services.plugins import AgentChange, Call, hookimpl


class AuditLog:
    """Writes each event as a JSON object on its own line."""

    def __init__(self) -> None:
        self._path = os.environ.get("TOOLVAULT_AUDIT_LOG", "")
        # Hooks run in worker threads, several at once: one line must not cut into another.
        self._lock = threading.Lock()

    @hookimpl
    def function_published(self, version: VersionInfo) -> None:
        """A new version was stored."""
        self._write(
            "function_published",
            function=version.name,
            version=version.version,
            sha256=version.sha256,
        )

    @hookimpl
    def before_invoke(self, call: Call) -> None:
        """A call is about to run; an audit log lets every call through."""
        self._write(
            "call",
            function=call.version.name,
            version=call.version.version,
            caller=call.context.caller,
            agent=call.context.agent,
        )

    @hookimpl
    def after_invoke(self, execution: ExecutionInfo) -> None:
        """A run was recorded."""
        self._write(
            "run",
            execution_id=str(execution.id),
            function=execution.function_name,
            version=execution.version,
            status=execution.status,
            duration_ms=execution.duration_ms,
            cached=execution.cached,
            caller=execution.context.caller,
            agent=execution.context.agent,
            trace_id=execution.trace_id,
        )

    @hookimpl
    def agent_changed(self, agent: AgentInfo, change: AgentChange) -> None:
        """An agent was created, updated or deleted."""
        self._write("agent_" + change, agent=agent.definition.name, revision=agent.revision)

    def _write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": dt.datetime.now(dt.UTC).isoformat(), "event": event, **fields})
        with self._lock:
            if not self._path:
                print(line, file=sys.stderr, flush=True)
                return
            with open(self._path, "a", encoding="utf-8") as log:
                log.write(line + "\n")
