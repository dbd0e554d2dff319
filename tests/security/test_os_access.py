"""Attacks on the host through the real server: files, secrets, network, processes.

Through the API the language layer refuses most of them first, at publish or at run
time; each case asserts that exact refusal, and the harness that nothing happened (no
secret in any result or history row, no connection to the loopback listener, no process
left, the server still answering). tests/sandbox/test_isolation.py proves the same
attacks fail against the process and kernel layers alone.
"""

from __future__ import annotations

import pytest

from tests.security.conftest import Attack
from toolvault.client import ExecutionStatus
from toolvault.client.errors import InvalidArgument


def refusal(attack: Attack, source: str) -> str:
    """Publish ``source``, which must be rejected; return the message. Nothing may change."""
    attack.count += 1
    with pytest.raises(InvalidArgument) as rejected:
        attack.client.publish(f"refused_{attack.count}", source)
    assert attack.listener.connections == 0
    attack.assert_nothing_survives()
    assert attack.client.invoke("probe", {"n": attack.count}).result == attack.count + 1
    return str(rejected.value)


@pytest.mark.parametrize(
    "module",
    ["os", "socket", "ctypes", "subprocess", "signal", "sys", "importlib", "pathlib", "io"],
)
def test_cant_import_a_module_that_reaches_the_host(attack: Attack, module: str) -> None:
    message = refusal(attack, f"import {module}\n\ndef main():\n    return 1\n")

    assert f"line 1, column 8: import of '{module}' is not allowed" in message


def test_cant_import_from_a_module_that_reaches_the_host(attack: Attack) -> None:
    message = refusal(attack, "from subprocess import run\n\ndef main():\n    return 1\n")

    assert "line 1, column 1: import of 'subprocess' is not allowed" in message


def test_cant_call_the_real_import_function(attack: Attack) -> None:
    message = refusal(attack, "def main():\n    return __import__('os').environ\n")

    assert '"__import__" is an invalid variable name because it starts with "_"' in message


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        ("exec('import os')", "Exec calls are not allowed."),
        ("eval('1')", "Eval calls are not allowed."),
    ],
)
def test_cant_run_code_the_validator_did_not_see(attack: Attack, call: str, reason: str) -> None:
    message = refusal(attack, f"def main():\n    return {call}\n")

    assert reason in message


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "/proc/self/environ",
        "/proc/1/environ",
        "SECRET_FILE",
        "DATA_DIR/toolvault.db",
    ],
)
def test_cant_open_a_file(attack: Attack, path: str) -> None:
    data_dir = attack.secret_file.parent
    path = path.replace("SECRET_FILE", str(attack.secret_file)).replace("DATA_DIR", str(data_dir))

    execution = attack.run(f"def main():\n    return open({path!r}).read()\n")

    # open() is the language layer's own: a file of the working directory or nothing.
    assert execution.status is ExecutionStatus.ERROR
    assert execution.error is not None
    assert execution.error.type == "PermissionError"
    assert execution.error.message.startswith(
        f"open({path!r}): a function may open only a file of its working directory"
    )


def test_cant_reach_os_through_an_allowed_module(attack: Attack) -> None:
    execution = attack.run("import uuid\n\ndef main():\n    return dict(uuid.os.environ)\n")

    assert execution.status is ExecutionStatus.ERROR
    assert execution.error is not None
    assert execution.error.type == "ImportError"
    assert execution.error.message.startswith("import of 'os' is not allowed")


def test_cant_print_into_a_file(attack: Attack) -> None:
    execution = attack.run("def main():\n    print('x', file=[])\n")

    assert execution.status is ExecutionStatus.ERROR
    assert execution.error is not None
    assert execution.error.message == "print() can only write to stdout"


def test_cant_drop_into_a_debugger(attack: Attack) -> None:
    message = refusal(attack, "def main():\n    breakpoint()\n")

    assert '"breakpoint" is a reserved name.' in message
