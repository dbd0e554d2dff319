"""Killing a call's process or the sandbox host mid-call: a clear status and a history
row at once, never a hang, and the next call runs (issue 14), on a warm and a fresh server.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.processes import children_by_parent
from tests.security.conftest import Attack, sandbox_host
from toolvault.client import Execution, ExecutionStatus

# Runs until it is killed, well past the time the test allows for the kill to be seen.
BUSY = """\
import datetime
def main():
    end = datetime.datetime.now() + datetime.timedelta(seconds=30)
    while datetime.datetime.now() < end:
        pass
    return 0
"""


def the_calls_process(attack: Attack) -> int:
    """The running process a call has under the sandbox host: its sandbox or its worker."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        hosts = sandbox_host(attack.server_pid)
        children = children_by_parent()
        running = [
            pid
            for pid in attack.processes_of_calls()
            if any(pid in children.get(host, []) for host in hosts)
        ]
        if running:
            return running[0]
        time.sleep(0.01)
    raise AssertionError("the call never started")


@pytest.mark.parametrize("victim", ["sandbox", "host"])
def test_a_kill_mid_call_ends_it_as_crashed_with_a_history_row(attack: Attack, victim: str) -> None:
    name = f"busy_{victim}"
    attack.client.publish(name, BUSY, timeout_ms=60_000)
    done: list[Execution] = []
    call = threading.Thread(target=lambda: done.append(attack.client.invoke(name, {})))
    call.start()
    target = the_calls_process(attack)
    if victim == "host":
        # PID 1 of the host's namespace: the parent of the call's process.
        (target,) = [
            h for h in sandbox_host(attack.server_pid) if target in children_by_parent().get(h, [])
        ]
    killed_at = time.monotonic()
    os.kill(target, signal.SIGKILL)
    call.join(15)
    assert not call.is_alive(), "the call hung after its process was killed"
    assert time.monotonic() - killed_at < 10
    (execution,) = done
    assert execution.status is ExecutionStatus.CRASHED
    assert execution.error is not None
    if victim == "host":
        assert execution.error.message == "the sandbox host died while the function ran"
    else:
        assert execution.error.message == (
            "the sandbox process was killed by SIGKILL without reporting a result"
        )
    (row,) = attack.client.history(name)
    assert (row.execution_id, row.status) == (execution.execution_id, ExecutionStatus.CRASHED)
    attack.assert_nothing_survives()
    assert attack.client.invoke("probe", {"n": 41}).result == 42
