"""Domain errors as gRPC statuses: the one table, and the wrapper every servicer method has.

Each domain error class maps to one status code (:data:`STATUS_CODES`), with its message
as the status's details; any other exception becomes INTERNAL with a generic message,
and its traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message
from sqlalchemy.exc import SQLAlchemyError

from toolvault.server.domain.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from toolvault.server.telemetry import metrics

# The logger's name from before the gRPC layer had a package: log filters know it.
log = logging.getLogger("toolvault.server.api")

STATUS_CODES: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> NoReturn:
    """End the RPC with ``error``'s status code and its message."""
    await context.abort(STATUS_CODES[type(error)], str(error))
    raise AssertionError("abort returned")


S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]


def rpc_method(method: Handler[S, Req, Resp]) -> Handler[S, Req, Resp]:
    """Map domain errors to status codes and hide unexpected ones behind INTERNAL."""

    @functools.wraps(method)
    async def handle(self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            if field := _field_with_nul(request):  # type: ignore[arg-type]
                # No name, text or JSON has a use for one; PostgreSQL cannot store it.
                raise InvalidArgument(f"{field} contains a NUL character")
            return await method(self, request, context)
        except DomainError as e:
            await abort(context, e)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as e:
            if isinstance(e, SQLAlchemyError):
                metrics.DB_ERRORS.inc()
            log.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error: see the server log")
        raise AssertionError("abort returned")

    return handle


def _field_with_nul(message: Message, prefix: str = "") -> str:
    """The path of the first string field holding a NUL character, or ""."""
    for field, value in message.ListFields():
        path = prefix + field.name
        items = value if field.is_repeated else (value,)
        for index, item in enumerate(items):
            where = f"{path}[{index}]" if field.is_repeated else path
            if isinstance(item, str) and "\x00" in item:
                return where
            if isinstance(item, Message) and (found := _field_with_nul(item, where + ".")):
                return found
    return ""
