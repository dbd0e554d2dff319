"""The server runs each function version in warm workers of its own (issue 14).

A worker keeps what the code leaves in imported modules between the calls it serves, so
that state shows which worker served a call: here it is the code's own counter on the
``random`` module, reachable because these sandboxes run without the language layer.
It must never show across versions or namespaces, nor survive a function's deletion; nor
at all for a version published with isolation fresh, nor in a namespace the operator
made fresh.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.server import ACTOR
from toolvault import sandbox
from toolvault.server.config import Settings
from toolvault.server.db.engine import Database
from toolvault.server.domain.executions import CallContext, ExecutionStatus
from toolvault.server.domain.functions import Isolation
from toolvault.server.services.functions import FunctionStore, PublishRequest
from toolvault.server.services.invocations import Invocations

COUNTER = """\
import random
def main():
    random.tv_calls = getattr(random, "tv_calls", 0) + 1
    return random.tv_calls
"""
CALLER = CallContext(caller="test")


@pytest.fixture(params=["warm", "fresh", "fresh with spares"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def host(settings: Settings, mode: str) -> sandbox.SandboxHost:
    # Spares serve fresh calls too, one each: nothing may show across them either.
    spares = 2 if mode == "fresh with spares" else 0
    return sandbox.SandboxHost(
        preload=(), hidden_paths=(str(settings.data_dir),), language_layer=False, spares=spares
    )


@pytest.fixture
def invocations(
    database: Database,
    functions: FunctionStore,
    settings: Settings,
    host: sandbox.SandboxHost,
    mode: str,
) -> Iterator[Invocations]:
    update = {"sandbox_mode": mode.split()[0]}
    invocations = Invocations(
        database, functions, settings.model_copy(update=update), sandbox_host=host
    )
    yield invocations
    asyncio.run(invocations.close())


def publish(
    functions: FunctionStore,
    name: str,
    source: str = COUNTER,
    isolation: Isolation = Isolation.WARM,
) -> None:
    functions.publish(PublishRequest(name=name, source=source, isolation=isolation), actor=ACTOR)


def counts(invocations: Invocations, *refs: str) -> list[int]:
    """What each call of ``refs``, one after the other, returned."""

    async def calls() -> list[int]:
        results = []
        for ref in refs:
            execution = await invocations.invoke(ref, "{}", CALLER)
            assert execution.status is ExecutionStatus.OK, execution
            results.append(json.loads(execution.result_json))
        return results

    return asyncio.run(calls())


def test_a_worker_serves_one_version_of_one_namespace(
    invocations: Invocations, functions: FunctionStore, mode: str
) -> None:
    publish(functions, "f")
    publish(functions, "team/f")
    publish(functions, "f", COUNTER + "# version 2\n")
    refs = ("f@1", "f@1", "team/f", "f@2", "f@1", "team/f", "f@2")
    got = counts(invocations, *refs)
    if mode != "warm":
        assert got == [1] * len(refs)
    else:
        assert got == [1, 2, 1, 1, 3, 2, 2]


@pytest.mark.parametrize("retired", [True, False])
def test_a_deleted_function_published_again_gets_new_workers(
    invocations: Invocations,
    functions: FunctionStore,
    host: sandbox.SandboxHost,
    mode: str,
    retired: bool,
) -> None:
    publish(functions, "f")
    assert counts(invocations, "f", "f") == ([1, 2] if mode == "warm" else [1, 1])
    deleted = functions.delete("f", actor=ACTOR)
    if retired:  # as DeleteFunction does; without it the key alone keeps them apart
        invocations.retire(deleted)
        assert host.workers == {}
    publish(functions, "f")  # the same content, version 1 again
    assert counts(invocations, "f") == [1]


def test_a_version_published_fresh_never_shares_a_process_whatever_the_mode(
    invocations: Invocations, functions: FunctionStore, host: sandbox.SandboxHost, mode: str
) -> None:
    publish(functions, "lone", isolation=Isolation.FRESH)
    publish(functions, "shared")
    got = counts(invocations, "lone", "shared", "lone", "shared", "lone")
    assert got == ([1, 1, 1, 2, 1] if mode == "warm" else [1] * 5)
    assert not any(key.startswith("lone@") for key in host.workers)


def test_the_operators_fresh_namespaces_run_fresh_whatever_their_versions_say(
    database: Database,
    functions: FunctionStore,
    settings: Settings,
    host: sandbox.SandboxHost,
) -> None:
    operator = Settings(data_dir=settings.data_dir, sandbox_mode="warm", fresh_namespaces="ops")
    invocations = Invocations(database, functions, operator, sandbox_host=host)
    try:
        publish(functions, "ops/f")
        publish(functions, "team/f")
        publish(functions, "f")
        got = counts(invocations, "ops/f", "team/f", "f", "ops/f", "team/f", "f", "ops/f")
    finally:
        asyncio.run(invocations.close())
    assert got == [1, 1, 1, 1, 2, 2, 1]
