"""Attacks on a server with ``--auth required`` by a caller holding a key of namespace red.

Each test is an attack that once worked (or failed with INTERNAL instead of a clear
refusal); it asserts the refusal and that nothing changed.
"""

from __future__ import annotations

import base64
import http.server
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import ServerProcess
from tests.server.test_access import ECHO, METHODS, call
from toolvault.client import AgentSpec, Client, ExecutionStatus, InvalidArgument, NotFound
from toolvault.v1 import access_pb2, agent_pb2, function_pb2, history_pb2, invocation_pb2


@pytest.fixture
def red_key(admin: Client) -> str:
    """A publisher key of namespace red; blue has a function, an agent and a run."""
    admin.publish("blue/secret", ECHO)
    admin.create_agent(AgentSpec(name="blue/bot", tools=("blue/secret",), capabilities=("c",)))
    admin.invoke("blue/secret", {"x": 7})
    return admin.create_key("publisher", namespaces=["red"])[0]


@pytest.fixture
def red(auth_server: ServerProcess, red_key: str) -> Iterator[Client]:
    """A client with ``red_key``; red has the function red/tool."""
    with Client(auth_server.address, api_key=red_key, retries=False) as client:
        client.publish("red/tool", ECHO)
        yield client


@pytest.fixture
def schema_host() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on loopback serving a JSON Schema; records the path of each request."""
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = b'{"enum": ["from the network"]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", paths
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_schema_ref_cannot_make_the_server_fetch_a_url_or_read_a_file(
    red: Client, schema_host: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, fetched = schema_host
    secret = tmp_path / "secret.json"
    secret.write_text('{"enum": ["hunter2"]}')
    red.publish("red/by_url", ECHO, input_schema={"properties": {"x": {"$ref": f"{url}/in"}}})
    red.publish("red/by_file", ECHO, input_schema={"properties": {"x": {"$ref": secret.as_uri()}}})
    red.publish("red/out", ECHO, output_schema={"$ref": f"{url}/out"})
    red.create_agent(AgentSpec(name="red/bot", capabilities=("c",), input_schema={"$ref": url}))
    for ref in ("red/by_url", "red/by_file"):
        with pytest.raises(InvalidArgument, match="cannot be resolved") as refused:
            red.invoke(ref, {"x": 1})
        assert "hunter2" not in str(refused.value)
    # The run happened: it is recorded, its result judged against a schema it cannot read.
    run = red.invoke("red/out", {"x": 1})
    assert run.status is ExecutionStatus.OUTPUT_SCHEMA_MISMATCH
    assert run.error is not None and "cannot be resolved" in run.error.message
    assert red.execution(run.execution_id).status is ExecutionStatus.OUTPUT_SCHEMA_MISMATCH
    with pytest.raises(InvalidArgument, match="cannot be resolved"):
        red.route_task("c", 1)
    assert fetched == []


@pytest.mark.parametrize(
    "schema",
    [{"$ref": "#/definitions/nowhere"}, {"$ref": "#"}],
    ids=["dangling", "self"],
)
def test_a_schema_whose_refs_go_nowhere_refuses_the_call_instead_of_failing(
    red: Client, schema: dict[str, str]
) -> None:
    red.publish("red/odd", ECHO, input_schema=schema)
    with pytest.raises(InvalidArgument, match="input schema"):
        red.invoke("red/odd", {"x": 1})
    assert red.history() == []


HUGE_INT = "[100000000000000000000000000000]"
ZERO_ID = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("method", "request_", "token"),
    [
        (
            "ListFunctionVersions",
            function_pb2.ListFunctionVersionsRequest(name="red/tool"),
            HUGE_INT,
        ),
        ("ListAuditEvents", access_pb2.ListAuditEventsRequest(), HUGE_INT),
        ("ListFunctions", function_pb2.ListFunctionsRequest(), '["\\ud800"]'),
        ("ListFunctions", function_pb2.ListFunctionsRequest(), '["a\\u0000b"]'),
        ("ListAgents", agent_pb2.ListAgentsRequest(), '["\\udfff"]'),
        ("ListExecutions", history_pb2.ListExecutionsRequest(), f'["2020-01-01", "{ZERO_ID}"]'),
        (
            "ListExecutions",
            history_pb2.ListExecutionsRequest(),
            f'["0001-01-01T00:00:00+14:00", "{ZERO_ID}"]',
        ),
    ],
    ids=["huge-int", "huge-int-audit", "surrogate", "nul", "surrogate-agents", "naive", "year-0"],
)
@pytest.mark.usefixtures("red")
def test_a_forged_page_token_is_invalid_argument(
    auth_server: ServerProcess, red_key: str, method: str, request_: Any, token: str
) -> None:
    descriptor = next(m for m in METHODS if m.name == method)
    request_.page_token = base64.urlsafe_b64encode(token.encode()).decode()
    with grpc.insecure_channel(auth_server.address) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            call(channel, descriptor, request_, red_key)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "page_token is not a token this server issued"


def test_a_number_too_long_to_convert_is_invalid_argument_and_stores_nothing(
    auth_server: ServerProcess, red_key: str, red: Client
) -> None:
    red.create_agent(
        AgentSpec(
            name="red/bot",
            tools=("red/tool",),
            capabilities=("c",),
            input_schema={"type": "object"},
        )
    )
    # Python refuses to convert integers of more than 4300 digits (CVE-2020-10735).
    long = '{"x": ' + "1" * 5000 + "}"
    attempts = {
        "Invoke": invocation_pb2.InvokeRequest(ref="red/tool", args_json=long),
        "PublishFunction": function_pb2.PublishFunctionRequest(
            name="red/new", source=ECHO, input_schema_json=long
        ),
        "CreateAgent": agent_pb2.CreateAgentRequest(
            spec=agent_pb2.AgentSpec(name="red/new", model_settings_json=long)
        ),
        "CallTool": agent_pb2.CallToolRequest(agent="red/bot", tool="tool", arguments_json=long),
        "RouteTask": agent_pb2.RouteTaskRequest(capability="c", input_json=long),
    }
    with grpc.insecure_channel(auth_server.address) as channel:
        for method in METHODS:
            if method.name in attempts:
                with pytest.raises(grpc.RpcError) as refused:
                    call(channel, method, attempts[method.name], red_key)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method.name
                assert "has an integer of more than 4300 digits" in (
                    refused.value.details() or ""
                ), method.name
    assert [f.name for f in red.functions()] == ["red/tool"]
    assert [a.spec.name for a in red.agents()] == ["red/bot"]
    assert red.history() == []


def test_round_robin_routing_does_not_reveal_another_namespaces_routing(
    auth_server: ServerProcess, admin: Client, red: Client
) -> None:
    for name in ("red/a", "red/b"):
        red.create_agent(AgentSpec(name=name, capabilities=("c",)))
    blue_key, _ = admin.create_key("invoker", namespaces=["blue"])
    picks = []
    with Client(auth_server.address, api_key=blue_key, retries=False) as blue:
        for _ in range(3):
            picks.append(red.route_task("c").agent.spec.name)
            # Were turns counted per capability for everyone, red's next pick would tell
            # whether blue routed a task in between.
            assert blue.route_task("c").agent.spec.name == "blue/bot"
    assert picks == ["red/a", "red/b", "red/a"]


def test_bytes_that_are_no_message_are_unauthenticated_without_a_key(
    auth_server: ServerProcess,
) -> None:
    admin_key = auth_server.bootstrap_key()
    with grpc.insecure_channel(auth_server.address) as channel:
        for method in METHODS:
            stub = channel.unary_unary(f"/{method.containing_service.full_name}/{method.name}")
            for key, expected in ((None, "UNAUTHENTICATED"), (admin_key, "INVALID_ARGUMENT")):
                metadata = [("authorization", f"Bearer {key}")] if key else None
                with pytest.raises(grpc.RpcError) as refused:
                    stub(b"\x00\x01", metadata=metadata, timeout=30)
                assert refused.value.code().name == expected, (method.name, key)
    assert auth_server.logged(lambda line: "code=UNAUTHENTICATED" in line)


def test_another_namespaces_objects_get_the_answer_of_objects_that_exist_nowhere(
    admin: Client, red: Client
) -> None:
    (blue_run,) = admin.history()
    attempts: list[tuple[Callable[[str], object], str, str]] = [
        (red.execution, blue_run.execution_id, str(uuid.uuid4())),
        (lambda name: red.route_task("c", calling_agent=name), "blue/bot", "red/nobody"),
        (lambda name: red.route_task("c", agent=name), "blue/bot", "red/nobody"),
        (red.agent_tools, "blue/bot", "red/nobody"),
        (lambda name: red.call_tool(name, "secret", {"x": 1}), "blue/bot", "red/nobody"),
        (lambda name: red.get(f"{name}@prod"), "blue/secret", "red/nobody"),
    ]
    for attempt, exists, missing in attempts:
        answers = []
        for name in (exists, missing):
            with pytest.raises(NotFound) as refused:
                attempt(name)
            answers.append(str(refused.value).replace(name, "NAME"))
        assert answers[0] == answers[1]
