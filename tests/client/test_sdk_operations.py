"""Statistics, the result cache, idempotency keys and retries through the SDK and the CLI."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from toolvault.client import Client, Execution, ExecutionStatus, Unavailable
from toolvault.v1 import function_pb2

RunCli = Callable[..., tuple[int, str, str]]
DIVIDE = "def main(x):\n    return 1 / x\n"
RANDOM = "import random\n\ndef main(x):\n    return [x, random.random()]\n"


def at_rank(values: list[Any], percent: int) -> Any:
    """The nearest-rank percentile, computed independently of the server."""
    ordered = sorted(values)
    rank = max(1, -(-percent * len(ordered) // 100))
    return ordered[rank - 1]


def expected_stats(runs: list[Execution]) -> dict[str, Any]:
    failures = [r for r in runs if not r.ok]
    return {
        "calls": len(runs),
        "status_counts": dict(Counter(r.status for r in runs)),
        "success_rate": sum(r.ok for r in runs) / len(runs),
        "p50_duration_ms": at_rank([r.duration_ms for r in runs], 50),
        "p95_duration_ms": at_rank([r.duration_ms for r in runs], 95),
        "p99_duration_ms": at_rank([r.duration_ms for r in runs], 99),
        "max_peak_memory_bytes": max(r.peak_memory_bytes for r in runs),
        "p95_peak_memory_bytes": at_rank([r.peak_memory_bytes for r in runs], 95),
        "error_counts": dict(Counter(r.error.type for r in failures if r.error)),
        "failure_ids": [r.execution_id for r in failures],
    }


def test_stats_match_the_history_and_keys_and_the_cache_keep_calls_to_one_run(
    server: str, cli: RunCli, tmp_path: Path
) -> None:
    (tmp_path / "rand.py").write_text(RANDOM)
    with Client(server, timeout=30) as client:
        client.publish("div", DIVIDE)
        for x in (1, 2, 0, 4, 0, "a", 8):
            client.invoke("div", {"x": x})
        client.publish("div", DIVIDE + "# v2\n")
        client.invoke("div", {"x": 0})

        runs = client.history("div", limit=None)
        stats = client.stats("div", failures=3)
        v1 = client.stats("div", version=1)
        assert len(runs) == 8
        expected = expected_stats(runs)
        assert {
            "calls": stats.calls,
            "status_counts": stats.status_counts,
            "success_rate": stats.success_rate,
            "p50_duration_ms": stats.p50_duration_ms,
            "p95_duration_ms": stats.p95_duration_ms,
            "p99_duration_ms": stats.p99_duration_ms,
            "max_peak_memory_bytes": stats.max_peak_memory_bytes,
            "p95_peak_memory_bytes": stats.p95_peak_memory_bytes,
            "error_counts": stats.error_counts,
            "failure_ids": [f.execution_id for f in stats.recent_failures],
        } == {**expected, "failure_ids": expected["failure_ids"][:3]}
        assert stats.error_counts == {"ZeroDivisionError": 3, "TypeError": 1}
        assert list(stats.error_counts) == ["ZeroDivisionError", "TypeError"]
        assert stats.recent_failures[0].version == 2
        assert stats.recent_failures[0].status is ExecutionStatus.ERROR
        assert (v1.version, v1.calls, v1.status_counts[ExecutionStatus.ERROR]) == (1, 7, 3)
        assert stats.until - stats.since == v1.until - v1.since
        assert (stats.until - stats.since).total_seconds() == 24 * 3600

        code, out, _ = cli("--server", server, "--json", "stats", "div", "--hours", "1")
        assert code == 0
        assert (json.loads(out)["calls"], json.loads(out)["success_rate"]) == (8, 0.5)

        code, out, _ = cli(
            "--server", server, "--json", "publish", "rand", str(tmp_path / "rand.py"),
            "--deterministic", "--max-concurrency", "4",
        )  # fmt: skip
        published = json.loads(out)
        assert (code, published["deterministic"], published["limits"]["max_concurrency"]) == (
            0,
            True,
            4,
        )
        first = client.invoke("rand", {"x": 1})
        hit = client.invoke("rand", {"x": 1})
        assert (hit.cached, hit.cached_from, hit.result) == (True, first.execution_id, first.result)

        keyed = [
            client.invoke("div", {"x": 3}, idempotency_key="order-17") for _ in range(2)
        ] + [
            json.loads(
                cli(
                    "--server", server, "--json", "invoke", "div", "--args", '{"x": 3}',
                    "--idempotency-key", "order-17",
                )[1]
            )["execution_id"]
        ]  # fmt: skip
        assert keyed[0].execution_id == keyed[1].execution_id == keyed[2]
        assert len(client.history("div", limit=None)) == 9  # the three calls ran once


class FlakyFunctions(grpc.GenericRpcHandler):
    """GetFunction that answers UNAVAILABLE `failures` times, then a version."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != "/toolvault.v1.FunctionService/GetFunction":  # type: ignore[attr-defined]
            return None
        return grpc.unary_unary_rpc_method_handler(
            self._get,
            request_deserializer=function_pb2.GetFunctionRequest.FromString,
            response_serializer=function_pb2.GetFunctionResponse.SerializeToString,
        )

    def _get(
        self, request: function_pb2.GetFunctionRequest, context: grpc.ServicerContext
    ) -> function_pb2.GetFunctionResponse:
        self.attempts += 1
        if self.attempts <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "starting up")
        return function_pb2.GetFunctionResponse(
            version=function_pb2.FunctionVersion(name=request.ref, version=1)
        )


@pytest.fixture
def flaky() -> Iterator[Callable[[int], tuple[str, FlakyFunctions]]]:
    servers: list[grpc.Server] = []

    def start(failures: int) -> tuple[str, FlakyFunctions]:
        handler = FlakyFunctions(failures)
        server = grpc.server(ThreadPoolExecutor(2), handlers=[handler])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", handler

    yield start
    for server in servers:
        server.stop(None)


def test_the_client_retries_unavailable_with_backoff_up_to_four_attempts(
    flaky: Callable[[int], tuple[str, FlakyFunctions]],
) -> None:
    address, handler = flaky(2)
    with Client(address, timeout=10) as client:
        assert client.get("f").name == "f"
    assert handler.attempts == 3

    address, handler = flaky(10)
    with Client(address, timeout=10) as client, pytest.raises(Unavailable, match="starting up"):
        client.get("f")
    assert handler.attempts == 4

    address, handler = flaky(2)
    with Client(address, timeout=10, retries=False) as client, pytest.raises(Unavailable):
        client.get("f")
    assert handler.attempts == 1


@pytest.mark.parametrize("retries", [True, False])
def test_a_target_with_several_addresses_gets_calls_round_robin(
    flaky: Callable[[int], tuple[str, FlakyFunctions]], retries: bool
) -> None:
    replicas = [flaky(0) for _ in range(3)]
    target = "ipv4:" + ",".join(address for address, _ in replicas)
    with Client(target, timeout=10, retries=retries) as client:
        for _ in range(30):
            assert client.get("f").name == "f"
    counts = [handler.attempts for _, handler in replicas]
    # round_robin starts on whichever connection is ready first, then takes turns.
    assert sum(counts) == 30
    assert min(counts) >= 8, counts
