"""Who may call what: the rule of each RPC, and the interceptor that applies the rules.

Every RPC has one rule (:data:`RULES`): the roles that may call it, and the request field
naming the object it is about. An object outside the key's namespaces does not exist for
the key: NOT_FOUND, the same answer as for a name that exists nowhere (both are made by
``domain.errors.not_found``). Lists are filtered by the servicers with the caller's
:class:`Principal`, which the interceptor puts in a context variable for the handler.
``rpc.interceptors`` says where this interceptor runs among the others, and why.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import Message

from toolvault.server.domain.access import ANONYMOUS, Principal, Role
from toolvault.server.domain.audit import Actor
from toolvault.server.domain.errors import PermissionDenied, not_found
from toolvault.server.domain.names import namespace_of
from toolvault.server.rpc.status import abort
from toolvault.server.services.keys import Keys
from toolvault.server.services.ratelimit import RateLimiter
from toolvault.v1 import (
    access_pb2,
    agent_pb2,
    function_pb2,
    history_pb2,
    invocation_pb2,
    secret_pb2,
)

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "principal", default=ANONYMOUS
)


def principal() -> Principal:
    """The caller of the RPC being handled."""
    return _principal.get()


def actor(context: grpc.aio.ServicerContext[Any, Any]) -> Actor:
    """The caller of the RPC being handled, as the audit log names it."""
    return principal().actor(context.peer())


def recorded_caller(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller of the RPC being handled, as an execution records it."""
    who = principal()
    return context.peer() if who is ANONYMOUS else f"{who.key} {context.peer()}"


@dataclass(frozen=True)
class Rule:
    """Who may call an RPC, and which request field names the object it is about."""

    roles: frozenset[Role]
    target: str = ""
    kind: str = "function"
    creates: bool = False


_EVERYONE = frozenset(Role)
_READERS = frozenset({Role.ADMIN, Role.PUBLISHER, Role.INVOKER})
_WRITERS = frozenset({Role.ADMIN, Role.PUBLISHER})
_ADMINS = frozenset({Role.ADMIN})
_TOOL_USERS = _READERS | {Role.AGENT}


def _methods(module: Any, service: str, rules: dict[str, Rule]) -> dict[str, Rule]:
    full = module.DESCRIPTOR.services_by_name[service]
    missing = set(full.methods_by_name) ^ set(rules)
    assert not missing, f"{service}: no rule (or a stale one) for {sorted(missing)}"
    return {f"/{full.full_name}/{method}": rule for method, rule in rules.items()}


# One rule per RPC; a method without one fails at import, so a new RPC needs a decision.
RULES: dict[str, Rule] = {
    **_methods(
        function_pb2,
        "FunctionService",
        {
            "PublishFunction": Rule(_WRITERS, "name", creates=True),
            "GetFunction": Rule(_READERS, "ref"),
            "ListFunctions": Rule(_READERS),
            "ListFunctionVersions": Rule(_READERS, "name"),
            "SetAlias": Rule(_WRITERS, "name"),
            "DeleteAlias": Rule(_WRITERS, "name"),
            "DeleteFunction": Rule(_WRITERS, "name"),
            "GetFunctionStats": Rule(_READERS, "name"),
        },
    ),
    **_methods(invocation_pb2, "InvocationService", {"Invoke": Rule(_READERS, "ref")}),
    **_methods(
        history_pb2,
        "HistoryService",
        {"ListExecutions": Rule(_READERS), "GetExecution": Rule(_READERS)},
    ),
    **_methods(
        agent_pb2,
        "AgentService",
        {
            "CreateAgent": Rule(_WRITERS, "spec.name", "agent", creates=True),
            "UpdateAgent": Rule(_WRITERS, "spec.name", "agent", creates=True),
            "GetAgent": Rule(_TOOL_USERS, "name", "agent"),
            "ListAgents": Rule(_READERS),
            "ListAgentRevisions": Rule(_READERS, "name", "agent"),
            "DeleteAgent": Rule(_WRITERS, "name", "agent"),
            "ListAgentTools": Rule(_TOOL_USERS, "agent", "agent"),
            "CallTool": Rule(_TOOL_USERS, "agent", "agent"),
            "RouteTask": Rule(_READERS),
        },
    ),
    **_methods(
        access_pb2,
        "KeyService",
        {"CreateKey": Rule(_ADMINS), "ListKeys": Rule(_ADMINS), "RevokeKey": Rule(_ADMINS)},
    ),
    **_methods(access_pb2, "AuditService", {"ListAuditEvents": Rule(_WRITERS)}),
    # Nobody reads a value: no RPC returns one. Who may read functions may see the names.
    **_methods(
        secret_pb2,
        "SecretService",
        {
            "SetSecret": Rule(_WRITERS, "name", "secret", creates=True),
            "ListSecrets": Rule(_READERS),
            "DeleteSecret": Rule(_WRITERS, "name", "secret"),
        },
    ),
}
# Health answers everyone (probes carry no key); reflection only describes the API.
_OPEN = "/grpc.health."
_REFLECTION = Rule(_EVERYONE)


class Authorizer(Interceptor):
    """Authenticates each RPC's key, applies its rule and the key's rate limit."""

    def __init__(self, keys: Keys, limiter: RateLimiter | None) -> None:
        self._keys = keys
        self._limiter = limiter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """Return the method's handler if the key may call it, else a refusal."""
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(_OPEN):
            return handler
        rule = RULES.get(method, _REFLECTION if "/grpc.reflection." in method else None)
        if rule is None:
            return handler  # unknown method: gRPC answers UNIMPLEMENTED
        metadata = dict(
            (k, v) for k, v in handler_call_details.invocation_metadata or () if isinstance(v, str)
        )
        scheme, _, key = metadata.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _refusal(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "this server requires an API key: send `authorization: Bearer <key>` metadata "
                "(the CLI's --api-key or TOOLVAULT_API_KEY)",
            )
        caller = await asyncio.to_thread(self._keys.authenticate, key.strip())
        if caller is None:
            return _refusal(
                handler, grpc.StatusCode.UNAUTHENTICATED, "the API key is unknown or revoked"
            )
        if caller.role not in rule.roles:
            return _refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"a key with role {caller.role} may not call {method.rpartition('/')[2]}",
            )
        if self._limiter is not None and (wait := self._limiter.wait_time(caller.key)) > 0:
            return _refusal(
                handler,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit of key {caller.key} reached: retry in {wait:.2f} s",
                # retry-after for people and other clients; the pushback makes gRPC's own
                # retries wait that long.
                (("retry-after", f"{wait:.3f}"), ("grpc-retry-pushback-ms", str(int(wait * 1000)))),
            )
        return _as_caller(handler, caller, rule)


def _field(request: Any, path: str) -> str:
    value = request
    for part in path.split("."):
        value = getattr(value, part)
    return str(value)


def _as_caller(handler: Handler, caller: Principal, rule: Rule) -> Handler:
    """The handler, run as ``caller`` and only for objects the caller can see."""
    if handler.unary_unary is None:
        # Reflection (a stream) has no target; the principal only matters to unary RPCs.
        return handler
    inner = handler.unary_unary

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        # Bytes that did not parse name nothing: the innermost interceptor refuses them
        # (MalformedRequests) before any servicer sees them.
        if rule.target and isinstance(request, Message):
            name = _field(request, rule.target).partition("@")[0]
            if name and not caller.sees(name):
                if rule.creates:
                    await abort(
                        context,
                        PermissionDenied(
                            f"namespace {namespace_of(name)!r} is outside this key's namespaces"
                        ),
                    )
                await abort(context, not_found(rule.kind, name))
        _principal.set(caller)
        return await inner(request, context)  # type: ignore[arg-type]

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _refusal(
    handler: Handler,
    code: grpc.StatusCode,
    message: str,
    trailers: tuple[tuple[str, str], ...] = (),
) -> Handler:
    """A handler of the same kind as ``handler`` that fails with ``code``."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message, trailing_metadata=trailers)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
