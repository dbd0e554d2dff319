"""Tracing: spans exported over OTLP to a collector, and client trace context honoured."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.conftest import ServerProcess
from toolvault.client import Client
from toolvault.server.telemetry.tracing import QuietTracer, recording
from toolvault.v1 import history_pb2, history_pb2_grpc, invocation_pb2, invocation_pb2_grpc

ADD = "def main(a, b):\n    return a + b\n"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace collector that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[trace_pb2.Span]:
        """The spans of one trace, in the order they started."""
        found = [s for s in self.spans if s.trace_id.hex() == trace_id]
        return sorted(found, key=lambda s: s.start_time_unix_nano)


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"http://127.0.0.1:{port}"
    server.stop(None)


def traceparent() -> tuple[str, str, str]:
    """A client's trace id, span id and the ``traceparent`` header naming them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def invoke(address: str, header: str | None) -> tuple[str, str]:
    """Invoke add(1, 2), with ``header`` as traceparent; the execution's id and trace id."""
    metadata = [("traceparent", header)] if header else None
    with grpc.insecure_channel(address) as channel:
        reply = invocation_pb2_grpc.InvocationServiceStub(channel).Invoke(
            invocation_pb2.InvokeRequest(ref="add", args_json='{"a": 1, "b": 2}'),
            metadata=metadata,
        )
        stored = history_pb2_grpc.HistoryServiceStub(channel).GetExecution(
            history_pb2.GetExecutionRequest(id=reply.execution.id)
        )
    assert reply.execution.result_json == "3"
    assert stored.execution.trace_id == reply.execution.trace_id
    return reply.execution.id, reply.execution.trace_id


def test_an_invoke_is_traced_under_the_clients_span_with_four_inner_spans(
    db_url: str, tmp_path: Path, collector: tuple[Collector, str]
) -> None:
    spans, endpoint = collector
    server = ServerProcess(
        db=db_url, data_dir=tmp_path / "data", env={"TOOLVAULT_OTLP_ENDPOINT": endpoint}
    )
    server.start()
    client_trace, client_span, header = traceparent()
    try:
        with Client(server.address) as client:
            client.publish("add", ADD)
        _, traced = invoke(server.address, header)
        _, untraced = invoke(server.address, None)
    finally:
        # Stopping flushes the spans still buffered.
        assert server.stop() == 0
    assert traced == client_trace
    assert len(untraced) == 32 and untraced not in (client_trace, "0" * 32)
    assert f"traces exported over OTLP to {endpoint}" in "".join(server.log)

    trace = spans.trace(client_trace)
    (rpc,) = [s for s in trace if s.parent_span_id.hex() == client_span]
    assert rpc.name == "toolvault.v1.InvocationService/Invoke"
    assert rpc.kind == trace_pb2.Span.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in rpc.attributes}
    assert attributes["rpc.system"].string_value == "grpc"
    assert attributes["rpc.method"].string_value == "Invoke"
    assert attributes["rpc.grpc.status_code"].int_value == 0
    inner = [s for s in trace if s is not rpc]
    assert [s.name for s in inner] == ["validate", "queue", "sandbox", "record"]
    assert {s.parent_span_id for s in inner} == {rpc.span_id}
    assert all(rpc.start_time_unix_nano <= s.start_time_unix_nano for s in inner)
    assert all(s.end_time_unix_nano <= rpc.end_time_unix_nano for s in inner)
    # Calls without trace context start traces of their own.
    roots = sorted(s.name for s in spans.spans if not s.parent_span_id)
    assert roots == [
        "toolvault.v1.FunctionService/PublishFunction",
        "toolvault.v1.HistoryService/GetExecution",
        "toolvault.v1.HistoryService/GetExecution",
        "toolvault.v1.InvocationService/Invoke",
    ]
    own = spans.trace(untraced)
    assert [s.name for s in own] == [
        "toolvault.v1.InvocationService/Invoke",
        "validate",
        "queue",
        "sandbox",
        "record",
    ]


def test_without_an_exporter_a_clients_trace_id_is_still_stored_with_the_execution(
    server: str,
) -> None:
    client_trace, _, header = traceparent()
    with Client(server) as client:
        client.publish("add", ADD)
        execution_id, traced = invoke(server, header)
        _, untraced = invoke(server, None)
        assert client.execution(execution_id).trace_id == client_trace
    assert (traced, untraced) == (client_trace, "")


def test_the_quiet_tracer_makes_the_spans_a_no_op_tracer_would_without_entering_them() -> None:
    quiet, noop = QuietTracer(), trace.NoOpTracer()
    with quiet.start_as_current_span("outside") as span:
        assert span is trace.INVALID_SPAN
    client = trace.NonRecordingSpan(
        trace.SpanContext(int("ab" * 16, 16), int("cd" * 8, 16), is_remote=True)
    )
    with trace.use_span(client):
        with quiet.start_as_current_span("inside") as span, noop.start_as_current_span("x") as ref:
            assert span is ref is client
            assert trace.get_current_span() is client
    assert not recording(quiet)
    assert not recording(noop)
