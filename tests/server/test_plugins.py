"""Plugins: found through entry points or named on the command line, isolated when they fail."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TOOLVAULT, ServerProcess
from toolvault.client import AgentSpec, Client, PermissionDenied

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugins"
ADD = "def main(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed by pip into a directory of its own (not the venv)."""
    # Built from a copy: the build leaves its files beside the sources.
    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("example") / "plugins")
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    return target


def python_path(*directories: Path) -> dict[str, str]:
    paths = [str(d) for d in directories] + [os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A directory for test plugins' modules, to put on the server's PYTHONPATH."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "refusing.py").write_text(
        textwrap.dedent(
            """
            from toolvault.server.services.plugins import Refusal, hookimpl

            class Quota:
                @hookimpl
                def before_invoke(self, call):
                    if call.version.name == "metered":
                        return "metered is over its quota"
                    return None

            class Lockout:
                @hookimpl
                def before_invoke(self, call):
                    if call.version.name == "locked":
                        raise Refusal("locked is under maintenance")
            """
        )
    )
    (directory / "boom.py").write_text(
        textwrap.dedent(
            """
            from toolvault.server.services.plugins import hookimpl

            class Boom:
                @hookimpl
                def function_published(self, version):
                    raise RuntimeError("boom in function_published")

                @hookimpl
                def before_invoke(self, call):
                    raise RuntimeError("boom in before_invoke")

                @hookimpl
                def after_invoke(self, execution):
                    raise RuntimeError("boom in after_invoke")

                @hookimpl
                def agent_changed(self, agent, change):
                    raise RuntimeError("boom in agent_changed")
            """
        )
    )
    return directory


@pytest.fixture
def audited_server(
    db_url: str, tmp_path: Path, installed_example: Path
) -> Iterator[tuple[ServerProcess, Path]]:
    audit = tmp_path / "audit.jsonl"
    server = ServerProcess(
        db=db_url,
        data_dir=tmp_path / "data",
        env={**python_path(installed_example), "TOOLVAULT_AUDIT_LOG": str(audit)},
    )
    server.start()
    yield server, audit
    server.stop()


def test_the_example_plugin_installed_with_pip_sees_every_hook(
    audited_server: tuple[ServerProcess, Path],
) -> None:
    server, audit = audited_server
    with Client(server.address) as client:
        client.publish("add", ADD)
        client.publish("add", ADD)  # the same content: no new version, no event
        execution = client.invoke("add", {"a": 1, "b": 2})
        client.create_agent(AgentSpec(name="calc", tools=("add",)))
        client.update_agent(AgentSpec(name="calc", tools=("add",), description="adds"))
        tool = client.call_tool("calc", "add", {"a": 2, "b": 3})
        client.delete_agent("calc")
    assert server.stop() == 0
    assert "plugins loaded: audit_log" in "".join(server.log)
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    times = [event.pop("time") for event in events]
    assert times == sorted(times)
    callers = {event.pop("caller") for event in events if "caller" in event}
    assert len(callers) == 1 and callers.pop().startswith("ipv4:127.0.0.1:")
    durations = [event.pop("duration_ms") for event in events if "duration_ms" in event]
    assert durations == [execution.duration_ms, tool.execution.duration_ms]
    assert events == [
        {
            "event": "function_published",
            "function": "add",
            "version": 1,
            "sha256": execution.sha256,
        },
        {"event": "call", "function": "add", "version": 1, "agent": ""},
        {
            "event": "run",
            "execution_id": execution.execution_id,
            "function": "add",
            "version": 1,
            "status": "OK",
            "cached": False,
            "agent": "",
            "trace_id": "",
        },
        {"event": "agent_created", "agent": "calc", "revision": 1},
        {"event": "agent_updated", "agent": "calc", "revision": 2},
        {"event": "call", "function": "add", "version": 1, "agent": "calc"},
        {
            "event": "run",
            "execution_id": tool.execution.execution_id,
            "function": "add",
            "version": 1,
            "status": "OK",
            "cached": False,
            "agent": "calc",
            "trace_id": "",
        },
        {"event": "agent_deleted", "agent": "calc", "revision": 2},
    ]


def test_plugins_named_in_the_environment_refuse_calls_with_permission_denied(
    db_url: str, tmp_path: Path, plugin_dir: Path
) -> None:
    server = ServerProcess(
        db=db_url,
        data_dir=tmp_path / "data",
        env={**python_path(plugin_dir), "TOOLVAULT_PLUGINS": "refusing:Quota, refusing:Lockout"},
    )
    server.start()
    try:
        with Client(server.address) as client:
            for name in ("metered", "locked", "free"):
                client.publish(name, ADD)
            with pytest.raises(PermissionDenied) as metered:
                client.invoke("metered", {"a": 1, "b": 2})
            with pytest.raises(PermissionDenied) as locked:
                client.invoke("locked", {"a": 1, "b": 2})
            assert client.invoke("free", {"a": 1, "b": 2}).result == 3
            recorded = [e.function_name for e in client.history()]
    finally:
        server.stop()
    assert str(metered.value) == (
        "plugin 'refusing:Quota' refused the call: metered is over its quota"
    )
    assert str(locked.value) == (
        "plugin 'refusing:Lockout' refused the call: locked is under maintenance"
    )
    assert recorded == ["free"]
    assert "plugins loaded: refusing:Quota, refusing:Lockout" in "".join(server.log)


def test_a_plugin_that_raises_in_every_hook_breaks_no_call_and_is_logged_and_counted(
    tmp_path: Path, plugin_dir: Path
) -> None:
    server = ServerProcess(
        db=f"sqlite:///{tmp_path / 'db.sqlite'}",
        data_dir=tmp_path,
        extra_args=["--plugin", "boom:Boom", "--metrics-port", "0"],
        env=python_path(plugin_dir),
    )
    server.start()
    try:
        with Client(server.address) as client:
            assert client.publish("add", ADD).version == 1
            assert client.invoke("add", {"a": 1, "b": 2}).result == 3
            assert client.create_agent(AgentSpec(name="calc", tools=("add",))).revision == 1
        port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", "".join(server.log))
        assert port is not None
        url = f"http://127.0.0.1:{port.group(1)}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            metrics = response.read().decode()
    finally:
        server.stop()
    log = "".join(server.log)
    for hook in ("function_published", "before_invoke", "after_invoke", "agent_changed"):
        assert f"plugin 'boom:Boom' failed in {hook}" in log
        assert f"RuntimeError: boom in {hook}" in log
        assert f'toolvault_plugin_errors_total{{hook="{hook}",plugin="boom:Boom"}} 1.0' in metrics


def test_a_plugin_that_cannot_be_loaded_stops_the_server_at_start_up(tmp_path: Path) -> None:
    done = subprocess.run(
        [TOOLVAULT, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path)]
        + ["--plugin", "no_such_module:Plugin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        "plugin 'no_such_module:Plugin' failed to load: "
        "ModuleNotFoundError(\"No module named 'no_such_module'\")"
    ) in done.stderr
    assert "listening on" not in done.stderr
