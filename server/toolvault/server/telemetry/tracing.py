"""Tracing with OpenTelemetry: a span per RPC and, inside a run, validate/queue/sandbox/record.

Spans are exported over OTLP (gRPC) when ``TOOLVAULT_OTLP_ENDPOINT`` or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` names a collector; otherwise the tracer is a no-op one
(:class:`QuietTracer`, which skips even the no-op's context switches) and nothing is
exported. Either way a client's W3C ``traceparent`` metadata is honoured:
the call's spans join the client's trace, and its trace id is stored with the execution.
The provider is passed to whoever makes spans rather than installed globally, so that
one process can hold several servers (tests do).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from toolvault.server.config import Settings

TRACER_NAME = "toolvault.server"


class QuietTracer(trace.NoOpTracer):
    """OpenTelemetry's no-op tracer, without the context switch of each span it makes.

    A no-op tracer's span is the current span again (or the invalid one), so entering it
    as the current span changes nothing but costs a context attach and detach per span:
    four to six per call.
    """

    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: Any = None, *args: Any, **kwargs: Any
    ) -> contextlib.nullcontext[trace.Span]:
        """The current span, as the no-op tracer would make it, left current."""
        return contextlib.nullcontext(self.start_span(name, context))


class QuietTracerProvider(trace.NoOpTracerProvider):
    """The provider of :class:`QuietTracer`: what a server without a collector traces with."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        """A :class:`QuietTracer`."""
        return QuietTracer()


def recording(tracer: trace.Tracer) -> bool:
    """Whether ``tracer`` records spans (False for the no-op tracers)."""
    return not isinstance(tracer, trace.NoOpTracer)


def otlp_endpoint(settings: Settings) -> str:
    """Where spans go: toolvault's own setting, else OpenTelemetry's; "" for nowhere."""
    return settings.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")


def tracer_provider(settings: Settings) -> trace.TracerProvider:
    """A provider exporting to the configured OTLP endpoint, or a quiet one without one.

    The exporter reads the other ``OTEL_EXPORTER_OTLP_*`` variables (headers,
    certificates, ``..._INSECURE``); an ``http://`` endpoint is plaintext. The resource
    reads ``OTEL_RESOURCE_ATTRIBUTES``; the service name is ``OTEL_SERVICE_NAME``, or
    ``toolvault``.
    """
    endpoint = otlp_endpoint(settings)
    if not endpoint:
        return QuietTracerProvider()
    service = os.environ.get("OTEL_SERVICE_NAME", "toolvault")
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def shutdown(provider: trace.TracerProvider) -> None:
    """Export the spans still buffered and stop the exporter (nothing for a no-op one)."""
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def trace_id(span: trace.Span) -> str:
    """The id of ``span``'s trace as 32 hex digits, or "" when it is in none."""
    context = span.get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""
