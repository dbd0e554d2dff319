"""Names of functions, refs and agents, and the namespaces they live in.

A name is ``NAME`` or ``NAMESPACE/NAME``; a ref is a function's name with an optional
``@VERSION`` or ``@ALIAS``. A bare name lives in the ``default``
namespace, which is never written out, so that every object has one spelling.
API keys are scoped to namespaces (:class:`Scope`): objects outside a key's scope do
not exist for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from toolvault.server.domain.errors import InvalidArgument

DEFAULT_NAMESPACE = "default"
NAMESPACE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
NAMESPACE_RULE = "1 to 32 of a-z, 0-9, _ and -, starting with a letter"
# A namespace, its slash and a 64-character local name.
MAX_NAME_CHARS = 32 + 1 + 64
FUNCTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
FUNCTION_NAME_RULE = "1 to 64 of a-z, 0-9 and _, starting with a letter"
AGENT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
AGENT_NAME_RULE = "1 to 64 of a-z, 0-9, _ and -, starting with a letter"
ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")
LATEST = "latest"


def namespace_of(name: str) -> str:
    """The namespace a (possibly invalid) name or ref points into."""
    namespace, sep, _ = name.partition("@")[0].rpartition("/")
    return namespace if sep else DEFAULT_NAMESPACE


def check_namespace(namespace: str, field: str = "namespace") -> str:
    """``namespace`` if valid, else InvalidArgument naming ``field``."""
    if not NAMESPACE.fullmatch(namespace):
        raise InvalidArgument(f"{field} {namespace!r} is invalid: use {NAMESPACE_RULE}")
    return namespace


def check_qualified(name: str, local: re.Pattern[str], rule: str, field: str) -> str:
    """``name`` if it is ``LOCAL`` or ``NAMESPACE/LOCAL``, else InvalidArgument."""
    namespace, sep, local_name = name.rpartition("/")
    if sep and namespace == DEFAULT_NAMESPACE:
        raise InvalidArgument(
            f"{field} {name!r} is invalid: the {DEFAULT_NAMESPACE} namespace is written "
            f"without a prefix ({local_name!r})"
        )
    if (sep and not NAMESPACE.fullmatch(namespace)) or not local.fullmatch(local_name):
        raise InvalidArgument(
            f"{field} {name!r} is invalid: use NAME or NAMESPACE/NAME, where NAME is {rule} "
            f"and NAMESPACE is {NAMESPACE_RULE}"
        )
    return name


def check_name(name: str, field: str = "name") -> str:
    """``name`` if it is a valid function name, else InvalidArgument naming ``field``."""
    return check_qualified(name, FUNCTION_NAME, FUNCTION_NAME_RULE, field)


def check_agent_name(name: str, field: str = "name") -> str:
    """``name`` if it is a valid agent name, else InvalidArgument naming ``field``."""
    return check_qualified(name, AGENT_NAME, AGENT_NAME_RULE, field)


def parse_ref(ref: str) -> tuple[str, int | str]:
    """Split ``name``, ``name@3`` or ``name@alias`` into the name and a version or alias."""
    name, sep, selector = ref.partition("@")
    check_name(name, "ref")
    if not sep:
        return name, LATEST
    if selector.isdigit() and int(selector) > 0:
        return name, int(selector)
    if ALIAS.fullmatch(selector):
        return name, selector
    raise InvalidArgument(
        f"ref {ref!r} is invalid: expected NAME, NAME@VERSION (a positive number) or NAME@ALIAS"
    )


@dataclass(frozen=True)
class Scope:
    """The namespaces a caller may see; ``None`` means all of them."""

    namespaces: frozenset[str] | None = None

    @classmethod
    def of(cls, namespaces: Iterable[str] | None) -> Scope:
        """A scope over ``namespaces`` (None: every namespace)."""
        return cls(None if namespaces is None else frozenset(namespaces))

    def allows(self, name: str) -> bool:
        """Whether the object called ``name`` (a name or a ref) is visible."""
        return self.namespaces is None or namespace_of(name) in self.namespaces


EVERYWHERE = Scope()
