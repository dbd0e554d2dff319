"""Red-team attacks on spares, with the language layer assumed fallen (second round).

Each job runs as full Python (``SandboxHost(language_layer=False)``): what it can do is
what code that escaped the language layer can do. SECURITY.md ("Spares") claims that a
spare's call gets everything afresh, holds nothing of any other call or of its warm-up,
serves one call, is stopped and killed at its done byte, and that a spare serves only
calls of its own allowed imports and limits. These attacks look for the opposite: a
secret of an earlier call in the spare's memory, two calls in one process, a call whose
words after its done byte reach its result or the next call, a spare of one kind taken
by a call of another, spares that upset the warm workers' accounting.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.sandbox.test_run import children
from tests.sandbox.test_warm import plain, scenario
from toolvault.sandbox import Job, RunResult, RunStatus, SandboxHost

# Holds a secret (an argument) for a while, so that it is in the process's memory.
HOLD = """\
def main(secret, **_):
    kept = [secret * 2, secret.encode(), {"s": secret}]
    return len(str(kept))
"""

# Every readable byte of the process's own memory (read in place: /proc/self/mem is
# refused to a process that is not dumpable), searched for the marker. Each hit's
# following 32 hex digits are hashed and compared with ``wanted``: the secrets' own text
# never appears here or in the arguments, so only a copy left by another call can match.
# ``control`` is a secret of this call: finding it shows the search works.
SCAN = """\
import ctypes, hashlib, re
def main(wanted, control, marker):
    held = control * 2
    pattern = re.compile(re.escape(marker.encode()) + rb"([0-9a-f]{32})")
    found = set()
    regions = 0
    with open("/proc/self/maps") as maps:
        lines = maps.read().splitlines()
    for line in lines:
        fields = line.split()
        # Anonymous memory (the heap, the stack, arenas): what holds a call's data.
        # A file's mapping may reach past its end, where a read faults.
        if "r" not in fields[1] or (len(fields) > 5 and fields[5] not in ("[heap]", "[stack]")):
            continue
        start, end = (int(part, 16) for part in fields[0].split("-"))
        tail = b""
        for at in range(start, end, 1 << 20):
            chunk = ctypes.string_at(at, min(1 << 20, end - at))
            regions += 1
            for hit in pattern.finditer(tail + chunk):
                found.add(hashlib.sha256(hit.group(1)).hexdigest())
            tail = chunk[-64:]
    return {"found": sorted(set(wanted) & found), "regions": regions, "held": len(held)}
"""

# Which process, namespace, uid and state a call finds; it leaves a mark in each.
WHERE = """\
import os, sys
def main(n, **_):
    state = sys.__dict__.setdefault("tv_state", [])
    state.append(n)
    with open(f"left-by-{n}", "w") as left:
        left.write("x")
    return {
        "state": state,
        "uid": os.getuid(),
        "pidns": os.readlink("/proc/self/ns/pid"),
        "files": sorted(os.listdir(".")),
    }
"""

# What a call does around its done byte (fd 0 of a spare): the report the runner reads
# is on fd 3, the call's stdout on fd 1.
AROUND_DONE = """\
import json, os, time
def report(result):
    return json.dumps({"status": "ok", "result_json": result, "error_type": "",
                       "error_message": "", "traceback": "", "peak_memory_bytes": 0}).encode()
def main(mode):
    if mode == "done-first":
        # Done before any report: then a report, output and work the runner never asked for.
        os.write(0, b"d")
        time.sleep(0.3)
        os.write(1, b"AFTER-DONE")
        os.write(3, report('"AFTER-DONE"'))
    elif mode == "done-twice":
        os.write(3, report('"early"'))
        for fd in (1, 2, 3):
            os.close(fd)
        os.write(0, b"dd")
    elif mode == "after-done":
        # Done with the report's pipe still open, then more report and output.
        os.write(1, b"before")
        os.write(3, report('"early"'))
        os.write(0, b"d")
        os.write(3, b"AFTER-DONE")
        os.write(1, b"AFTER-DONE")
    elif mode == "fake-channel":
        # Done, then what could look like more of the protocol on the channel.
        os.write(3, report('"early"'))
        for fd in (1, 2, 3):
            os.close(fd)
        os.write(0, b"d" + b"\\x00" * 64 + json.dumps({"job": "AFTER-DONE"}).encode())
    end = time.monotonic() + 10
    while time.monotonic() < end:
        pass
"""

# What bounds a call's process: its hard limits.
LIMITS_SEEN = """\
import resource
def main():
    return [resource.getrlimit(getattr(resource, name)) for name in
            ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC")]
"""


@pytest.fixture
def spare_host() -> Iterator[SandboxHost]:
    sandbox_host = SandboxHost(preload=(), language_layer=False, spares=2)
    yield sandbox_host
    asyncio.run(sandbox_host.close())


async def ready(host: SandboxHost, count: int = 2) -> list[int]:
    """Wait until ``count`` spares are ready and nothing else runs under the host."""
    deadline = time.monotonic() + 10
    while host.spares != count or len(children(host.pid)) != count + sum(host.workers.values()):
        assert time.monotonic() < deadline, (host.spares, host.workers, children(host.pid))
        await asyncio.sleep(0.01)
    return children(host.pid)


def ok(result: RunResult) -> Any:
    assert result.status is RunStatus.OK, (result.status, result.error_message)
    return json.loads(result.result_json)


def test_a_spare_holds_no_secret_of_earlier_calls_in_its_memory(spare_host: SandboxHost) -> None:
    marker = f"tv-spare-{secrets.token_hex(4)}-"
    held = {kind: secrets.token_hex(16) for kind in ("forked", "spare", "worker", "control")}
    digests = {kind: hashlib.sha256(value.encode()).hexdigest() for kind, value in held.items()}

    async def steps() -> dict[str, Any]:
        # The first call of its kind forks; the next takes a spare; one runs in a worker.
        ok(await spare_host.run(plain(HOLD, {"secret": marker + held["forked"]})))
        await ready(spare_host)
        ok(await spare_host.run(plain(HOLD, {"secret": marker + held["spare"]})))
        await ready(spare_host)
        worker = plain(HOLD, {"secret": marker + held["worker"]})
        ok(await spare_host.run(worker, worker_key="k"))
        await ready(spare_host)
        scan = plain(
            SCAN,
            {
                "wanted": sorted(digests.values()),
                "control": marker + held["control"],
                "marker": marker,
            },
            timeout_ms=20_000,
        )
        found: dict[str, Any] = ok(await spare_host.run(scan))
        return found

    found = scenario(spare_host, steps)
    # The search saw the process's memory (its own secret), and nothing of any other call.
    assert found["regions"] > 10
    assert found["found"] == [digests["control"]]


def test_calls_at_once_in_spares_workers_and_forked_sandboxes_share_nothing(
    spare_host: SandboxHost,
) -> None:
    async def steps() -> tuple[list[dict[str, Any]], dict[str, int], list[int]]:
        ok(await spare_host.run(plain(WHERE, {"n": -1})))
        await ready(spare_host)
        # Two calls take the spares; two more find none and fork; two run in workers.
        runs = [spare_host.run(plain(WHERE, {"n": n})) for n in range(4)]
        runs += [spare_host.run(plain(WHERE, {"n": n}), worker_key=f"k{n}") for n in (4, 5)]
        found = [ok(result) for result in await asyncio.gather(*runs)]
        return found, spare_host.workers, await ready(spare_host)

    found, workers, _ = scenario(spare_host, steps)
    for n, seen in enumerate(found):
        assert seen["state"] == [n]
        assert seen["files"] == [f"left-by-{n}", "out"]
    # Six processes at once: six uids, six PID namespaces.
    assert len({seen["uid"] for seen in found}) == 6
    assert len({seen["pidns"] for seen in found}) == 6
    # Spares count as no worker: one for each key, and the two spares besides.
    assert workers == {"k4": 1, "k5": 1}


def test_many_mixed_calls_keep_the_pools_within_their_bounds(spare_host: SandboxHost) -> None:
    async def steps() -> list[tuple[int, int, int]]:
        seen = []
        for round_ in range(4):
            runs = [spare_host.run(plain(WHERE, {"n": n})) for n in range(3)]
            runs += [spare_host.run(plain(WHERE, {"n": n}), worker_key="k") for n in (3, 4)]
            found = [ok(result) for result in await asyncio.gather(*runs)]
            # A worker of "k" serves its calls in turn; every fresh call is alone.
            assert all(seen_["state"] == [n] for n, seen_ in enumerate(found[:3])), round_
            await ready(spare_host)
            seen.append(
                (spare_host.spares, sum(spare_host.workers.values()), len(children(spare_host.pid)))
            )
        return seen

    for spares, workers, alive in scenario(spare_host, steps):
        assert spares == 2
        assert workers <= 2
        assert alive == spares + workers


@pytest.mark.parametrize("mode", ["done-first", "done-twice", "after-done", "fake-channel"])
def test_what_a_spare_does_around_its_done_byte_reaches_no_result_and_no_call(
    spare_host: SandboxHost, mode: str
) -> None:
    async def steps() -> tuple[RunResult, list[int], list[int], dict[str, Any], float]:
        ok(await spare_host.run(plain(WHERE, {"n": 0})))
        before = await ready(spare_host)
        started = time.monotonic()
        attacked = await spare_host.run(plain(AROUND_DONE, {"mode": mode}, timeout_ms=5_000))
        took = time.monotonic() - started
        after = await ready(spare_host)
        following = ok(await spare_host.run(plain(WHERE, {"n": 1})))
        return attacked, before, after, following, took

    attacked, before, after, following, took = scenario(spare_host, steps)
    # No report it wrote after its done byte is taken for its result. (Output it writes
    # at once after the byte may land before the stop does: its own pipe, its own call.)
    assert "AFTER-DONE" not in attacked.result_json, (attacked.status, attacked.result_json)
    if mode != "after-done":
        assert "AFTER-DONE" not in attacked.stdout + attacked.stderr + attacked.error_message
    else:
        assert attacked.status is not RunStatus.OK or attacked.result_json == '"early"'
    if mode == "done-first":
        # A done byte with no report: no result at all.
        assert attacked.status is RunStatus.CRASHED, attacked.status
        assert attacked.result_json == ""
    else:
        assert attacked.result_json in ("", '"early"'), attacked.result_json
    # It ended at its done byte, not after the 10 s it went on for; its spare is gone.
    assert took < 5.0, took
    assert len(set(before) - set(after)) == 1
    # The next call has a process of its own and finds nothing of it.
    assert following["state"] == [1]
    assert following["files"] == ["left-by-1", "out"]


def test_a_spare_serves_only_calls_of_its_own_limits(spare_host: SandboxHost) -> None:
    reference_host = SandboxHost(preload=(), language_layer=False, spares=0)

    async def forked(memory_mb: int, timeout_ms: int) -> Any:
        await reference_host.start()
        job = plain(LIMITS_SEEN, memory_mb=memory_mb, timeout_ms=timeout_ms)
        return ok(await reference_host.run(job))

    async def steps() -> list[tuple[Any, Any]]:
        pairs = []
        # Spares of (256 MiB, 5 s) wait; calls of other limits must not take them.
        ok(await spare_host.run(plain(LIMITS_SEEN, memory_mb=256, timeout_ms=5_000)))
        for memory_mb, timeout_ms in ((128, 5_000), (256, 2_000), (512, 20_000), (256, 5_000)):
            await ready(spare_host)
            seen = ok(
                await spare_host.run(plain(LIMITS_SEEN, memory_mb=memory_mb, timeout_ms=timeout_ms))
            )
            pairs.append((seen, await forked(memory_mb, timeout_ms)))
        return pairs

    try:
        pairs = scenario(spare_host, steps)
    finally:
        asyncio.run(reference_host.close())
    for seen, expected in pairs:
        assert seen == expected
    assert len({json.dumps(seen) for seen, _ in pairs[:3]}) == 3


# CPU burnt in a thread of its own, then the call's own figure for all of its threads.
THREAD_BURN = """\
import resource, threading, time
def burn(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
def main():
    try:
        thread = threading.Thread(target=burn, args=(0.5,))
        thread.start()
        thread.join()
    except RuntimeError:
        return "no thread"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
"""


@pytest.mark.parametrize("key", [None, "k"], ids=["spare", "worker"])
def test_cpu_burnt_in_another_thread_is_billed_or_cannot_be_burnt(
    spare_host: SandboxHost, key: str | None
) -> None:
    # A spare's and a worker's CPU time is their /proc/<pid>/schedstat: the main
    # thread's alone. Another thread's time would go unbilled, were there threads.
    async def steps() -> RunResult:
        ok(await spare_host.run(plain(WHERE, {"n": 0})))
        await ready(spare_host)
        return await spare_host.run(plain(THREAD_BURN, timeout_ms=5_000), worker_key=key)

    result = scenario(spare_host, steps)
    found = ok(result)
    assert found == "no thread" or result.cpu_time_ms >= 0.9 * found * 1000, (found, result)


# Imports each module it can, in the language layer: what the call's globals let in.
IMPORTS = """\
def main():
    allowed = []
    try:
        import json
        allowed.append("json")
    except ImportError:
        pass
    try:
        import hashlib
        allowed.append("hashlib")
    except ImportError:
        pass
    try:
        import math
        allowed.append("math")
    except ImportError:
        pass
    return allowed
"""


def test_a_spare_serves_only_calls_of_its_own_allowed_imports() -> None:
    # With the language layer: a spare's globals allow its kind's imports, which must
    # not be those of another kind's call.
    host = SandboxHost(preload=(), spares=2)
    names = ["json", "hashlib", "math"]

    def importing(allowed: tuple[str, ...]) -> Job:
        return replace(plain(IMPORTS), allowed_imports=allowed)

    async def steps() -> list[Any]:
        seen = []
        ok(await host.run(importing(("json", "hashlib"))))
        for allowed in (("json",), ("json", "hashlib"), ("math",), ("json", "hashlib", "math")):
            await ready(host)
            seen.append(ok(await host.run(importing(allowed))))
        return seen

    try:
        seen = scenario(host, steps)
    finally:
        asyncio.run(host.close())
    assert seen == [["json"], ["json", "hashlib"], ["math"], names]
