"""Domain errors. The gRPC layer maps each class to one status code in one table.

DomainError
├── InvalidArgument      bad input: names the field, or the line and column
├── NotFound             no such object, or one outside the caller's namespaces
├── AlreadyExists        an agent of that name exists already
├── PermissionDenied     the caller may not do this (a plugin's refusal, a tool not its own)
├── FailedPrecondition   the request is valid but the state does not allow it
└── ResourceExhausted    too many calls waiting for a sandbox, or running one function
"""


class DomainError(Exception):
    """Base of every error the server reports to callers with its own message."""


class InvalidArgument(DomainError):
    """The request is malformed or fails validation."""


class NotFound(DomainError):
    """A named object does not exist."""


class AlreadyExists(DomainError):
    """An object with that name exists already."""


class PermissionDenied(DomainError):
    """The caller may not do what it asked."""


class FailedPrecondition(DomainError):
    """The request cannot be carried out in the current state."""


class ResourceExhausted(DomainError):
    """A capacity limit was reached; retrying later may succeed."""


def not_found(kind: str, name: str, *, quoted: bool = True) -> NotFound:
    """The answer for a ``kind`` (function, agent, key, execution) ``name`` that is not there.

    Also the answer for one outside the caller's namespaces: every lookup builds its
    error here, so that the two cannot come to differ and reveal what other namespaces
    hold. Names are quoted; ids (``quoted=False``) are not.
    """
    return NotFound(f"{kind} {name!r} not found" if quoted else f"{kind} {name} not found")
