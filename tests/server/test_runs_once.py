"""Result cache, idempotency keys and per-function concurrency in the domain layer."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.server import ACTOR
from toolvault.server.config import Settings
from toolvault.server.db.engine import Database
from toolvault.server.domain.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from toolvault.server.domain.executions import CallContext, ExecutionFilter, ExecutionInfo
from toolvault.server.domain.functions import VersionContent
from toolvault.server.services.functions import FunctionStore, PublishRequest
from toolvault.server.services.history import History
from toolvault.server.services.idempotency import IdempotencyKeys, fingerprint
from toolvault.server.services.invocations import Invocations
from toolvault.server.telemetry import metrics

# Each run returns a fresh random number: two equal results mean one run.
RANDOM = "import random\n\ndef main(x):\n    print('ran')\n    return [x, random.random()]\n"
SLOW = "def main():\n    n = 0\n    for i in range(3000000):\n        n += i\n    return n\n"
CALLER = CallContext(caller="test")


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def recorded(database: Database, name: str) -> list[ExecutionInfo]:
    return History(database).executions(ExecutionFilter(function_name=name), size=0, token="")[0]


@pytest.fixture
def invocations(database: Database, functions: FunctionStore, settings: Settings) -> Invocations:
    return Invocations(database, functions, settings)


def test_deterministic_and_max_concurrency_are_hashed_only_when_set(
    functions: FunctionStore,
) -> None:
    plain, _ = functions.publish(PublishRequest(name="f", source=RANDOM), actor=ACTOR)
    content = plain.content
    assert (
        plain.sha256
        == VersionContent(
            content.source,
            content.entrypoint,
            content.description,
            content.input_schema,
            content.output_schema,
            content.limits,
            content.allowed_imports,
        ).sha256()
    )
    cached, created = functions.publish(
        PublishRequest(name="f", source=RANDOM, deterministic=True), actor=ACTOR
    )
    limited, _ = functions.publish(
        PublishRequest(name="f", source=RANDOM, max_concurrency=2), actor=ACTOR
    )
    assert created and (cached.version, limited.version) == (2, 3)
    assert len({plain.sha256, cached.sha256, limited.sha256}) == 3
    assert functions.resolve("f@2").content.deterministic
    assert functions.resolve("f@3").content.max_concurrency == 2
    with pytest.raises(InvalidArgument, match=r"limits.max_concurrency is 100001: it must be"):
        functions.publish(
            PublishRequest(name="f", source=RANDOM, max_concurrency=100_001), actor=ACTOR
        )


def test_the_second_identical_call_of_a_deterministic_function_runs_no_sandbox(
    database: Database, functions: FunctionStore, invocations: Invocations
) -> None:
    functions.publish(PublishRequest(name="pure", source=RANDOM, deterministic=True), actor=ACTOR)
    functions.publish(PublishRequest(name="impure", source=RANDOM), actor=ACTOR)
    hits, misses = (sample("toolvault_cache_lookups_total", result=r) for r in ("hit", "miss"))

    async def calls() -> list[ExecutionInfo]:
        return [
            await invocations.invoke("pure", '{"x": 1}', CALLER),
            await invocations.invoke("pure", '{ "x" : 1 }', CALLER),  # same object, new spelling
            await invocations.invoke("pure", '{"x": 2}', CALLER),
            await invocations.invoke("impure", '{"x": 1}', CALLER),
            await invocations.invoke("impure", '{"x": 1}', CALLER),
        ]

    first, hit, other_args, impure_1, impure_2 = asyncio.run(calls())
    assert (first.cached, hit.cached, other_args.cached) == (False, True, False)
    assert hit.result_json == first.result_json and hit.stdout == "ran\n"
    assert (hit.cached_from, hit.duration_ms, hit.peak_memory_bytes) == (first.id, 0.0, 0)
    assert hit.id != first.id and hit.args_json == '{ "x" : 1 }'
    assert json.loads(other_args.result_json)[1] != json.loads(first.result_json)[1]
    assert not impure_1.cached and not impure_2.cached
    assert impure_1.result_json != impure_2.result_json
    assert sample("toolvault_cache_lookups_total", result="hit") == hits + 1
    assert sample("toolvault_cache_lookups_total", result="miss") == misses + 2
    history = {e.id: e for e in recorded(database, "pure")}
    assert len(history) == 3
    assert (history[hit.id].cached, history[hit.id].cached_from) == (True, first.id)
    assert history[first.id].cached_from is None


def test_only_successful_results_are_cached_and_a_zero_size_cache_is_off(
    database: Database, functions: FunctionStore, settings: Settings
) -> None:
    source = "def main(x):\n    return 1 / x\n"
    functions.publish(PublishRequest(name="inv", source=source, deterministic=True), actor=ACTOR)
    invocations = Invocations(database, functions, settings)
    off = Invocations(database, functions, settings.model_copy(update={"cache_max_entries": 0}))

    async def calls() -> list[ExecutionInfo]:
        return [
            await invocations.invoke("inv", '{"x": 0}', CALLER),
            await invocations.invoke("inv", '{"x": 0}', CALLER),
            await off.invoke("inv", '{"x": 4}', CALLER),
            await off.invoke("inv", '{"x": 4}', CALLER),
        ]

    runs = asyncio.run(calls())
    assert [(r.status, r.cached) for r in runs] == [
        ("ERROR", False),
        ("ERROR", False),
        ("OK", False),
        ("OK", False),
    ]


def test_a_retried_invoke_with_the_same_key_runs_once_even_after_a_restart(
    database: Database, functions: FunctionStore, settings: Settings
) -> None:
    functions.publish(PublishRequest(name="rand", source=RANDOM), actor=ACTOR)

    async def calls() -> list[ExecutionInfo]:
        invocations = Invocations(database, functions, settings)
        first = await invocations.invoke("rand", '{"x": 1}', CALLER, idempotency_key="k1")
        again = await invocations.invoke("rand", '{"x": 1}', CALLER, idempotency_key="k1")
        restarted = Invocations(database, functions, settings)
        later = await restarted.invoke("rand", '{"x": 1}', CALLER, idempotency_key="k1")
        other = await restarted.invoke("rand", '{"x": 1}', CALLER, idempotency_key="k2")
        return [first, again, later, other]

    first, again, later, other = asyncio.run(calls())
    assert again.id == first.id == later.id and other.id != first.id
    assert again.result_json == first.result_json
    assert sorted(str(e.id) for e in recorded(database, "rand")) == sorted(
        [str(first.id), str(other.id)]
    )


def test_concurrent_duplicates_run_once_and_a_key_for_another_request_is_refused(
    database: Database, functions: FunctionStore, invocations: Invocations
) -> None:
    functions.publish(PublishRequest(name="slow", source=SLOW), actor=ACTOR)

    async def calls() -> list[ExecutionInfo]:
        return list(
            await asyncio.gather(
                *(invocations.invoke("slow", "{}", CALLER, idempotency_key="dup") for _ in range(3))
            )
        )

    results = asyncio.run(calls())
    assert len({r.id for r in results}) == 1
    assert [e.id for e in recorded(database, "slow")] == [results[0].id]
    with pytest.raises(
        FailedPrecondition, match="idempotency_key 'dup' was first used for a different request"
    ):
        asyncio.run(invocations.invoke("slow", '{"n": 1}', CALLER, idempotency_key="dup"))
    with pytest.raises(InvalidArgument, match="idempotency_key is 129 characters"):
        asyncio.run(invocations.invoke("slow", "{}", CALLER, idempotency_key="k" * 129))


# Busy for `s` seconds of wall time: the sandbox offers no sleep.
SPIN = (
    "import datetime\n\n"
    "def main(s):\n"
    "    end = datetime.datetime.now() + datetime.timedelta(seconds=s)\n"
    "    while datetime.datetime.now() < end:\n"
    "        pass\n"
    "    return s\n"
)


def test_a_key_left_pending_by_a_dead_replica_is_taken_over_once_its_lease_ends(
    database: Database, functions: FunctionStore, tmp_path: Path
) -> None:
    functions.publish(PublishRequest(name="rand", source=RANDOM), actor=ACTOR)
    settings = Settings(data_dir=tmp_path, idempotency_lease_s=1)
    # A replica claimed the key (stored with its namespace), then died: nobody renews or
    # releases it.
    dead = IdempotencyKeys(database, ttl_s=60, lease_s=1)
    assert dead.claim("default/k", fingerprint("rand", '{"x": 1}')).owned
    started = time.monotonic()
    run = asyncio.run(
        Invocations(database, functions, settings).invoke(
            "rand", '{"x": 1}', CALLER, idempotency_key="k"
        )
    )
    waited = time.monotonic() - started
    assert run.status == "OK"
    assert 0.9 <= waited < 5
    assert [e.id for e in recorded(database, "rand")] == [run.id]


def test_a_run_longer_than_the_lease_keeps_its_key_and_runs_once(
    database: Database, functions: FunctionStore, tmp_path: Path
) -> None:
    functions.publish(PublishRequest(name="spin", source=SPIN), actor=ACTOR)
    invocations = Invocations(
        database, functions, Settings(data_dir=tmp_path, idempotency_lease_s=1)
    )

    async def calls() -> list[ExecutionInfo]:
        first = asyncio.create_task(
            invocations.invoke("spin", '{"s": 3}', CALLER, idempotency_key="long")
        )
        # Well past the lease: only the owner's renewals keep the duplicate waiting.
        await asyncio.sleep(2)
        second = await invocations.invoke("spin", '{"s": 3}', CALLER, idempotency_key="long")
        return [await first, second]

    first, second = asyncio.run(calls())
    assert first.status == "OK" and second.id == first.id
    assert [e.id for e in recorded(database, "spin")] == [first.id]


def test_a_call_refused_before_running_frees_its_key_for_the_retry(
    database: Database, functions: FunctionStore, invocations: Invocations
) -> None:
    schema = '{"type": "object", "required": ["x"]}'
    functions.publish(PublishRequest(name="need", source=RANDOM, input_schema=schema), actor=ACTOR)
    with pytest.raises(InvalidArgument, match="args_json does not match the input schema"):
        asyncio.run(invocations.invoke("need", "{}", CALLER, idempotency_key="k"))
    # No run holds the key, so even a corrected request may use it.
    fixed = asyncio.run(invocations.invoke("need", '{"x": 1}', CALLER, idempotency_key="k"))
    assert fixed.status == "OK"
    assert [e.id for e in recorded(database, "need")] == [fixed.id]


def test_a_function_over_its_max_concurrency_is_refused_at_once(
    functions: FunctionStore, invocations: Invocations
) -> None:
    functions.publish(PublishRequest(name="slow", source=SLOW, max_concurrency=1), actor=ACTOR)
    functions.publish(PublishRequest(name="other", source=SLOW), actor=ACTOR)
    rejected = sample("toolvault_rejections_total", reason="function_concurrency")

    async def calls() -> tuple[ExecutionInfo, ExecutionInfo, ExecutionInfo, str]:
        first = asyncio.create_task(invocations.invoke("slow", "{}", CALLER))
        await asyncio.sleep(0.05)  # the first call now holds the function's only slot
        unrelated = asyncio.create_task(invocations.invoke("other", "{}", CALLER))
        try:
            await invocations.invoke("slow", "{}", CALLER)
        except ResourceExhausted as error:
            message = str(error)
        done = await first
        return done, await unrelated, await invocations.invoke("slow", "{}", CALLER), message

    first, unrelated, after, message = asyncio.run(calls())
    assert message == "function 'slow' allows 1 concurrent calls; 1 are running"
    assert (first.status, unrelated.status, after.status) == ("OK", "OK", "OK")
    assert sample("toolvault_rejections_total", reason="function_concurrency") == rejected + 1
