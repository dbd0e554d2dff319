"""The Node.js client in clients/node passes its own tests against a real server.

Its dependencies are installed with `npm ci` into clients/node/node_modules (git-ignored),
again only when that tree no longer matches package-lock.json. Without node and npm the
tests skip on a developer's machine and fail in CI, where the client must be checked.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TOOLVAULT, ServerProcess
from toolvault.client import Client

NODE_CLIENT = Path(__file__).resolve().parent.parent / "clients" / "node"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not on PATH: the Node.js client needs node 20+ and npm"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _installed_matches_lock() -> bool:
    # npm records what it installed in node_modules/.package-lock.json: the lock file's
    # packages without the root entry.
    installed = NODE_CLIENT / "node_modules" / ".package-lock.json"
    if not installed.exists():
        return False
    wanted = json.loads((NODE_CLIENT / "package-lock.json").read_text())["packages"]
    wanted.pop("")
    return bool(json.loads(installed.read_text())["packages"] == wanted)


# Not a fixture: a missing tool then fails the test itself, not its set-up.
@functools.cache
def _node() -> str:
    """The node binary, with the client's dependencies installed."""
    node, npm = _tool("node"), _tool("npm")
    if not _installed_matches_lock():
        # No package needs its install scripts (protobufjs's only checks its version).
        done = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=NODE_CLIENT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return node


@pytest.mark.timeout(300)
def test_node_client_passes_its_tests_against_a_real_server(tmp_path: Path) -> None:
    node = _node()
    server = ServerProcess(db=f"sqlite:///{tmp_path / 'toolvault.db'}", data_dir=tmp_path / "data")
    server.start()
    try:
        done = subprocess.run(
            [node, "--test"],
            cwd=NODE_CLIENT,
            env={**os.environ, "TOOLVAULT_TEST_SERVER": server.address},
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        server.stop()
    output = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, output
    # Tests ran, and none was skipped for want of the server's address.
    assert re.search(r"^# pass [1-9]", done.stdout, re.M), output
    assert "\n# skipped 0\n" in done.stdout, output


@pytest.mark.timeout(300)
def test_both_command_lines_exit_with_the_same_codes(tmp_path: Path) -> None:
    node = _node()
    server = ServerProcess(db=f"sqlite:///{tmp_path / 'toolvault.db'}", data_dir=tmp_path / "data")
    address = server.start()
    with socket.socket() as unused:  # a loopback port nothing listens on
        unused.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{unused.getsockname()[1]}"
    try:
        with Client(address) as client:
            client.publish("double", "def main(x: int) -> int:\n    return 2 * x\n")
            client.publish("broken", "def main():\n    raise ValueError('no')\n")
        cases = {  # (server, ref, arguments): the exit code both must give
            (address, "double", '{"x": 2}'): 0,
            (address, "broken", "{}"): 1,  # the function failed
            (address, "missing", "{}"): 2,  # NOT_FOUND
            (address, "double", '{"x": "two"}'): 2,  # INVALID_ARGUMENT
            (nowhere, "double", '{"x": 2}'): 3,  # UNAVAILABLE
        }
        codes = {}
        for (target, ref, arguments), expected in cases.items():
            python = [TOOLVAULT, "--server", target, "invoke", ref, "--args", arguments]
            nodejs = [node, "bin/toolvault-node.js", "--server", target, "invoke", ref, arguments]
            codes[(target, ref, arguments)] = tuple(
                subprocess.run(cmd, cwd=NODE_CLIENT, capture_output=True, timeout=60).returncode
                for cmd in (python, nodejs)
            )
            assert codes[(target, ref, arguments)] == (expected, expected), codes
    finally:
        server.stop()


def test_node_client_type_checks_from_its_jsdoc() -> None:
    done = subprocess.run(
        [_node(), "node_modules/typescript/bin/tsc", "-p", "jsconfig.json"],
        cwd=NODE_CLIENT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_node_client_is_formatted_by_prettier() -> None:
    done = subprocess.run(
        [_node(), "node_modules/prettier/bin/prettier.cjs", "--check", "--log-level", "warn", "."],
        cwd=NODE_CLIENT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
