"""The harness itself notices leaks, so a passing attack test means something."""

from __future__ import annotations

import dataclasses

import pytest

from tests.security.conftest import SECRET, Attack


def test_a_secret_in_any_field_of_a_result_is_caught(attack: Attack) -> None:
    execution = attack.run("def main():\n    return 'harmless'\n")
    for name in ("result_json", "stdout", "stderr"):
        leaked = dataclasses.replace(execution, **{name: f"...{SECRET}..."})
        with pytest.raises(AssertionError, match=f"secret leaked in {name}"):
            attack.assert_no_secret(leaked)


def test_bystander_calls_are_checked(attack: Attack, bystanders: list[object]) -> None:
    execution = attack.run("def main():\n    return sum(range(10**6))\n")
    assert execution.result == sum(range(10**6))
