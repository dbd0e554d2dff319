"""The globals user code runs with: safe builtins, RestrictedPython's guards, a guarded import.

RestrictedPython compiles attribute access, item access, iteration, unpacking, ``print``
and class statements into calls of the underscore names defined here (RestrictingTransformer
keeps augmented assignment of names as it is, and skips the write guard's call for a
list, and in loops for a list or dict: ``_itemwrites``). Attribute access (compiled or
through ``getattr``) refuses names starting with "_" and the frame, code, traceback and
generator internals, and RestrictedPython's own
guard refuses ``str.format``; whatever attribute or item access returns then passes the
Policy of ``_modules`` (no modules but proxies, no internals, nothing from modules outside
the allow-list, no class that makes classes), which hands out the functions and methods of
modules as wrappers that check what they return. ``setattr`` and ``delattr`` follow the
rules of ``obj.name = value``. Imports return module proxies; ``toolvault`` is no real
module but the call's own secrets module (``secrets_module``), for a version that
declares secrets only. Iteration is not checked:
``list()``, ``sorted()`` and the like iterate in C anyway; what module code returns was
checked with all it contains.

``open`` (``_open_file``) opens only a file of the call's working directory by its plain
name, for reading, or in ``out/``, for reading or writing: no other path, no symlink.
The kernel layer is what holds the sandbox to its working directory; this is the
language layer's own check, with errors that say what is allowed.

Class statements go through ``_user_class``, which refuses what the compiler would refuse
in a class body had it been written there: keys starting with "_" beyond the special
methods RestrictedPython allows and what the interpreter adds, and metaclasses as bases.
Dunder methods the interpreter calls with unchecked arguments, and attributes that change
what the guards or dataclasses believe, stay out of user classes.
"""

import builtins
import io
import os
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType, ModuleType
from typing import Any

from RestrictedPython.Guards import (
    full_write_guard,
    guarded_delattr,
    guarded_iter_unpack_sequence,
    guarded_setattr,
    guarded_unpack_sequence,
    raise_,
    safe_builtins,
    safer_getattr,
)

from ._models import OUTPUT_DIR, file_name_problem
from ._modules import PLAIN_DATA, USER_MODULE, ModuleProxy, Policy, check_namespace
from ._validate import SECRETS_ATTRIBUTE, SECRETS_MODULE, import_problem, secrets_import_problem

# Where a call's globals hold its secrets module, if its version declares secrets: a name
# restricted code cannot spell (it starts with "_"), read by the import hook.
SECRETS_GLOBAL = "__toolvault_secrets__"

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
    # What open() raises.
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
    PermissionError,
)
# What open() returns, and what those objects hold: their methods work on the file
# opened, whatever modules the code may import.
_FILE_CLASSES = (
    io.TextIOWrapper,
    io.BufferedReader,
    io.BufferedWriter,
    io.BufferedRandom,
    io.FileIO,
)
_MODE_CHARACTERS = frozenset("rwxabt+")
_WRITE_CHARACTERS = frozenset("wxa+")


def restricted_globals(allowed_imports: Collection[str]) -> dict[str, Any]:
    """Fresh globals for running restricted code that may import ``allowed_imports``."""
    module = restricted_module(allowed_imports)
    # The code runs in a module of its own, as code normally does: dataclasses (and
    # typing) look up a class's module in sys.modules to read its string annotations,
    # and RestrictedPython compiles every annotation to a string.
    sys.modules[USER_MODULE] = module
    return module.__dict__


def restricted_module(allowed_imports: Collection[str]) -> ModuleType:
    """A fresh module for restricted code, not yet in sys.modules; see restricted_globals.

    A sandbox host builds one per set of allowed imports ahead of the calls: each call's
    process gets its own copy when the host forks it.
    """
    builtins_: dict[str, Any] = {
        # RestrictedPython's own underscore entries (_getattr_) would bypass the policy.
        **{name: value for name, value in safe_builtins.items() if not name.startswith("_")},
        **{function.__name__: function for function in _MORE_BUILTINS},
        "__build_class__": builtins.__build_class__,
        "NotImplemented": NotImplemented,
        "open": _open_file,
    }

    def guarded_getattr(obj: object, name: str, default: object = raise_) -> Any:
        value = safer_getattr(obj, name, default)  # type: ignore[no-untyped-call]
        # A proxy's attributes were checked when it exposed them (and user code cannot
        # write to it): json.dumps in a loop need not be checked again.
        if value is default or isinstance(obj, ModuleProxy):
            return value
        return policy.check(value, obj)

    def guarded_getitem(obj: Any, key: Any) -> Any:
        value = obj[key]
        # Inlined from Policy.check: a subscript in a loop is the runtime's hottest path.
        return value if type(value) in PLAIN_DATA else policy.check(value)

    def guarded_import(
        name: str,
        globals: object = None,
        locals: object = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        if not level and name.partition(".")[0] == SECRETS_MODULE:
            # The call's own module, which its job put in its globals; none: no secrets.
            secrets = globals.get(SECRETS_GLOBAL) if type(globals) is dict else None
            problem = secrets_import_problem(name, fromlist, secrets is not None)
            if problem:
                raise ImportError(problem)
            assert isinstance(secrets, ModuleProxy)
            return secrets
        problem = import_problem(name, level, allowed_imports)
        if problem:
            raise ImportError(problem)
        builtins.__import__(name, None, None, fromlist, 0)
        # "import a.b" binds a; "from a.b import c" reads c from a.b.
        imported = name if fromlist else name.partition(".")[0]
        return policy.proxy(sys.modules[imported])

    builtins_ |= {
        "getattr": guarded_getattr,
        "setattr": _guarded_setattr,
        "delattr": _guarded_delattr,
        "__import__": guarded_import,
    }
    policy = Policy(allowed_imports, builtins_.values(), instances=_FILE_CLASSES)
    module = ModuleType(USER_MODULE)
    module.__dict__.update(
        {
            "__builtins__": builtins_,
            "__metaclass__": _user_class,
            "_getattr_": guarded_getattr,
            "_getitem_": guarded_getitem,
            "_getiter_": iter,
            "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
            "_unpack_sequence_": guarded_unpack_sequence,
            "_write_": full_write_guard,
            # The fast paths of item writes (_itemwrites): at each write, and out of loops.
            "_type_": type,
            "_list_": list,
            "_loop_writes_": _loop_writes,
            "_apply_": _apply,
            "_print_": _Print,
        }
    )
    return module


def secrets_module(values: Mapping[str, str]) -> ModuleProxy:
    """The module ``from toolvault import secrets`` gives one call: its values, read-only.

    Built from each call's job, so a warm worker's next call never sees this one's
    mapping, and a value set again reaches the next call. A ModuleProxy, as every module
    user code holds: the guards hand it out as it is, and user code cannot write to it.
    """
    module = ModuleProxy(SECRETS_MODULE, "The secrets this version declares.")
    setattr(module, SECRETS_ATTRIBUTE, MappingProxyType(dict(values)))
    return module


def _open_file(
    file: object,
    mode: object = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
) -> Any:
    """open() for user code: a file of the working directory, or of out/ to write.

    ``file`` is a plain file name (one of the call's files, read-only) or ``out/`` and a
    plain file name (what the call returns). Both directory and file are opened without
    following a symlink.

    Raises:
        PermissionError: Any other path, or writing outside out/.
    """
    if type(file) is not str:
        raise TypeError("open() takes a file name (a str) of the working directory")
    if type(mode) is not str or not _MODE_CHARACTERS.issuperset(mode):
        raise ValueError(f"invalid mode: {mode!r}")
    directory, slash, name = file.rpartition("/")
    writing = not _WRITE_CHARACTERS.isdisjoint(mode)
    if directory not in ("", OUTPUT_DIR) or (slash and not directory):
        raise PermissionError(
            f"open({file!r}): a function may open only a file of its working directory by "
            f'its name ("data.csv"), or one in {OUTPUT_DIR}/ ("{OUTPUT_DIR}/chart.svg")'
        )
    if writing and directory != OUTPUT_DIR:
        raise PermissionError(
            f"open({file!r}, {mode!r}): a function may write only to files in {OUTPUT_DIR}/"
            f' ("{OUTPUT_DIR}/{name}"); the files it gets are read-only'
        )
    if problem := file_name_problem(name):
        raise PermissionError(f"open({file!r}): the file name {problem}")

    def opener(path: str, flags: int) -> int:
        folder = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW)
        try:
            return os.open(path, flags | _NO_FOLLOW, 0o644, dir_fd=folder)
        finally:
            os.close(folder)

    return open(name, mode, buffering, encoding, errors, newline, opener=opener)


_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def _guarded_setattr(obj: object, name: str, value: object) -> None:
    """Like setattr, under the rules of ``obj.name = value``: no "_" names, writable objects.

    Without the name check, ``setattr(cls, "__annotations__", ...)`` or
    ``setattr(cls, "__eq__", ...)`` would define what the compiler refuses.
    """
    _check_written_name(name)
    guarded_setattr(obj, name, value)  # type: ignore[no-untyped-call]


def _guarded_delattr(obj: object, name: str) -> None:
    """Like delattr, under the rules of ``del obj.name``."""
    _check_written_name(name)
    guarded_delattr(obj, name)  # type: ignore[no-untyped-call]


def _check_written_name(name: object) -> None:
    if type(name) is not str:
        raise TypeError("attribute name must be str")
    if name.startswith("_"):
        raise AttributeError(f'"{name}" is an invalid attribute name because it starts with "_"')


# What the interpreter puts in the namespace of a class body, besides what the body
# defines: its module, name and docstring, annotations, the cell of super(), the bases
# before __mro_entries__, and from 3.12 and 3.13 type parameters, its first line and the
# attributes its methods assign.
_CLASS_BODY_KEYS = frozenset(
    {
        "__module__",
        "__qualname__",
        "__doc__",
        "__annotations__",
        "__classcell__",
        "__orig_bases__",
        "__type_params__",
        "__firstlineno__",
        "__static_attributes__",
    }
)


def _user_class(name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kw: Any) -> type:
    """Create a class defined in user code, whose instances the code may then write to.

    full_write_guard lets writes through to objects marked ``_guarded_writes``; without
    the mark even ``self.x = x`` in the user's own ``__init__`` would fail.

    Raises:
        TypeError: A base is a metaclass (``class Meta(typing.Type[int])`` derives from
            ``type``): the class would make classes from a namespace of any names. Or the
            namespace has a key the compiler refuses in a class body.
    """
    for base in bases:
        if isinstance(base, type) and issubclass(base, type):
            raise TypeError(f"class {name} can't derive from {base.__qualname__}: it makes classes")
    check_namespace(f"class {name}", namespace, _CLASS_BODY_KEYS)
    cls = type(name, bases, namespace, **kw)
    cls._guarded_writes = True  # type: ignore[attr-defined]
    return cls


# What full_write_guard returns unchanged whatever it holds.
_UNGUARDED_WRITES = frozenset({list, dict})


def _loop_writes(target: object) -> object:
    """What a loop's item writes to ``target`` write to (see ``_itemwrites``)."""
    return target if type(target) in _UNGUARDED_WRITES else _GuardedWrites(target)


class _GuardedWrites:
    """Item writes to an object through the write guard, called at each write as before."""

    __slots__ = ("_target",)

    def __init__(self, target: object) -> None:
        self._target = target

    def __setitem__(self, key: object, value: object) -> None:
        full_write_guard(self._target)[key] = value

    def __delitem__(self, key: object) -> None:
        del full_write_guard(self._target)[key]


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
