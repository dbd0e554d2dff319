"""The harness itself notices leaks, so a passing attack test means something."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from pathlib import Path

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


_TRIES = 5


def test_a_warm_worker_that_runs_between_calls_counts_as_a_survivor(attack: Attack) -> None:
    if attack.mode != "warm":
        pytest.skip("only a warm server keeps a process that served a call")
    # The runner checks idle workers every 250 ms and kills one that runs: a worker it
    # killed before the harness looked proves nothing either way, so the test tries again.
    for _ in range(_TRIES):
        attack.run("def main():\n    return 1\n")
        worker = max(idle_workers(attack.server_pid))
        os.kill(worker, signal.SIGCONT)
        try:
            deadline = time.monotonic() + 5
            while not (seen := worker in attack.processes_of_calls()):
                if time.monotonic() > deadline or not Path(f"/proc/{worker}").exists():
                    break
                time.sleep(0.01)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGSTOP)
        if seen or Path(f"/proc/{worker}").exists():
            break
    assert seen, "a worker that ran between calls was not counted as a survivor"
    attack.assert_nothing_survives()
