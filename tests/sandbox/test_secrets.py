"""A job's secrets: a read-only mapping of one call, from `toolvault import secrets` only.

The server decides which values a job carries (the version's declared names, from its
namespace); here: that the code reads exactly those, cannot change them, gets them
fresh in every call of a warm worker, and reaches nothing else named ``toolvault``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from tests.sandbox.test_run import job
from toolvault.sandbox import Job, RunResult, RunStatus, SandboxHost, check_source, run

READ = """\
from toolvault import secrets

def main(name="API_KEY"):
    return [secrets[name], sorted(secrets)]
"""


def with_secrets(source: str, values: dict[str, str], args: dict[str, Any] | None = None) -> Job:
    return replace(job(source, args), secrets=values)


def outcome(result: RunResult) -> tuple[RunStatus, Any, str, str]:
    value = json.loads(result.result_json) if result.result_json else None
    return result.status, value, result.error_type, result.error_message


def test_the_code_reads_the_values_of_its_job() -> None:
    result = asyncio.run(run(with_secrets(READ, {"API_KEY": "k-123", "OTHER": "o-456"})))
    assert outcome(result) == (RunStatus.OK, ["k-123", ["API_KEY", "OTHER"]], "", "")


def test_a_job_without_secrets_cannot_import_them() -> None:
    result = asyncio.run(run(job(READ)))
    assert result.status is RunStatus.ERROR
    assert result.error_type == "ImportError"
    assert "only a version that declares secrets may import it" in result.error_message


def test_a_name_the_job_does_not_carry_is_a_key_error() -> None:
    result = asyncio.run(run(with_secrets(READ, {"API_KEY": "k-123"}, {"name": "ROOT_KEY"})))
    assert (result.status, result.error_type, result.error_message) == (
        RunStatus.ERROR,
        "KeyError",
        "'ROOT_KEY'",
    )


def test_the_mapping_cannot_be_changed() -> None:
    attempts = {
        "item": "secrets['API_KEY'] = 'mine'",
        "delete": "del secrets['API_KEY']",
        "attribute": "toolvault.secrets = {'API_KEY': 'mine'}",
        "update": "secrets.update({'API_KEY': 'mine'})",
    }
    for what, statement in attempts.items():
        source = (
            "import toolvault\nfrom toolvault import secrets\n\n"
            f"def main():\n    try:\n        {statement}\n"
            "    except (TypeError, AttributeError):\n"
            "        return secrets['API_KEY']\n    return 'changed'\n"
        )
        result = asyncio.run(run(with_secrets(source, {"API_KEY": "k-123"})))
        assert outcome(result) == (RunStatus.OK, "k-123", "", ""), what


def test_nothing_else_named_toolvault_can_be_imported() -> None:
    for statement in (
        "import toolvault.sandbox",
        "from toolvault import sandbox",
        "from toolvault.sandbox import run",
        "from toolvault import secrets, sandbox",
    ):
        source = f"def main():\n    {statement}\n    return 'imported'\n"
        result = asyncio.run(run(with_secrets(source, {"API_KEY": "k-123"})))
        assert (result.status, result.error_type) == (RunStatus.ERROR, "ImportError"), statement
        assert "holds only secrets" in result.error_message, statement


def test_each_call_of_a_warm_worker_gets_the_values_of_its_own_job() -> None:
    # The module-level cache is the worker's; the values must come from each job.
    source = """\
from toolvault import secrets
seen = []

def main():
    seen.append(secrets["API_KEY"])
    return [secrets["API_KEY"], len(seen)]
"""

    async def calls() -> list[list[Any]]:
        host = SandboxHost(preload=(), max_workers=1)
        await host.start()
        try:
            found = []
            for value in ("first-value", "second-value"):
                result = await host.run(
                    with_secrets(source, {"API_KEY": value}), worker_key="version"
                )
                assert result.status is RunStatus.OK, result.error_message
                assert result.warm
                found.append(json.loads(result.result_json))
            return found
        finally:
            await host.close()

    # Fresh globals per call: the list starts empty each time, and each value is its own.
    assert asyncio.run(calls()) == [["first-value", 1], ["second-value", 1]]


def test_the_values_stay_out_of_the_jobs_repr() -> None:
    assert "k-123" not in repr(with_secrets(READ, {"API_KEY": "k-123"}))


def test_publishing_checks_the_import_against_the_declaration() -> None:
    def problems(source: str, declares: bool) -> list[str]:
        checked = check_source(
            source, entrypoint="main", allowed_imports=("json",), secrets=declares
        )
        return [issue.message for issue in checked.issues]

    assert problems(READ, True) == []
    assert problems("import toolvault\n" + READ, True) == []
    assert problems(READ, False) == [
        "import of 'toolvault' is not allowed: only a version that declares secrets may "
        "import it (from toolvault import secrets)"
    ]
    assert problems("from toolvault import sandbox\n" + READ, True) == [
        "import of 'toolvault' is not allowed: toolvault holds only secrets (from toolvault "
        "import secrets)"
    ]
    assert problems("import toolvault.sandbox\n" + READ, True) == [
        "import of 'toolvault.sandbox' is not allowed: toolvault holds only secrets (from "
        "toolvault import secrets)"
    ]
