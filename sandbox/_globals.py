"""The globals user code runs with: safe builtins, RestrictedPython's guards, a guarded import.

RestrictedPython compiles attribute access, item access, iteration, unpacking, augmented
assignment, ``print`` and class statements into calls of the underscore names defined
here. The guards keep code from reaching private attributes, from replacing attributes of
objects it did not create, and from importing modules outside the allow-list, including
modules that allowed modules import (``json.codecs``, ``dataclasses.inspect``) and the few
functions of allowed modules known to reach around the guards.
"""

import builtins
import operator
import typing
from collections.abc import Callable, Collection, Sequence
from types import ModuleType
from typing import Any

from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    raise_,
    safe_builtins,
    safer_getattr,
)

from ._validate import import_problem

# Builtins RestrictedPython leaves out. It drops sorted, zip, tuple and the like because
# they iterate without calling _getiter_; here _getiter_ is plain iter and guards nothing,
# so they lose nothing.
_MORE_BUILTINS: tuple[Any, ...] = (
    all,
    any,
    ascii,
    bin,
    bytearray,
    bytes,
    classmethod,
    dict,
    enumerate,
    filter,
    format,
    frozenset,
    iter,
    list,
    map,
    max,
    min,
    next,
    object,
    property,
    reversed,
    set,
    sorted,
    staticmethod,
    sum,
    super,
    tuple,
    zip,
    RecursionError,
    StopAsyncIteration,
    TimeoutError,
)

# Functions of allowed modules that get around the guards: attrgetter and methodcaller
# read any attribute, "__globals__" included, and get_type_hints evaluates strings with
# the real builtins. Each alone hands out os.
_UNSAFE_FUNCTIONS: dict[str, object] = {
    "operator.attrgetter": operator.attrgetter,
    "operator.methodcaller": operator.methodcaller,
    "typing.get_type_hints": typing.get_type_hints,
}

_INPLACE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "|=": operator.ior,
    "^=": operator.ixor,
    "@=": operator.imatmul,
}


def restricted_globals(allowed_imports: Collection[str]) -> dict[str, Any]:
    """Fresh globals for running restricted code that may import ``allowed_imports``."""

    def check(value: object) -> None:
        """Refuse modules outside the allow-list and functions that get around the guards."""
        if isinstance(value, ModuleType):
            problem = import_problem(value.__name__, 0, allowed_imports)
            if problem:
                raise ImportError(problem)
        for name, unsafe in _UNSAFE_FUNCTIONS.items():
            # By identity: comparing would run the user's __eq__ or fail on unhashables.
            if value is unsafe:
                raise ImportError(f"{name} is not allowed in the sandbox")

    def guarded_getattr(obj: object, name: str, default: object = raise_) -> Any:
        value = safer_getattr(obj, name, default)  # type: ignore[no-untyped-call]
        check(value)
        return value

    def guarded_import(
        name: str,
        globals: object = None,
        locals: object = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        problem = import_problem(name, level, allowed_imports)
        if problem:
            raise ImportError(problem)
        module = builtins.__import__(name, None, None, fromlist, 0)
        for attribute in fromlist or ():
            check(getattr(module, attribute, None))
        return module

    return {
        "__builtins__": {
            **safe_builtins,
            **{function.__name__: function for function in _MORE_BUILTINS},
            "NotImplemented": NotImplemented,
            "getattr": guarded_getattr,
            "__import__": guarded_import,
        },
        "__metaclass__": _user_class,
        "__name__": "function",
        "_getattr_": guarded_getattr,
        "_getitem_": operator.getitem,
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": full_write_guard,
        "_inplacevar_": _inplacevar,
        "_apply_": _apply,
        "_print_": _Print,
    }


def _user_class(name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kw: Any) -> type:
    """Create a class defined in user code, whose instances the code may then write to.

    full_write_guard lets writes through to objects marked ``_guarded_writes``; without
    the mark even ``self.x = x`` in the user's own ``__init__`` would fail.
    """
    cls = type(name, bases, namespace, **kw)
    cls._guarded_writes = True  # type: ignore[attr-defined]
    return cls


def _inplacevar(op: str, target: Any, value: Any) -> Any:
    return _INPLACE_OPERATORS[op](target, value)


def _apply(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


class _Print:
    """Stands in for RestrictedPython's PrintCollector: ``print`` writes to the real stdout.

    Output then flows through the pipe whose size the runner caps, instead of piling up
    in memory.
    """

    def __init__(self, _getattr_: object = None) -> None:
        pass

    def _call_print(self, *objects: object, **kwargs: Any) -> None:
        if kwargs.get("file") is not None:
            raise TypeError("print() can only write to stdout")
        print(*objects, **kwargs)
