"""Oversized and malformed requests get a clear error naming the problem, and store nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from toolvault.client import AgentSpec, Client, InvalidArgument, ResourceExhausted

OK = "def main(x=0):\n    return x\n"


@pytest.fixture
def client(server: str) -> Iterator[Client]:
    with Client(server, retries=False) as client:
        client.publish("f", OK)
        yield client


@pytest.mark.parametrize(
    ("attempt", "message"),
    [
        (lambda c: c.publish("x" * 65, OK), "name 'xxx"),
        (lambda c: c.publish("n" * 33 + "/f", OK), "NAMESPACE is 1 to 32"),
        (lambda c: c.publish("default/f", OK), "the default namespace is written without"),
        (lambda c: c.publish("a/b/c", OK), "use NAME or NAMESPACE/NAME"),
        (lambda c: c.publish("f", OK + "#" * 300_000), "more than the limit of 262144"),
        (lambda c: c.publish("f", OK, description="a\x00b"), "description contains a NUL"),
        (
            lambda c: c.publish("f", OK, input_schema={"items": _nested(70)}),
            "input_schema_json is nested more than 64 levels deep",
        ),
        (lambda c: c.invoke("f", {"x": _nested(100)}), "args_json is nested more than 64"),
        (lambda c: c.invoke("f", {"x": "y" * 1_100_000}), "more than the limit"),
        (lambda c: c.create_agent(AgentSpec(name="a" * 65)), "name 'aaa"),
        (lambda c: c.create_agent(AgentSpec(name="a", tools=("f\x00",))), "tools[0] contains"),
        (lambda c: c.create_key("publisher", namespaces=["Bad"]), "namespace 'Bad' is invalid"),
        (lambda c: c.create_key("agent"), "an agent key needs the agent"),
        (lambda c: c.create_key("invoker"), "needs at least one namespace"),
        (lambda c: c.create_key("admin", description="d" * 257), "longer than 256"),
        (lambda c: c.audit_events(action="nope"), "action 'nope' is not one of"),
    ],
)
def test_a_hostile_request_is_refused_naming_the_problem(
    client: Client, attempt: object, message: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        attempt(client)  # type: ignore[operator]
    assert message in str(refused.value)
    assert [f.name for f in client.functions()] == ["f"]
    assert client.agents() == [] and len(client.history()) == 0
    assert [k.role for k in client.keys()] == []


def test_a_message_over_the_servers_limit_is_refused_before_it_is_read(
    server: str, client: Client
) -> None:
    with Client(server, retries=False, max_source_bytes=None) as unchecked:
        with pytest.raises(ResourceExhausted, match="larger than max"):
            # Past the source, the arguments and a call's files together (~10 MiB).
            unchecked.publish("f", "#" * 20_000_000)
    assert client.versions("f")[0].version == 1


def _nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value
