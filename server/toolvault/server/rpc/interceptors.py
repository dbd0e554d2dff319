"""What runs around every RPC, in one ordered list: :func:`interceptors`.

The readiness gate, a log line and a span per RPC, the authorizer (``rpc.auth``), and
the refusal of requests that are no message. A servicer method then refuses NUL
characters and maps domain errors (``rpc.status``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import propagate, trace

from toolvault.server.config import Settings
from toolvault.server.rpc.auth import Authorizer, principal
from toolvault.server.services.keys import Keys
from toolvault.server.services.ratelimit import RateLimiter
from toolvault.server.telemetry import metrics
from toolvault.server.telemetry.tracing import recording, trace_id

log = logging.getLogger("toolvault.rpc")

# The stubs make these generic; at run time they are plain classes.
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor
# Health checks and reflection answer while the server starts and drains.
_ALWAYS_OPEN = ("/grpc.health.", "/grpc.reflection.")


def interceptors(
    settings: Settings, keys: Keys, tracer: trace.Tracer, gate: ReadinessGate
) -> list[Interceptor]:
    """Every interceptor of the server, outermost first; the order is deliberate.

    Refusals happen in this order, the first that applies answering:

    1. :class:`RequestLog`, outermost, so that every call has its log line, span and
       metric, refused ones included.
    2. :class:`ReadinessGate`: UNAVAILABLE until the database and sandbox are ready
       (health and reflection pass), before anything touches the database.
    3. ``rpc.auth.Authorizer`` (with ``--auth required``): no or an unknown key
       UNAUTHENTICATED; a role without the RPC PERMISSION_DENIED; over the key's rate
       limit RESOURCE_EXHAUSTED; then, as the handler starts, an object outside the key's
       namespaces NOT_FOUND (PERMISSION_DENIED for one it would create). Before the
       parse check, so that a caller without a key learns nothing of its request.
    4. :class:`MalformedRequests`, innermost: bytes that are no request message
       INVALID_ARGUMENT. Its lenient parser serves the outer ones too, so they see the
       call (and refuse it) whatever its bytes.
    5. In the servicer (``rpc.status.rpc_method``): a NUL character INVALID_ARGUMENT,
       then the service's domain errors by the status table.
    """
    chain: list[Interceptor] = [RequestLog(tracer), gate]
    if settings.auth == "required":
        limit = settings.rate_limit_per_s
        limiter = RateLimiter(limit, settings.rate_limit_burst) if limit > 0 else None
        chain.append(Authorizer(keys, limiter))
    chain.append(MalformedRequests())
    return chain


async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is starting; retry shortly")


class ReadinessGate(Interceptor):
    """Refuses every RPC but health and reflection with UNAVAILABLE until opened.

    The server listens before its database and sandbox are ready, so that health checks
    can say NOT_SERVING instead of finding nothing on the port.
    """

    def __init__(self) -> None:
        self.is_open = False
        self._refusal = grpc.unary_unary_rpc_method_handler(_refuse)

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """Pass the call on once open (health and reflection always)."""
        if self.is_open or handler_call_details.method.startswith(_ALWAYS_OPEN):
            return await continuation(handler_call_details)
        return self._refusal


class _Wrappers:
    """The wrapper of each method's handler, made once per handler it wraps.

    The servicers' handlers are the same objects call after call, so a wrapper that keeps
    no state of a call can be reused; a handler made per call (the authorizer's) gets a
    new wrapper each time.
    """

    def __init__(self, wrap: Callable[[str, Handler], Handler]) -> None:
        self._wrap = wrap
        self._made: dict[str, tuple[Handler, Handler]] = {}

    def __call__(self, method: str, handler: Handler) -> Handler:
        made = self._made.get(method)
        if made is not None and made[0] is handler:
            return made[1]
        wrapper = self._wrap(method, handler)
        self._made[method] = (handler, wrapper)
        return wrapper


class RequestLog(Interceptor):
    """Logs one line per unary RPC (request id, method, caller, status, duration) and traces it.

    The caller is the key's prefix (``anonymous`` without auth) and the peer address.

    The RPC's span is a child of the client's span when the call's metadata carries W3C
    trace context (``traceparent``); the handler runs inside it, so that the spans it
    makes are the RPC span's children. Without a collector and without trace context
    there is no span to make, and none is made.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._recording = recording(tracer)
        self._wrappers = _Wrappers(self._logged)

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """Wrap the method's handler to time it and log its outcome."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return self._wrappers(handler_call_details.method, handler)

    def _logged(self, method: str, handler: Handler) -> Handler:
        inner = handler.unary_unary
        assert inner is not None, "intercept_service wraps only unary handlers"
        service, _, name = method.lstrip("/").partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        async def logged(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = "OK"
            span = self._span(method, attributes, context)
            try:
                if span is None:
                    return await inner(request, context)  # type: ignore[arg-type]
                # The status code, not the exception an abort raises, says how the RPC went.
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    return await inner(request, context)  # type: ignore[arg-type]
            except BaseException:
                code = _code_name(context, "UNKNOWN")
                raise
            finally:
                if code == "OK":
                    code = _code_name(context, "OK")
                elapsed = time.perf_counter() - started
                if span is not None:
                    span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
                    if code != "OK":
                        span.set_status(trace.StatusCode.ERROR, code)
                    span.end()
                metrics.RPC_SECONDS.labels(method, code).observe(elapsed)
                if log.isEnabledFor(logging.INFO):
                    fields = {
                        "request_id": uuid.uuid4().hex[:16],
                        "method": method,
                        # The authorizer inside this interceptor set the caller in this context.
                        "caller": f"{principal().key} {context.peer()}",
                        "target": _target(request),
                        "code": code,
                        "duration_ms": round(elapsed * 1000, 3),
                    }
                    if span is not None and (traced := trace_id(span)):
                        fields["trace_id"] = traced
                    log.info("rpc", extra=fields)

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _span(
        self,
        method: str,
        attributes: dict[str, str],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> trace.Span | None:
        """The RPC's span, or None when it would be the invalid span of a no-op tracer."""
        metadata = context.invocation_metadata() or ()
        if not self._recording and not any(key == "traceparent" for key, _ in metadata):
            return None
        # Binary (-bin) metadata has bytes values; trace context is text.
        carrier = {key: value for key, value in metadata if isinstance(value, str)}
        return self._tracer.start_span(
            method.lstrip("/"),
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
        )


class MalformedRequests(Interceptor):
    """Answers bytes that are no request message INVALID_ARGUMENT (gRPC would say UNKNOWN).

    The innermost interceptor: the outer ones keep its lenient parser, so that the
    authorizer refuses a call without a valid key first, and the log records the call.
    """

    def __init__(self) -> None:
        self._wrappers = _Wrappers(_checked)

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """Wrap the method's handler to refuse a request that did not parse."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return self._wrappers(handler_call_details.method, handler)


def _checked(method: str, handler: Handler) -> Handler:
    name = method.rpartition("/")[2]
    inner = handler.unary_unary
    assert inner is not None, "intercept_service wraps only unary handlers"

    async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, _Malformed):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {name} request message: {request.error}",
            )
        return await inner(request, context)  # type: ignore[arg-type]

    return grpc.unary_unary_rpc_method_handler(
        checked,
        request_deserializer=_lenient(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


@dataclass(frozen=True)
class _Malformed:
    """Bytes that are not a request message; gRPC would answer their parse error UNKNOWN."""

    error: str


def _lenient(parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if parse is None:
        return None

    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as e:
            return _Malformed(str(e))

    return lenient


def _code_name(context: grpc.aio.ServicerContext[Any, Any], default: str) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else default


def _target(request: Any) -> str:
    """The function, agent or execution a request is about, for the log line."""
    for field in ("ref", "name", "agent", "function_name", "id"):
        value = getattr(request, field, "")
        if isinstance(value, str) and value:
            return value
    return ""
