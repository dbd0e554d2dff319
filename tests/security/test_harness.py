"""The harness itself notices leaks, so a passing attack test means something."""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import pytest

from tests.security.conftest import SECRET, Attack, idle_workers


def test_a_secret_in_any_field_of_a_result_is_caught(attack: Attack) -> None:
    execution = attack.run("def main():\n    return 'harmless'\n")
    for name in ("result_json", "stdout", "stderr"):
        leaked = dataclasses.replace(execution, **{name: f"...{SECRET}..."})
        with pytest.raises(AssertionError, match=f"secret leaked in {name}"):
            attack.assert_no_secret(leaked)


def test_bystander_calls_are_checked(attack: Attack, bystanders: None) -> None:
    execution = attack.run("def main():\n    return sum(range(10**6))\n")
    assert execution.result == sum(range(10**6))


def test_a_warm_worker_that_runs_between_calls_counts_as_a_survivor(attack: Attack) -> None:
    if attack.mode != "warm":
        pytest.skip("only a warm server keeps a process that served a call")
    attack.run("def main():\n    return 1\n")
    worker = max(idle_workers(attack.server_pid))
    os.kill(worker, signal.SIGCONT)
    try:
        deadline = time.monotonic() + 5
        while worker not in attack.processes_of_calls() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker in attack.processes_of_calls()
    finally:
        os.kill(worker, signal.SIGSTOP)
    attack.assert_nothing_survives()
