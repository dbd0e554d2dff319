"""What operators rely on: health, reflection, metrics and the request log."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.conftest import TOOLVAULT, ServerProcess
from toolvault.client import Client

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SLOW = "def main():\n    n = 0\n    for i in range(4000000):\n        n += i\n    return n\n"


def test_the_health_command_exits_zero_only_for_a_serving_server(server: str) -> None:
    ok = subprocess.run([TOOLVAULT, "--server", server, "health"], capture_output=True, text=True)
    assert (ok.returncode, ok.stdout) == (0, "SERVING\n")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        down = subprocess.run(
            [TOOLVAULT, "--server", address, "health", "--timeout", "1"],
            capture_output=True,
            text=True,
        )
    assert down.returncode == 3 and down.stdout.startswith("UNREACHABLE (")


def test_health_and_reflection_answer_for_every_service(server: str) -> None:
    with grpc.insecure_channel(server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "toolvault.v1.FunctionService", "toolvault.v1.AgentService"):
            check = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert check.status == SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert services >= {
        "toolvault.v1.FunctionService",
        "toolvault.v1.InvocationService",
        "toolvault.v1.HistoryService",
        "toolvault.v1.AgentService",
        "grpc.health.v1.Health",
    }


def test_sigterm_turns_health_not_serving_then_drains_and_exits_zero(tmp_path: Path) -> None:
    server = ServerProcess(db=f"sqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path)
    server.start()
    with Client(server.address) as client, grpc.insecure_channel(server.address) as channel:
        client.publish("slow", SLOW)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == SERVING
        outcome: list[object] = []
        call = threading.Thread(target=lambda: outcome.append(client.invoke("slow").result))
        call.start()
        time.sleep(0.3)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING
        call.join()
        assert server.stop() == 0
    assert outcome == [sum(range(4000000))]


def test_metrics_and_json_request_logs_describe_the_calls(tmp_path: Path) -> None:
    server = ServerProcess(
        db=f"sqlite:///{tmp_path / 'db.sqlite'}",
        data_dir=tmp_path,
        env={"TOOLVAULT_METRICS_PORT": "0", "TOOLVAULT_LOG_FORMAT": "json"},
    )
    server.start()
    try:
        log = "".join(server.log)
        port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log)
        assert port is not None, log
        url = f"http://127.0.0.1:{port.group(1)}/metrics"
        with Client(server.address) as client:
            client.publish("add", "def main(a, b):\n    return a + b\n")
            assert client.invoke("add", {"a": 1, "b": 2}).result == 3
            assert client.invoke("add", {"a": 1, "b": "x"}).status == "ERROR"
            spin = "def main():\n    x = 0\n    for i in range(20000000):\n        x += i\n"
            client.publish("nap", spin, timeout_ms=60000)
            napping = threading.Thread(target=client.invoke, args=("nap",))
            napping.start()
            seen = ""
            while napping.is_alive() and "toolvault_sandboxes_in_flight 1.0" not in seen:
                with urllib.request.urlopen(url, timeout=10) as response:
                    seen = response.read().decode()
            napping.join()
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert "toolvault_sandboxes_in_flight 1.0" in seen
    finally:
        server.stop()
    assert 'toolvault_invocations_total{function="add",status="OK"} 1.0' in text
    assert 'toolvault_invocations_total{function="add",status="ERROR"} 1.0' in text
    assert 'toolvault_run_duration_seconds_count{function="add"} 2.0' in text
    assert 'toolvault_invocations_total{function="nap",status="OK"} 1.0' in text
    assert "toolvault_sandboxes_in_flight 0.0" in text
    assert "toolvault_queued_calls 0.0" in text
    records = [json.loads(line) for line in server.log if line.startswith("{")]
    invokes = [r for r in records if r.get("method") == "/toolvault.v1.InvocationService/Invoke"]
    assert len(invokes) == 3
    assert {r["code"] for r in invokes} == {"OK"}  # a failing function is a successful RPC
    assert all(r["request_id"] and r["duration_ms"] > 0 for r in invokes)
    assert [r["target"] for r in invokes] == ["add", "add", "nap"]
