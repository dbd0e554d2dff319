"""Who may do what, end to end: keys, roles, namespaces, revocation, audit, rate limits.

A real server runs with `--auth required`; calls go through the SDK and through raw
stubs built from the service descriptors, so that every RPC is covered, including the
ones added later (the matrix test fails for an RPC it has no expectation for).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from tests.conftest import BOOTSTRAP, ServerProcess
from toolvault.client import AgentSpec, Client, NotFound, PermissionDenied, Unauthenticated
from toolvault.client.errors import ResourceExhausted
from toolvault.v1 import (
    access_pb2,
    agent_pb2,
    function_pb2,
    history_pb2,
    invocation_pb2,
    secret_pb2,
)

ECHO = "def main(x: int) -> int:\n    return x\n"
METHODS: list[MethodDescriptor] = [
    method
    for module in (function_pb2, invocation_pb2, history_pb2, agent_pb2, access_pb2, secret_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]

# The README's table, written out: which roles may call each RPC.
READ = {
    "GetFunction",
    "ListFunctions",
    "ListFunctionVersions",
    "GetFunctionStats",
    "Invoke",
    "ListExecutions",
    "GetExecution",
    "GetAgent",
    "ListAgents",
    "ListAgentRevisions",
    "ListAgentTools",
    "CallTool",
    "RouteTask",
    "ListSecrets",
}
WRITE = {
    "PublishFunction",
    "SetAlias",
    "DeleteAlias",
    "DeleteFunction",
    "CreateAgent",
    "UpdateAgent",
    "DeleteAgent",
    "ListAuditEvents",
    "SetSecret",
    "DeleteSecret",
}
KEYS = {"CreateKey", "ListKeys", "RevokeKey"}
ALLOWED = {
    "admin": READ | WRITE | KEYS,
    "publisher": READ | WRITE,
    "invoker": READ,
    "agent": {"GetAgent", "ListAgentTools", "CallTool"},
}


def call(channel: grpc.Channel, method: MethodDescriptor, request: Any, key: str | None) -> Any:
    """Call any RPC by its descriptor; returns the reply or raises grpc.RpcError."""
    reply_class = message_factory.GetMessageClass(method.output_type)
    stub = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=reply_class.FromString,
    )
    metadata = [("authorization", f"Bearer {key}")] if key else None
    return stub(request, metadata=metadata, timeout=30)


def status(channel: grpc.Channel, method: MethodDescriptor, request: Any, key: str | None) -> str:
    try:
        call(channel, method, request, key)
    except grpc.RpcError as error:
        return error.code().name  # type: ignore[no-any-return]
    return "OK"


def empty(method: MethodDescriptor) -> Any:
    return message_factory.GetMessageClass(method.input_type)()


def test_without_a_key_every_rpc_but_health_is_unauthenticated(auth_server: ServerProcess) -> None:
    with grpc.insecure_channel(auth_server.address) as channel:
        codes = {m.name: status(channel, m, empty(m), None) for m in METHODS}
        wrong = {name: code for name, code in codes.items() if code != "UNAUTHENTICATED"}
        assert wrong == {}
        # Even a request the server would refuse as malformed in content.
        publish = next(m for m in METHODS if m.name == "PublishFunction")
        nul = function_pb2.PublishFunctionRequest(name="\x00")
        assert status(channel, publish, nul, None) == "UNAUTHENTICATED"
        assert status(channel, METHODS[0], empty(METHODS[0]), "tvk_0123456789ab_" + "x" * 43) == (
            "UNAUTHENTICATED"
        )
        reflection = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(reflection(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def matrix_requests(echo_execution: str) -> dict[str, Any]:
    """A request per RPC about objects in namespace team (which exist, where it matters)."""
    bot = agent_pb2.AgentSpec(name="team/bot", tools=["team/echo"], capabilities=["chat"])
    return {
        "PublishFunction": function_pb2.PublishFunctionRequest(name="team/fresh", source=ECHO),
        "GetFunction": function_pb2.GetFunctionRequest(ref="team/echo"),
        "ListFunctions": function_pb2.ListFunctionsRequest(),
        "ListFunctionVersions": function_pb2.ListFunctionVersionsRequest(name="team/echo"),
        "SetAlias": function_pb2.SetAliasRequest(name="team/echo", alias="prod", version=1),
        "DeleteAlias": function_pb2.DeleteAliasRequest(name="team/echo", alias="none"),
        "DeleteFunction": function_pb2.DeleteFunctionRequest(name="team/gone"),
        "GetFunctionStats": function_pb2.GetFunctionStatsRequest(name="team/echo"),
        "Invoke": invocation_pb2.InvokeRequest(ref="team/echo", args_json='{"x": 1}'),
        "ListExecutions": history_pb2.ListExecutionsRequest(),
        "GetExecution": history_pb2.GetExecutionRequest(id=echo_execution),
        "CreateAgent": agent_pb2.CreateAgentRequest(spec=agent_pb2.AgentSpec(name="team/new")),
        "UpdateAgent": agent_pb2.UpdateAgentRequest(spec=bot),
        "GetAgent": agent_pb2.GetAgentRequest(name="team/bot"),
        "ListAgents": agent_pb2.ListAgentsRequest(),
        "ListAgentRevisions": agent_pb2.ListAgentRevisionsRequest(name="team/bot"),
        "DeleteAgent": agent_pb2.DeleteAgentRequest(name="team/nobody"),
        "ListAgentTools": agent_pb2.ListAgentToolsRequest(agent="team/bot"),
        "CallTool": agent_pb2.CallToolRequest(
            agent="team/bot", tool="echo", arguments_json='{"x": 2}'
        ),
        "RouteTask": agent_pb2.RouteTaskRequest(capability="chat"),
        "CreateKey": access_pb2.CreateKeyRequest(role=access_pb2.ROLE_INVOKER, namespaces=["team"]),
        "ListKeys": access_pb2.ListKeysRequest(),
        "RevokeKey": access_pb2.RevokeKeyRequest(prefix="tvk_000000000000"),
        "ListAuditEvents": access_pb2.ListAuditEventsRequest(),
        "SetSecret": secret_pb2.SetSecretRequest(name="team/API_KEY", value="k-1234"),
        "ListSecrets": secret_pb2.ListSecretsRequest(),
        "DeleteSecret": secret_pb2.DeleteSecretRequest(name="team/NO_SUCH_KEY"),
    }


def test_each_role_may_call_exactly_the_rpcs_of_the_readme_table(
    auth_server: ServerProcess, admin: Client
) -> None:
    assert {m.name for m in METHODS} == set().union(*ALLOWED.values())
    admin.publish("team/echo", ECHO)
    admin.create_agent(AgentSpec(name="team/bot", tools=("team/echo",), capabilities=("chat",)))
    echo_execution = admin.invoke("team/echo", {"x": 0}).execution_id
    keys = {
        "admin": auth_server.bootstrap_key(),
        "publisher": admin.create_key("publisher", namespaces=["team"])[0],
        "invoker": admin.create_key("invoker", namespaces=["team"])[0],
        "agent": admin.create_key("agent", agent="team/bot")[0],
    }
    requests = matrix_requests(echo_execution)
    with grpc.insecure_channel(auth_server.address) as channel:
        for role, key in keys.items():
            for method in METHODS:
                code = status(channel, method, requests[method.name], key)
                allowed = method.name in ALLOWED[role]
                assert code not in ("UNAUTHENTICATED", "INTERNAL", "UNKNOWN"), (role, method.name)
                assert (code == "PERMISSION_DENIED") != allowed, (role, method.name, code)
                if allowed:
                    # Every allowed call in the matrix is meant to work or to find nothing.
                    assert code in ("OK", "NOT_FOUND", "ALREADY_EXISTS"), (role, method.name, code)


def test_a_key_of_one_namespace_cannot_see_call_or_change_another(
    auth_server: ServerProcess, admin: Client
) -> None:
    admin.publish("blue/secret", ECHO)
    admin.publish("red/tool", ECHO)
    admin.create_agent(AgentSpec(name="blue/bot", tools=("blue/secret",), capabilities=("c",)))
    admin.create_agent(AgentSpec(name="red/bot", tools=("red/tool",), capabilities=("c",)))
    blue_run = admin.invoke("blue/secret", {"x": 7}).execution_id
    red_key, _ = admin.create_key("publisher", namespaces=["red"])
    with Client(auth_server.address, api_key=red_key, retries=False) as red:
        assert [f.name for f in red.functions()] == ["red/tool"]
        assert [a.spec.name for a in red.agents()] == ["red/bot"]
        assert red.history() == [] and red.audit_events(target="blue/secret") == []
        # The same answer as for a name that exists nowhere: no existence leak.
        for exists, missing in (("blue/secret", "blue/nothing"), ("blue/secret@1", "blue/no@1")):
            answers = []
            for ref in (exists, missing):
                with pytest.raises(NotFound) as found:
                    red.invoke(ref, {"x": 1})
                answers.append(str(found.value).replace(ref.partition("@")[0], "NAME"))
            assert answers[0] == answers[1]
        for attempt in (
            lambda: red.get("blue/secret"),
            lambda: red.versions("blue/secret"),
            lambda: red.set_alias("blue/secret", "prod", 1),
            lambda: red.delete_alias("blue/secret", "prod"),
            lambda: red.delete("blue/secret"),
            lambda: red.stats("blue/secret"),
            lambda: red.execution(blue_run),
            lambda: red.agent("blue/bot"),
            lambda: red.agent_tools("blue/bot"),
            lambda: red.call_tool("blue/bot", "secret", {"x": 1}),
            lambda: red.delete_agent("blue/bot"),
            lambda: red.route_task("c", agent="blue/bot"),
        ):
            with pytest.raises(NotFound):
                attempt()
        with pytest.raises(PermissionDenied, match="namespace 'blue' is outside this key's"):
            red.publish("blue/secret", "def main(x):\n    return 'replaced'\n")
        with pytest.raises(PermissionDenied, match="namespace 'blue'"):
            red.create_agent(AgentSpec(name="blue/spy"))
        # An agent of its own namespace cannot borrow another namespace's function.
        with pytest.raises(Exception, match="not in the agent's namespace 'red'"):
            red.create_agent(AgentSpec(name="red/spy", tools=("blue/secret",)))
        assert {red.route_task("c").agent.spec.name for _ in range(4)} == {"red/bot"}
    # Nothing of blue's changed.
    assert admin.get("blue/secret").version == 1
    assert admin.function("blue/secret").aliases == {}
    assert admin.invoke("blue/secret", {"x": 3}).result == 3
    assert [a.spec.name for a in admin.agents()] == ["blue/bot", "red/bot"]


def test_an_agent_key_calls_its_agents_tools_and_nothing_else(
    auth_server: ServerProcess, admin: Client
) -> None:
    admin.publish("team/echo", ECHO)
    admin.create_agent(AgentSpec(name="team/bot", tools=("team/echo",)))
    admin.create_agent(AgentSpec(name="team/other", tools=("team/echo",)))
    key, _ = admin.create_key("agent", agent="team/bot")
    with Client(auth_server.address, api_key=key, retries=False) as bot:
        assert [t.name for t in bot.agent_tools("team/bot")] == ["echo"]
        result = bot.call_tool("team/bot", "echo", {"x": 5})
        assert (result.is_error, result.execution.result) == (False, 5)
        assert result.execution.caller.startswith(key[:16] + " ")
        assert auth_server.logged(lambda line: "CallTool" in line and f"caller={key[:16]} " in line)
        with pytest.raises(NotFound):
            bot.call_tool("team/other", "echo", {"x": 5})
        with pytest.raises(PermissionDenied, match="role agent may not call Invoke"):
            bot.invoke("team/echo", {"x": 5})


def test_a_revoked_key_stops_at_once_and_the_audit_log_says_who_did_what(
    auth_server: ServerProcess, admin: Client
) -> None:
    secret, key = admin.create_key("publisher", namespaces=["team"], description="ci")
    with Client(auth_server.address, api_key=secret, retries=False) as publisher:
        version = publisher.publish("team/echo", ECHO)
        publisher.set_alias("team/echo", "prod", 1)
        assert admin.revoke_key(key.prefix).revoked_at is not None
        with pytest.raises(Unauthenticated, match="unknown or revoked"):
            publisher.functions()
    admin.delete("team/echo")
    events = [(e.actor, e.action, e.target, e.details) for e in admin.audit_events()]
    admin_prefix = auth_server.bootstrap_key()[:16]
    assert events[:4] == [
        (admin_prefix, "function.delete", "team/echo", {"versions": 1}),
        (admin_prefix, "key.revoke", key.prefix, {"role": "publisher"}),
        (key.prefix, "alias.set", "team/echo", {"alias": "prod", "version": 1}),
        (key.prefix, "function.publish", "team/echo", {"version": 1, "sha256": version.sha256}),
    ]
    assert [e.action for e in admin.audit_events()][4:] == ["key.create", "key.create"]
    assert all(e.peer.startswith("ipv4:127.0.0.1:") for e in admin.audit_events()[:4])
    listed = {k.prefix: k for k in admin.keys()}
    assert listed[key.prefix].revoked_at is not None and listed[key.prefix].description == "ci"
    assert not any(secret[17:] in json.dumps(str(k)) for k in listed.values())


def test_the_bootstrap_key_is_shown_once_and_an_admin_key_can_be_given(
    db_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(db=db_url, data_dir=tmp_path, extra_args=["--auth", "required"])
    server.start()
    key = server.bootstrap_key()
    server.stop()
    server.start()
    assert not any(BOOTSTRAP.search(line) for line in server.log)
    with Client(server.address, api_key=key, retries=False) as client:
        assert [k.created_by for k in client.keys()] == ["bootstrap"]
    server.stop()

    given = f"tvk_{uuid.uuid4().hex[:12]}_{'A' * 43}"
    other = ServerProcess(
        db=f"sqlite:///{tmp_path / 'other.db'}",
        data_dir=tmp_path / "other",
        extra_args=["--auth", "required"],
        env={"TOOLVAULT_ADMIN_KEY": given},
    )
    other.start()
    try:
        assert not any(BOOTSTRAP.search(line) for line in other.log)
        with Client(other.address, api_key=given, retries=False) as client:
            assert [k.prefix for k in client.keys()] == [given[:16]]
    finally:
        other.stop()
    bad = ServerProcess(
        db=f"sqlite:///{tmp_path / 'bad.db'}",
        data_dir=tmp_path / "bad",
        extra_args=["--auth", "required"],
        env={"TOOLVAULT_ADMIN_KEY": "hunter2"},
    )
    with pytest.raises(RuntimeError, match="TOOLVAULT_ADMIN_KEY is not a toolvault key"):
        bad.start()


def test_a_key_over_its_rate_limit_is_told_when_to_retry(db_url: str, tmp_path: Path) -> None:
    server = ServerProcess(
        db=db_url,
        data_dir=tmp_path,
        extra_args=["--auth", "required"],
        env={"TOOLVAULT_RATE_LIMIT_PER_S": "0.5", "TOOLVAULT_RATE_LIMIT_BURST": "3"},
    )
    server.start()
    try:
        with Client(server.address, api_key=server.bootstrap_key(), retries=False) as client:
            for _ in range(3):
                client.functions()
            with pytest.raises(ResourceExhausted, match="rate limit of key tvk_") as limited:
                client.functions()
            assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 2
    finally:
        server.stop()


def test_namespaces_share_no_cached_results_and_no_idempotency_keys(
    auth_server: ServerProcess, admin: Client
) -> None:
    source = "import random\n\ndef main(x):\n    return random.random()\n"
    for namespace in ("blue", "red"):
        admin.publish(f"{namespace}/f", source, deterministic=True)
    blue = admin.invoke("blue/f", {"x": 1}, idempotency_key="k")
    red = admin.invoke("red/f", {"x": 1}, idempotency_key="k")
    # Same code, same arguments, same key: still two runs, and neither refers to the other.
    assert not red.cached and red.execution_id != blue.execution_id
    assert red.result != blue.result
    assert admin.invoke("red/f", {"x": 1}, idempotency_key="k").execution_id == red.execution_id
