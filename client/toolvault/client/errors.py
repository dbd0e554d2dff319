"""The SDK's exceptions, one per gRPC status code a caller can act on.

Every RPC error is turned into one of these by `from_rpc_error`, the only place that knows
about `grpc.RpcError`, so callers never need to inspect gRPC status codes themselves. A
function that fails when invoked is not an error here: `Client.invoke` returns its
`Execution` with a status such as ERROR or TIMEOUT.

```
ToolvaultError                  any failed RPC (.code, .details)
 ├── InvalidArgument            INVALID_ARGUMENT: bad name, source, schema or arguments
 ├── NotFound                   NOT_FOUND: unknown function, version, alias or execution
 ├── AlreadyExists              ALREADY_EXISTS
 ├── FailedPrecondition         FAILED_PRECONDITION
 ├── PermissionDenied           PERMISSION_DENIED
 ├── Unauthenticated            UNAUTHENTICATED
 ├── ResourceExhausted          RESOURCE_EXHAUSTED: too many calls waiting
 ├── DeadlineExceeded           DEADLINE_EXCEEDED: the call's timeout passed
 ├── Cancelled                  CANCELLED
 ├── Unavailable                UNAVAILABLE: the server cannot be reached
 └── Internal                   INTERNAL, UNKNOWN, DATA_LOSS: the server failed
```
"""

from __future__ import annotations

import grpc

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ToolvaultError",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]


class ToolvaultError(Exception):
    """A request failed; `str(error)` is the server's message.

    Attributes:
        code: The gRPC status code of the failed call.
        details: The server's message, e.g. which field or line was rejected.
    """

    def __init__(self, details: str, code: grpc.StatusCode) -> None:
        super().__init__(details)
        self.code = code
        self.details = details

    def naming_arguments(self, name: str = "arguments") -> str:
        """Return the message with the arguments called `name`, not by their wire field.

        The server names the arguments it refuses by their request field, `args_json` in
        Invoke and `arguments_json` in CallTool; a person or a model gave them as the CLI's
        `--args` or MCP's and the SDK's `arguments`, which is what they should read.
        """
        for field in _ARGUMENT_FIELDS:
            if self.details.startswith(f"{field} "):
                return name + self.details.removeprefix(field)
        return self.details


# The request fields that carry a call's arguments, as the server's messages name them.
_ARGUMENT_FIELDS = ("args_json", "arguments_json")


class InvalidArgument(ToolvaultError):
    """The server rejected the request's content (a name, the source, a schema, the args)."""


class NotFound(ToolvaultError):
    """The function, version, alias or execution does not exist."""


class AlreadyExists(ToolvaultError):
    """The thing to create exists already."""


class FailedPrecondition(ToolvaultError):
    """The request is valid but the server's state does not allow it now."""


class PermissionDenied(ToolvaultError):
    """The caller may not do this."""


class Unauthenticated(ToolvaultError):
    """The caller did not prove who it is."""


class ResourceExhausted(ToolvaultError):
    """The server is at a limit, e.g. too many calls are waiting to run.

    Attributes:
        retry_after: Seconds to wait before retrying, when the server said (a key's rate
            limit); None otherwise.
    """

    retry_after: float | None = None


class DeadlineExceeded(ToolvaultError):
    """The call's timeout passed before the server answered."""


class Cancelled(ToolvaultError):
    """The call was cancelled."""


class Unavailable(ToolvaultError):
    """The server cannot be reached (not running, wrong address, or shutting down)."""


class Internal(ToolvaultError):
    """The server failed while handling a valid request."""


_BY_CODE: dict[grpc.StatusCode, type[ToolvaultError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.INTERNAL: Internal,
    # An exception escaping a server handler arrives as UNKNOWN: the server failed too.
    grpc.StatusCode.UNKNOWN: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
}


def from_rpc_error(error: grpc.RpcError) -> ToolvaultError:
    """Return the SDK exception for a failed gRPC call.

    Args:
        error: The exception gRPC raised; it carries the call's status code and details.

    Returns:
        An instance of the subclass for the status code, or `ToolvaultError` itself for
        codes the SDK has no subclass for.
    """
    code = error.code()
    # Some transport failures carry no details; the code's name is better than "".
    details = error.details() or code.name
    result = _BY_CODE.get(code, ToolvaultError)(details, code)
    if isinstance(result, ResourceExhausted) and isinstance(error, grpc.Call):
        for key, value in error.trailing_metadata() or ():
            if key == "retry-after" and isinstance(value, str):
                result.retry_after = float(value)
    return result
