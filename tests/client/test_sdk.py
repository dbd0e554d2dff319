"""The SDK against a real server (SQLite and PostgreSQL): versions, aliases, runs, history."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from toolvault.client import (
    Client,
    DeadlineExceeded,
    ExecutionStatus,
    InvalidArgument,
    NotFound,
)

ADD = '''def main(a, b):
    """Adds two numbers."""
    print("adding", a, "and", b)
    return a + b
'''
DIVIDE = '''def main(x):
    """Divides one by x."""
    return 1 / x
'''
SPIN = """def main():
    while True:
        pass
"""
ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}


def test_publishing_is_idempotent_and_changes_make_new_versions_that_refs_and_aliases_name(
    server: str,
) -> None:
    with Client(server, timeout=30) as client:
        first = client.publish("add", ADD, input_schema=ADD_SCHEMA, timeout_ms=2000)
        again = client.publish("add", ADD, input_schema=ADD_SCHEMA, timeout_ms=2000)
        second = client.publish("add", ADD, input_schema=ADD_SCHEMA, timeout_ms=3000)

        assert (first.name, first.version, first.created) == ("add", 1, True)
        assert (first.source, first.entrypoint, first.description) == (
            ADD,
            "main",
            "Adds two numbers.",
        )
        assert (first.input_schema, first.output_schema) == (ADD_SCHEMA, None)
        assert first.limits.timeout_ms == 2000
        assert re.fullmatch("[0-9a-f]{64}", first.sha256)
        assert abs(datetime.now(UTC) - first.created_at) < timedelta(minutes=1)
        assert again == dataclasses.replace(first, created=False)
        assert (second.version, second.created, second.limits.timeout_ms) == (2, True, 3000)
        assert second.sha256 != first.sha256
        assert [(v.version, v.sha256, v.source) for v in client.versions("add")] == [
            (2, second.sha256, ""),
            (1, first.sha256, ""),
        ]

        function = client.set_alias("add", "prod", 1)
        assert (function.name, function.latest_version, function.aliases) == ("add", 2, {"prod": 1})
        assert client.function("add") == function
        assert client.functions() == [function]
        assert client.get("add@prod") == again
        assert client.get("add@1") == again
        assert client.get("add@latest") == dataclasses.replace(second, created=False)
        assert client.get("add").version == 2

        client.delete_alias("add", "prod")
        assert client.function("add").aliases == {}
        with pytest.raises(NotFound):
            client.get("add@prod")
        with pytest.raises(NotFound):
            client.delete_alias("add", "prod")
        with pytest.raises(NotFound):
            client.get("add@3")

        with pytest.raises(InvalidArgument) as bad_source:
            client.publish("broken", "def main(:\n    pass\n")
        assert "line 1" in str(bad_source.value)
        with pytest.raises(InvalidArgument) as bad_import:
            client.publish("net", "import socket\n\ndef main():\n    return 1\n")
        assert "socket" in str(bad_import.value)
        with pytest.raises(InvalidArgument):
            client.publish("Bad-Name", ADD)

        assert client.delete("add") == 2
        with pytest.raises(NotFound):
            client.function("add")
        assert client.functions() == []


def test_invoke_returns_failures_as_values_and_every_run_is_in_the_history(server: str) -> None:
    with Client(server, timeout=30) as client:
        add = client.publish("add", ADD, input_schema=ADD_SCHEMA)
        client.publish("divide", DIVIDE)

        ok = client.invoke("add", {"a": 1, "b": 2})
        assert (ok.ok, ok.status, ok.result, ok.result_json) == (True, ExecutionStatus.OK, 3, "3")
        assert (ok.stdout, ok.stderr, ok.error) == ("adding 1 and 2\n", "", None)
        assert (ok.function_name, ok.version, ok.sha256) == ("add", 1, add.sha256)
        assert (ok.args, ok.args_truncated, ok.result_truncated) == ({"a": 1, "b": 2}, False, False)
        assert ok.duration_ms > 0
        assert ok.peak_memory_bytes > 0

        failed = client.invoke("divide", {"x": 0})
        assert (failed.ok, failed.status, failed.result) == (False, ExecutionStatus.ERROR, None)
        assert failed.error is not None
        assert (failed.error.type, failed.error.message) == (
            "ZeroDivisionError",
            "division by zero",
        )
        assert "line 3" in failed.error.traceback

        with pytest.raises(NotFound):
            client.invoke("missing")
        with pytest.raises(InvalidArgument):
            client.invoke("add", {"a": "one", "b": 2})

        def ids(**filters: object) -> list[str]:
            return [e.execution_id for e in client.history(**filters)]  # type: ignore[arg-type]

        assert ids() == [failed.execution_id, ok.execution_id]
        assert ids(name="add") == [ok.execution_id]
        assert ids(status="error") == [failed.execution_id]
        assert ids(status=ExecutionStatus.OK, name="add", version=1) == [ok.execution_id]
        assert ids(limit=1) == [failed.execution_id]
        assert ids(since=datetime.now(UTC) + timedelta(minutes=5)) == []
        assert ids(until=ok.started_at) == []
        assert client.execution(failed.execution_id) == failed
        with pytest.raises(NotFound):
            client.execution(str(uuid.uuid4()))

        client.publish("spin", SPIN, timeout_ms=5000)
        with pytest.raises(DeadlineExceeded):
            client.invoke("spin", timeout=0.5)
