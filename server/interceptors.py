"""Cross-cutting RPC behaviour: the readiness gate and the one-line-per-RPC request log."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from toolvault.server import metrics

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
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """Pass the call on once open (health and reflection always)."""
        if self.is_open or handler_call_details.method.startswith(_ALWAYS_OPEN):
            return await continuation(handler_call_details)
        return self._refusal


class RequestLog(Interceptor):
    """Logs one line per unary RPC: request id, method, caller, status, duration."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """Wrap the method's handler to time it and log its outcome."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        async def logged(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            request_id = uuid.uuid4().hex[:16]
            started = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)  # type: ignore[arg-type]
            except BaseException:
                code = _code_name(context, "UNKNOWN")
                raise
            finally:
                if code == "OK":
                    code = _code_name(context, "OK")
                elapsed = time.perf_counter() - started
                metrics.RPC_SECONDS.labels(method, code).observe(elapsed)
                log.info(
                    "rpc",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "caller": context.peer(),
                        "target": _target(request),
                        "code": code,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


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
