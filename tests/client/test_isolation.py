"""Publishing with an isolation, through the SDK and the CLI, against real servers.

A call can see whether it shares a process with an earlier one, even under the language
layer: ``random``'s state survives in a warm worker, so a call that seeds it leaves the
next call of the same worker a predictable number, where a fresh process has its own.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import ServerProcess
from toolvault.client import Client, Isolation
from toolvault.v1 import function_pb2, function_pb2_grpc

RunCli = Callable[..., tuple[int, str, str]]
SEEDED = """\
import random


def main(seed: bool = False) -> float:
    if seed:
        random.seed(7)
    return random.random()
"""
_SEEDED_RANDOM = random.Random(7)
_SEEDED_RANDOM.random()
# What the call after a seeding one gets when it runs in the same process.
AFTER_SEEDING = _SEEDED_RANDOM.random()


def serve(db_url: str, data_dir: Path, **env: str) -> Iterator[str]:
    server = ServerProcess(db=db_url, data_dir=data_dir, env=env)
    server.start()
    yield server.address
    server.stop()


@pytest.fixture
def warm_server(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A server in warm mode whose operator made the namespace ``ops`` fresh."""
    yield from serve(
        db_url,
        tmp_path / "data",
        TOOLVAULT_SANDBOX_MODE="warm",
        TOOLVAULT_FRESH_NAMESPACES="ops",
    )


@pytest.fixture
def fresh_server(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A server in fresh mode, said explicitly: the default mode may change."""
    yield from serve(db_url, tmp_path / "data", TOOLVAULT_SANDBOX_MODE="fresh")


def shares_a_process(client: Client, ref: str) -> bool:
    """Whether a call of ``ref`` ran in the process of the call before it."""
    client.invoke(ref, {"seed": True})
    return client.invoke(ref).result == AFTER_SEEDING


def test_the_sdk_publishes_each_isolation_and_the_server_runs_each_as_published(
    warm_server: str,
) -> None:
    with Client(warm_server, retries=False) as client:
        warm = client.publish("seeded", SEEDED)
        assert (warm.version, warm.isolation) == (1, Isolation.WARM)
        fresh = client.publish("seeded", SEEDED, isolation="fresh")
        assert (fresh.version, fresh.created, fresh.isolation) == (2, True, Isolation.FRESH)
        assert fresh.sha256 != warm.sha256
        assert client.publish("seeded", SEEDED, isolation=Isolation.FRESH).created is False
        assert client.get("seeded@2").isolation is Isolation.FRESH
        assert [v.isolation for v in client.versions("seeded")] == ["fresh", "warm"]
        ops = client.publish("ops/seeded", SEEDED, isolation="WARM")
        assert ops.isolation is Isolation.WARM

        assert shares_a_process(client, "seeded@1")
        assert not shares_a_process(client, "seeded@2")
        assert not shares_a_process(client, "ops/seeded")

        with pytest.raises(ValueError, match="unknown isolation 'lukewarm'; valid values: warm"):
            client.publish("seeded", SEEDED, isolation="lukewarm")


def test_a_server_in_fresh_mode_runs_warm_versions_fresh(fresh_server: str) -> None:
    with Client(fresh_server, retries=False) as client:
        assert client.publish("seeded", SEEDED).isolation is Isolation.WARM
        assert not shares_a_process(client, "seeded")


def test_an_isolation_the_server_does_not_know_is_invalid_argument(server: str) -> None:
    with grpc.insecure_channel(server) as channel:
        stub = function_pb2_grpc.FunctionServiceStub(channel)
        request = function_pb2.PublishFunctionRequest(name="f", source=SEEDED, isolation=7)
        with pytest.raises(grpc.RpcError) as caught:
            stub.PublishFunction(request)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "isolation 7 is not an Isolation (ISOLATION_WARM or ISOLATION_FRESH)"
    )


def test_the_cli_publishes_with_an_isolation_and_shows_it(
    server: str, cli: RunCli, tmp_path: Path
) -> None:
    source = tmp_path / "seeded.py"
    source.write_text(SEEDED)
    code, out, err = cli(
        "--server", server, "publish", "seeded", str(source), "--isolation", "fresh"
    )
    assert (code, err) == (0, "")
    assert "version: 1" in out.splitlines()
    code, out, _ = cli("--server", server, "get", "seeded")
    assert code == 0
    assert ["isolation:", "fresh"] in [line.split() for line in out.splitlines()]
    code, out, _ = cli("--server", server, "--json", "publish", "seeded", str(source))
    assert (code, json.loads(out)["version"], json.loads(out)["isolation"]) == (0, 2, "warm")
    code, out, _ = cli("--server", server, "--json", "get", "seeded@1")
    assert json.loads(out)["isolation"] == "fresh"
    code, out, err = cli("--server", server, "publish", "seeded", str(source), "--isolation", "hot")
    assert (code, out) == (2, "")
    assert "error: argument --isolation: invalid choice: 'hot'" in err


def test_each_execution_says_how_its_sandbox_ran(warm_server: str, cli: RunCli) -> None:
    with Client(warm_server, retries=False) as client:
        client.publish("ran_warm", SEEDED)
        client.publish("ran_fresh", SEEDED, isolation="fresh")
        client.publish("ran_cached", "def main():\n    return 1\n", deterministic=True)
        warm = client.invoke("ran_warm")
        fresh = client.invoke("ran_fresh")
        client.invoke("ran_cached")
        cached = client.invoke("ran_cached")
        fresh_namespace = client.publish("ops/ran_warm", SEEDED)
        assert fresh_namespace.isolation is Isolation.WARM
        forced = client.invoke("ops/ran_warm")  # the operator made ops fresh
        assert [warm.isolation, fresh.isolation, forced.isolation] == [
            Isolation.WARM,
            Isolation.FRESH,
            Isolation.FRESH,
        ]
        assert cached.cached and cached.isolation is None
        # As recorded: the history says the same.
        for execution in (warm, fresh, forced, cached):
            assert client.execution(execution.execution_id).isolation == execution.isolation
    code, out, _ = cli("--server", warm_server, "--json", "execution", fresh.execution_id)
    assert (code, json.loads(out)["isolation"]) == (0, "fresh")
