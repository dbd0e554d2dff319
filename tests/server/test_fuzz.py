"""Random and malformed requests at every RPC: a clear status, no crash, nothing half-written.

Requests are generated from the message descriptors (so a new RPC or field is fuzzed
without touching this file), biased towards names and JSON the server knows; raw bytes
that are not a valid message are sent too. Hypothesis runs derandomized (a fixed seed)
with a bounded number of examples, so CI sees the same requests on every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ServerProcess
from toolvault.client import AgentSpec, Client
from toolvault.v1 import access_pb2, agent_pb2, function_pb2, history_pb2, invocation_pb2

METHODS: list[MethodDescriptor] = [
    method
    for module in (function_pb2, invocation_pb2, history_pb2, agent_pb2, access_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
# A run that finished, or a request refused for what it asked: anything but these.
BROKEN = {"UNKNOWN", "INTERNAL", "DATA_LOSS", "UNIMPLEMENTED", "DEADLINE_EXCEEDED"}
KNOWN = [
    "f",
    "f@1",
    "f@prod",
    "f@latest",
    "team/f",
    "a",
    "team/a",
    "echo",
    "chat",
    "admin",
    "*",
    "tvk_0123456789ab",
    "default/f",
    "a/b/c",
    "f@0",
    "x" * 300,
    "\x00",
    "é/ü",
    "def main(x):\n    return x\n",
    "def main(:\n",
    "",
]
JSON = [
    "{}",
    '{"x": 1}',
    '{"x": "\\u0000"}',
    "[]",
    "null",
    "{",
    '{"type": "object", "properties": {"x": {"type": "integer"}}}',
    '{"type": "nope"}',
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 5000 + "1" + "}" * 5000,
    "1e999999",
    "NaN",
]
STRINGS = st.one_of(
    st.sampled_from(KNOWN + JSON), st.text(max_size=80), st.text(min_size=200, max_size=2000)
)
INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


def values(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """A strategy for one value of ``field``."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return STRINGS
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99, -1])
    if field.type in INTS:
        low, high = INTS[field.type]
        return st.one_of(st.sampled_from([0, 1, 2, low, high]), st.integers(low, high))
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    assert field.type == FieldDescriptor.TYPE_MESSAGE, field.full_name
    return messages(field.message_type, depth + 1)


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """A strategy for messages of ``descriptor``: any subset of fields, any values."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        single = values(field, depth)
        optional[field.name] = st.lists(single, max_size=4) if field.is_repeated else single
    return st.fixed_dictionaries({}, optional=optional).map(lambda kw: _build(cls, kw))


def _build(cls: type[Message], fields: dict[str, Any]) -> Message:
    message = cls()
    for name, value in fields.items():
        target = getattr(message, name)
        if isinstance(value, Message):
            target.CopyFrom(value)
        elif isinstance(value, list):
            target.extend(value)
        else:
            setattr(message, name, value)
    return message


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, grpc.Channel]]:
    """A server with a function, an alias and an agent to aim at, and a raw channel to it."""
    root = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{root / 'fuzz.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    server = ServerProcess(db=url, data_dir=root / "data")
    server.start()
    with Client(server.address, retries=False) as client:
        client.publish("f", "def main(x: int = 0) -> int:\n    return x\n")
        client.publish("team/f", "def main(x: int = 0) -> int:\n    return x\n")
        client.set_alias("f", "prod", 1)
        client.create_agent(AgentSpec(name="a", tools=("f",), capabilities=("chat",)))
        client.create_key("admin")
    channel = grpc.insecure_channel(server.address)
    yield server, channel
    channel.close()
    code = server.stop()
    assert code == 0, "".join(server.log)
    assert not [line for line in server.log if "unexpected error" in line or "Traceback" in line]
    check_nothing_half_written(url)


def check_nothing_half_written(url: str) -> None:
    """Every stored object is whole: versions dense, aliases resolve, every change audited."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            for function_id, latest in db.execute(
                sa.text("SELECT id, latest_version FROM functions")
            ):
                numbers = db.scalars(
                    sa.text("SELECT version FROM function_versions WHERE function_id = :f"),
                    {"f": function_id},
                ).all()
                assert sorted(numbers) == list(range(1, latest + 1))
            assert not db.scalar(
                sa.text(
                    "SELECT count(*) FROM aliases a LEFT JOIN function_versions v ON "
                    "v.function_id = a.function_id AND v.version = a.version WHERE v.id IS NULL"
                )
            )
            for agent_id, current in db.execute(sa.text("SELECT id, current_revision FROM agents")):
                revisions = db.scalars(
                    sa.text("SELECT revision FROM agent_revisions WHERE agent_id = :a"),
                    {"a": agent_id},
                ).all()
                assert sorted(revisions) == list(range(1, current + 1))
            published = {
                (name, sha)
                for name, sha in db.execute(
                    sa.text(
                        "SELECT f.name, v.sha256 FROM function_versions v "
                        "JOIN functions f ON f.id = v.function_id"
                    )
                )
            }
            audited = {
                (target, json.loads(details)["sha256"])
                for target, details in db.execute(
                    sa.text(
                        "SELECT target, details FROM audit_events WHERE action = 'function.publish'"
                    )
                )
            }
            assert published <= audited
    finally:
        engine.dispose()


def call(channel: grpc.Channel, method: MethodDescriptor, payload: bytes) -> str:
    """Send ``payload`` as the request of ``method``; the status code's name."""
    stub = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=None,
        response_deserializer=None,
    )
    try:
        stub(payload, timeout=60)
    except grpc.RpcError as error:
        return error.code().name  # type: ignore[no-any-return]
    return "OK"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_random_requests_get_a_clear_status(
    fuzzed: tuple[ServerProcess, grpc.Channel], method: MethodDescriptor
) -> None:
    server, channel = fuzzed

    @settings(
        max_examples=75,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(messages(method.input_type))
    def requests(request: Message) -> None:
        code = call(channel, method, request.SerializeToString())
        assert code not in BROKEN, (method.name, request)

    requests()
    assert server.process is not None and server.process.poll() is None


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_bytes_that_are_no_message_are_an_invalid_argument(
    fuzzed: tuple[ServerProcess, grpc.Channel], method: MethodDescriptor
) -> None:
    _, channel = fuzzed
    # A truncated length-delimited field, a field number 0, an unterminated varint.
    for payload in (b"\x0a\xff\x01abc", b"\x00\x01", b"\x08\xff\xff\xff"):
        assert call(channel, method, payload) == "INVALID_ARGUMENT", (method.name, payload)
