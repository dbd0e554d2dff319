"""Who may do what: API keys, roles, the rule of each RPC, and the interceptor that applies them.

A key reads ``tvk_<12 hex digits>_<43 characters>``: the first part is its public prefix,
the rest its secret. Only an HMAC-SHA256 of the secret under a per-key salt is stored.
Keys are 256-bit random, so a slow password hash would add latency to every call and no
strength.

Every RPC has one rule (:data:`RULES`): the roles that may call it, and the request field
naming the object it is about. An object outside the key's namespaces does not exist for
the key: NOT_FOUND, the same answer as for a name that exists nowhere. Lists are filtered
by the servicers with the caller's :class:`Principal`, which the interceptor puts in a
context variable for the handler.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import enum
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import Message
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from toolvault.server import audit, names
from toolvault.server.agents import AGENT_NAME, AGENT_NAME_RULE
from toolvault.server.audit import Actor
from toolvault.server.db import Database
from toolvault.server.errors import InvalidArgument, NotFound
from toolvault.server.models import ApiKey, utcnow
from toolvault.server.names import EVERYWHERE, Scope
from toolvault.server.paging import decode_token, encode_token, page_size
from toolvault.v1 import (
    access_pb2,
    agent_pb2,
    function_pb2,
    history_pb2,
    invocation_pb2,
)

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor

KEY = re.compile(r"(tvk_[0-9a-f]{12})_([A-Za-z0-9_-]{43})")
MAX_DESCRIPTION_CHARS = 256
ALL_NAMESPACES = "*"
BOOTSTRAP = "bootstrap"


class Role(enum.StrEnum):
    """What a key may do; see :data:`RULES` for each RPC."""

    ADMIN = "admin"
    PUBLISHER = "publisher"
    INVOKER = "invoker"
    AGENT = "agent"


@dataclass(frozen=True)
class Principal:
    """The caller of an RPC, as its key says."""

    key: str
    role: Role
    scope: Scope = EVERYWHERE
    agent: str = ""

    def sees(self, name: str) -> bool:
        """Whether the function or agent ``name`` (or a ref) exists for this caller."""
        if self.role is Role.AGENT:
            return name == self.agent
        return self.scope.allows(name)

    def actor(self, peer: str) -> Actor:
        """This caller as the audit log names it."""
        return Actor(self.key, peer)


# With auth off, every caller may do everything; the audit log says "anonymous".
ANONYMOUS = Principal("anonymous", Role.ADMIN)
_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "principal", default=ANONYMOUS
)


def principal() -> Principal:
    """The caller of the RPC being handled."""
    return _principal.get()


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed: never its secret."""

    prefix: str
    role: Role
    namespaces: tuple[str, ...] | None
    agent: str
    description: str
    created_at: dt.datetime
    created_by: str
    revoked_at: dt.datetime | None


class Keys:
    """Creates, lists, revokes and checks API keys."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self,
        role: Role,
        *,
        namespaces: Iterable[str] = (),
        agent: str = "",
        description: str = "",
        actor: Actor,
    ) -> tuple[str, KeyInfo]:
        """Store a new key; returns the whole key (shown once) and its listing."""
        scope = _checked_scope(role, tuple(namespaces), agent)
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION_CHARS} characters")
        with self._db.write.begin() as session:
            secret, row = _new_key(role, scope, agent, description, actor.key)
            session.add(row)
            session.flush()
            audit.record(
                session,
                actor,
                "key.create",
                row.prefix,
                role=role.value,
                namespaces=scope,
                agent=agent,
            )
            return secret, _info(row)

    def keys(self, *, size: int, token: str) -> tuple[list[KeyInfo], str]:
        """A page of keys, newest first, and the next page's token ("" at the end)."""
        key = decode_token(token, int)
        limit = page_size(size)
        query = select(ApiKey).order_by(ApiKey.id.desc())
        if key is not None:
            query = query.where(ApiKey.id < key[0])
        with self._db.read.begin() as session:
            rows = list(session.scalars(query.limit(limit + 1)))
            infos = [_info(row) for row in rows[:limit]]
        return infos, encode_token([rows[limit - 1].id]) if len(rows) > limit else ""

    def revoke(self, prefix: str, *, actor: Actor) -> KeyInfo:
        """Revoke the key with ``prefix`` (at once: every call checks the database)."""
        with self._db.write.begin() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix).with_for_update())
            if row is None:
                raise NotFound(f"key {prefix!r} not found")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                audit.record(session, actor, "key.revoke", prefix, role=row.role)
            return _info(row)

    def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None for anything else."""
        match = KEY.fullmatch(key)
        if match is None:
            return None
        prefix, secret = match.groups()
        with self._db.read.begin() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(_digest(row.salt, secret), row.digest):
                return None
            return Principal(
                key=row.prefix,
                role=Role(row.role),
                scope=Scope.of(None if row.namespaces is None else json.loads(row.namespaces)),
                agent=row.agent,
            )

    def bootstrap(self, given: str | None) -> str | None:
        """Make the first admin key if there is no key at all.

        Uses ``given`` (``TOOLVAULT_ADMIN_KEY``) if set; otherwise a new key, which it
        returns so that it can be shown once. Returns None when nothing new must be
        shown. Replicas starting together make one key: the table is locked first.
        """
        actor = Actor(BOOTSTRAP)
        try:
            with self._db.write.begin() as session:
                if session.bind is not None and session.bind.dialect.name == "postgresql":
                    session.execute(text("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE"))
                if session.scalar(select(ApiKey.id).limit(1)) is not None:
                    return None
                secret, row = _new_key(
                    Role.ADMIN, None, "", "bootstrap admin key", BOOTSTRAP, key=given
                )
                session.add(row)
                session.flush()
                audit.record(session, actor, "key.create", row.prefix, role="admin")
        except IntegrityError:
            return None  # another replica made it first
        return None if given is not None else secret


def generate_key() -> str:
    """A new key in the format the server accepts (for ``TOOLVAULT_ADMIN_KEY``)."""
    return f"tvk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def _new_key(
    role: Role,
    namespaces: tuple[str, ...] | None,
    agent: str,
    description: str,
    creator: str,
    *,
    key: str | None = None,
) -> tuple[str, ApiKey]:
    key = key or generate_key()
    match = KEY.fullmatch(key)
    assert match is not None, "keys are checked before they get here"
    prefix, secret = match.groups()
    salt = secrets.token_hex(16)
    row = ApiKey(
        prefix=prefix,
        salt=salt,
        digest=_digest(salt, secret),
        role=role.value,
        namespaces=None if namespaces is None else json.dumps(sorted(namespaces)),
        agent=agent,
        description=description,
        created_at=utcnow(),
        created_by=creator,
    )
    return key, row


def _digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def _checked_scope(role: Role, namespaces: tuple[str, ...], agent: str) -> tuple[str, ...] | None:
    """The namespaces to store for a new key (None: all), or InvalidArgument."""
    if role in (Role.ADMIN, Role.AGENT) and namespaces:
        raise InvalidArgument(f"a {role} key takes no namespaces")
    if role is Role.AGENT:
        if not agent:
            raise InvalidArgument("an agent key needs the agent it calls tools for")
        names.check_qualified(agent, AGENT_NAME, AGENT_NAME_RULE, "agent")
        return (names.namespace_of(agent),)
    if agent:
        raise InvalidArgument(f"a {role} key takes no agent; only agent keys do")
    if role is Role.ADMIN or ALL_NAMESPACES in namespaces:
        return None
    if not namespaces:
        raise InvalidArgument(f"a {role} key needs at least one namespace ({ALL_NAMESPACES}: all)")
    for namespace in namespaces:
        names.check_namespace(namespace)
    return tuple(sorted(set(namespaces)))


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        prefix=row.prefix,
        role=Role(row.role),
        namespaces=None if row.namespaces is None else tuple(json.loads(row.namespaces)),
        agent=row.agent,
        description=row.description,
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
    )


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
}
# Health answers everyone (probes carry no key); reflection only describes the API.
_OPEN = "/grpc.health."
_REFLECTION = Rule(_EVERYONE)


class RateLimiter:
    """A token bucket per key: ``rate`` calls a second on average, bursts up to ``burst``.

    Per server process: behind N replicas a key gets up to N times the rate.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def wait_time(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if there was one, else seconds until there is."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate


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
        # (interceptors.MalformedRequests) before any servicer sees them.
        if rule.target and isinstance(request, Message):
            name = _field(request, rule.target).partition("@")[0]
            if name and not caller.sees(name):
                if rule.creates:
                    await context.abort(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"namespace {names.namespace_of(name)!r} is outside this key's namespaces",
                    )
                await context.abort(grpc.StatusCode.NOT_FOUND, f"{rule.kind} {name!r} not found")
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
