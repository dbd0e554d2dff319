"""What restricted code may hold: module proxies and the check every reached value passes.

RestrictedPython stops attribute names that start with "_", but allowed modules still
hold other modules (``json.codecs``, ``dataclasses.inspect``, ``typing.sys``), public
functions that reach around the guards, and functions that return what no guard saw
(``typing.get_origin(typing.Type[int])`` is ``type``). So imports hand out a ModuleProxy,
and every value that attribute or item access (or a proxy) hands to user code passes
``Policy.check``, which applies one structural rule:

- a module only as the proxy of a module the code could import itself;
- never a frame, code object, traceback or cell (they lead to globals and builtins);
- never a class that makes classes: ``type``, any metaclass, a class whose metaclass has
  a ``__call__`` of its own (Enum's functional API); they would build a class from a
  namespace of any names, dunder methods included;
- a class or function only if the module it comes from is allowed (a C accelerator
  counts as its public module: ``_json`` as ``json``), it is the user's own, or it is
  one of the sandbox's builtins;
- an instance only if its class passes that rule or is a plain data type;
- never a callable of ``DENIED``, and instead of those of ``REPLACED`` their safe
  versions;
- a function or method whose code comes from an allowed module (``json.dumps``,
  ``re.Match.group``, ``Fraction.mro``) as a wrapper whose results pass the rule too,
  containers with all they contain (``check_result``). The user's own functions, the
  sandbox's builtins and the methods of plain data (``list.append``, ``str.upper``) are
  handed out as they are: calling them runs no code of a module. Classes and callable
  objects (``functools.partial``, typing's aliases) are not wrapped either: calling them
  runs what they hold or makes an instance.

Code generators see names only under the rule of class bodies (``plain_name``): the
``dataclass`` and ``make_dataclass`` handed out instead of the real ones refuse other
field names, fields inherited from anything but a real ``dataclasses.Field`` (a subclass
instance could change its name after the code was generated), and namespaces with keys
a class body could not define; ``collections.namedtuple`` and the typing factories on it
check their names themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import keyword
import sys
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping
from types import (
    BuiltinFunctionType,
    CellType,
    ClassMethodDescriptorType,
    CodeType,
    FrameType,
    FunctionType,
    MethodDescriptorType,
    MethodType,
    MethodWrapperType,
    ModuleType,
    TracebackType,
    WrapperDescriptorType,
)
from typing import Any, TypeGuard

from RestrictedPython.transformer import ALLOWED_FUNC_NAMES

from ._validate import import_problem

# The __name__ user code runs under, and so the __module__ of its functions and classes.
USER_MODULE = "function"

# Public callables of allowed modules that get around the guards, by dotted path. Entries
# this Python version lacks are skipped.
DENIED: tuple[str, ...] = (
    # Read or call any attribute by name, "__globals__" included, past _getattr_.
    "operator.attrgetter",
    "operator.methodcaller",
    # Evaluate string annotations with eval(), outside the restricted compiler; the
    # register() of singledispatch does it through get_type_hints.
    "typing.get_type_hints",
    "typing.evaluate_forward_ref",
    "functools.singledispatch",
    "functools.singledispatchmethod",
    # Format strings walk attributes with plain getattr: "{0.__globals__}".
    "string.Formatter",
    "collections.UserString.format",
    "collections.UserString.format_map",
    # getnode may start ip/ifconfig subprocesses; both reveal the host's MAC address.
    "uuid.getnode",
    "uuid.uuid1",
    # Read and write files by name (egress's modules): file: URLs, downloads to a file,
    # cookie files. Restricted code touches no file; urlopen's file: scheme is closed too.
    "urllib.request.FileHandler",
    "urllib.request.URLopener",
    "urllib.request.FancyURLopener",
    "urllib.request.urlretrieve",
    "http.cookiejar.FileCookieJar",
    "http.cookiejar.LWPCookieJar",
    "http.cookiejar.MozillaCookieJar",
    # Make a socket of whatever fd number the object they are given names: the call's
    # door, a warm worker's channel to the runner, its report pipe.
    "ssl.SSLContext.wrap_socket",
    "ssl.wrap_socket",
)


def _update_wrapper(wrapper: Any, wrapped: Callable[..., Any]) -> Any:
    """functools.update_wrapper with its standard attributes only.

    Its ``assigned`` and ``updated`` arguments name attributes it reads and writes with
    plain getattr and setattr ("__globals__" included), and it writes to any object.
    """
    if not isinstance(wrapper, FunctionType) and not hasattr(type(wrapper), "_guarded_writes"):
        raise TypeError("update_wrapper() can only update functions and objects of your classes")
    return functools.update_wrapper(wrapper, wrapped)


def _wraps(wrapped: Callable[..., Any]) -> Callable[[Any], Any]:
    """functools.wraps with its standard attributes only (see _update_wrapper)."""
    return functools.partial(_update_wrapper, wrapped=wrapped)


def plain_name(name: object) -> bool:
    """Whether ``name`` is a name a class body could define, and so safe to paste into source.

    That is an identifier as the parser writes it (NFKC), not a keyword, not starting
    with "_" unless it is "_"; and an exact ``str``: a subclass could answer
    ``isidentifier()`` as it likes.
    """
    return (
        type(name) is str
        and name.isidentifier()
        and not keyword.iskeyword(name)
        and unicodedata.normalize("NFKC", name) == name
        and (name == "_" or not name.startswith("_"))
    )


def check_namespace(
    owner: str, namespace: Mapping[str, object], also: Collection[str] = ()
) -> None:
    """Refuse the keys of a class namespace that a restricted class body could not define.

    A class built from a namespace with other keys gets dunder methods the interpreter
    calls with what no guard checked (``__exit__`` gets a traceback) and attributes that
    change what the guards and dataclasses believe (``__class__``,
    ``__dataclass_fields__``).

    Raises:
        TypeError: A key is not a plain name, one of the special methods RestrictedPython
            lets class bodies define (``__init__``, comparisons), nor one of ``also``.
    """
    for key in namespace:
        if not (plain_name(key) or key in ALLOWED_FUNC_NAMES or key in also):
            raise TypeError(f"{owner} can't define {key!r}: a class body could not")


def _check_field_name(name: object) -> None:
    if not plain_name(name):
        raise TypeError(f"dataclass field name {name!r} is not a plain identifier")


def _check_inherited_fields(classes: Iterable[type]) -> None:
    """Refuse ``__dataclass_fields__`` of ``classes`` with names that are not plain."""
    for cls in classes:
        fields = getattr(cls, "__dataclass_fields__", None)
        if fields is None:
            continue
        if type(fields) is not dict:
            raise TypeError(f"the dataclass fields of {_describe(cls)} are not a dict")
        _check_field_objects(fields.values())
        for field in fields.values():
            _check_field_name(field.name)


def _check_field_objects(values: Iterable[object]) -> None:
    """Refuse instances of subclasses of Field among ``values``, which may become fields.

    A subclass is the user's own, with a name user code could change after dataclass
    generated code from it: for asdict() to read and a subclass to paste.
    """
    for value in values:
        if isinstance(value, dataclasses.Field) and type(value) is not dataclasses.Field:
            raise TypeError(f"dataclass fields must be dataclasses.Field, not {_describe(value)}")


def _dataclass(cls: type | None = None, /, **options: Any) -> Any:
    """dataclasses.dataclass, refusing fields it would paste into source unsafely.

    dataclass pastes field names, its own and its bases', into source it runs with exec()
    outside the restricted compiler; a class whose annotations have other keys
    (``typing.TypedDict("T", {"a=...": int})`` makes one) would inject code into it.
    """

    def wrap(cls: type) -> type:
        annotations = cls.__dict__.get("__annotations__", {})
        if type(annotations) is not dict:
            raise TypeError("dataclass annotations must be a dict")
        for name in annotations:
            _check_field_name(name)
        _check_inherited_fields(cls.__mro__[1:])
        _check_field_objects(getattr(cls, name, None) for name in annotations)
        return dataclasses.dataclass(cls, **options)

    return wrap if cls is None else wrap(cls)


def _make_dataclass(
    cls_name: str,
    fields: Iterable[Any],
    *,
    bases: tuple[type, ...] = (),
    namespace: Mapping[str, Any] | None = None,
    **options: Any,
) -> type:
    """dataclasses.make_dataclass, under the rules of dataclass above and of class bodies.

    Its namespace and the defaults of its fields become attributes of the class: dunder
    methods too, which the interpreter calls.
    """
    items = [item if isinstance(item, str) else tuple(item) for item in fields]
    names = [item if isinstance(item, str) else item[0] for item in items]
    for name in names:
        _check_field_name(name)
    namespace = dict(namespace or {})
    check_namespace(f"dataclass {cls_name!r}", namespace)
    inherited = [cls for base in bases for cls in base.__mro__]
    _check_inherited_fields(inherited)
    _check_field_objects(
        [
            *(spec for item in items if not isinstance(item, str) for spec in item[2:]),
            *(namespace.get(name) for name in names),
            *(getattr(cls, name, None) for cls in inherited for name in names),
        ]
    )
    # The class's module gives the source dataclasses generates its globals: without it,
    # those of "types" (make_dataclass's helper), with the real builtins.
    namespace["__module__"] = USER_MODULE
    if sys.version_info >= (3, 12):
        options["module"] = USER_MODULE
    return dataclasses.make_dataclass(cls_name, items, bases=bases, namespace=namespace, **options)


# Safe versions handed out instead of these; the originals are denied like DENIED.
REPLACED: dict[str, Callable[..., Any]] = {
    "functools.update_wrapper": _update_wrapper,
    "functools.wraps": _wraps,
    "dataclasses.dataclass": _dataclass,
    "dataclasses.make_dataclass": _make_dataclass,
}

# Modules a C accelerator's name does not lead to by dropping its leading underscore.
_ACCELERATORS = {
    "_blake2": "hashlib",
    "_md5": "hashlib",
    "_sha1": "hashlib",
    "_sha2": "hashlib",
    "_sha256": "hashlib",
    "_sha512": "hashlib",
    "_sha3": "hashlib",
    "_sre": "re",
    "_collections_abc": "collections",
    "_pydecimal": "decimal",
    "_pydatetime": "datetime",
}
# Instances of classes from these are plain data: the interpreter's own types (str,
# dict_keys, mappingproxy...), types.GenericAlias and SimpleNamespace, and abc, where C
# code such as decimal's creates helper classes (Context.flags is an abc.SignalDict).
_DATA_MODULES = frozenset({"builtins", "types", "abc"})
# Exactly these types (not subclasses, whose methods user code may have written) hold
# plain data and lead nowhere: they pass without the checks below.
PLAIN_DATA = frozenset(
    {
        int,
        float,
        complex,
        bool,
        str,
        bytes,
        bytearray,
        type(None),
        list,
        tuple,
        dict,
        set,
        frozenset,
    }
)
_CONTAINERS = (list, tuple, dict, set, frozenset)
_SCALARS = PLAIN_DATA - set(_CONTAINERS)
# The C methods bound to these are those of plain data. Not None: a C type's static
# methods (str.maketrans) are bound to nothing, and the type they were read from decides.
_DATA_OWNERS = PLAIN_DATA - {type(None)}
# Objects that lead to globals and builtins whatever their origin.
_INTERNALS = (FrameType, CodeType, TracebackType, CellType)
# The C methods of a class, read from the class (str.upper) or an instance (x.__eq__).
_DESCRIPTORS = (
    MethodDescriptorType,
    WrapperDescriptorType,
    ClassMethodDescriptorType,
    MethodWrapperType,
)


def _checked_call(
    function: Callable[..., Any], check: Callable[[object], object]
) -> Callable[..., Any]:
    """A function that calls ``function`` and returns what ``check`` makes of the result."""
    scalars = _SCALARS

    def call(*args: Any, **kwargs: Any) -> object:
        result = function(*args, **kwargs)
        # Most results are numbers and strings: they pass without two more calls.
        return result if type(result) in scalars else check(result)

    return call


# The same, run in globals that name the user's module (and hold the one global it reads;
# its annotations are strings). Module code that names its caller's module (namedtuple,
# typing's NamedTuple, TypedDict and NewType) reads it from the calling frame, here the
# wrapper's; and the wrapper, the user's own, is not wrapped again.
_CHECKED_CALL: Callable[[Callable[..., Any], Callable[[object], object]], Callable[..., Any]] = (
    FunctionType(_checked_call.__code__, {"__name__": USER_MODULE, "_SCALARS": _SCALARS})
)


class ModuleProxy(ModuleType):
    """An allowed module as user code sees it: its public API, checked by a Policy."""


class Policy:
    """Decides what restricted code may hold, for one set of allowed modules.

    Args:
        allowed_imports: The top-level modules the code may import.
        builtins: The builtins the code runs with; they may be handed out again.
        instances: Classes whose instances the builtins hand out (open's files): their
            instances pass whatever module the classes come from.
    """

    def __init__(
        self,
        allowed_imports: Collection[str],
        builtins: Collection[object],
        *,
        instances: Collection[type] = (),
    ) -> None:
        self.allowed_imports = allowed_imports
        # By id: comparing with == would run user code or fail on unhashable values.
        self._builtins = {id(value): value for value in builtins}
        self._denied: dict[int, str] = {}
        self._replaced: dict[str, Callable[..., Any]] = {}
        for path, replacement in REPLACED.items():
            self._deny(path)
            self._replaced[path] = replacement
            self._builtins[id(replacement)] = replacement
        for path in DENIED:
            self._deny(path)
        self._proxies: dict[str, ModuleProxy] = {}
        # Verdicts by module name and by class: the check of every method call asks.
        self._allowed_modules: dict[str, bool] = {}
        self._allowed_instances: dict[type, bool] = dict.fromkeys(instances, True)
        self._modules: dict[int, ModuleType] = {}
        policy = self

        class Proxy(ModuleProxy):
            def __getattr__(self, name: str) -> object:
                value = policy._expose(self, name)
                self.__dict__[name] = value  # checked once, then found directly
                return value

        self._proxy_class = Proxy

    def check(self, value: object, holder: object = None) -> object:
        """What user code may hold of ``value``, if anything.

        That is ``value`` itself; or its proxy if it is a module; or, if calling it runs
        code of a module, a wrapper that passes its results to check_result.

        Args:
            value: What user code is about to get.
            holder: The object ``value`` was read from as an attribute, if it was.

        Raises:
            ImportError: It is a module the code may not import, or comes from one, or
                is denied, or is a class that makes classes.
            AttributeError: It is a frame, code object, traceback or cell.
        """
        kind = type(value)
        if kind in PLAIN_DATA:  # the hot path of every subscript in a loop
            return value
        if type(value) is BuiltinFunctionType and type(value.__self__) in _DATA_OWNERS:
            return value  # list.append, "".join: the hot path of method calls
        if isinstance(value, ModuleProxy):
            return value
        if isinstance(value, ModuleType):
            return self.proxy(value)
        if isinstance(value, _INTERNALS):
            raise AttributeError(f"{type(value).__name__} objects are not accessible")
        if isinstance(value, type) and _makes_classes(value):
            raise ImportError(f"{_describe(value)} is not allowed in the sandbox: it makes classes")
        function = value.__func__ if isinstance(value, MethodType) else value
        for candidate in (value, function, kind):
            denied = self._denied.get(id(candidate))
            if denied is not None:
                raise ImportError(f"{denied} is not allowed in the sandbox")
        if not self._comes_from_allowed(value, holder):
            raise ImportError(f"{_describe(value)} comes from a module that is not allowed")
        if self._runs_module_code(value, holder):
            return _CHECKED_CALL(value, self.check_result)
        return value

    def check_result(self, value: object, holder: object = None) -> object:
        """``check``, and for a container the same for everything in it.

        For what module code returns: a list of classes would hand them to iteration and
        unpacking, which no guard sees. What user code builds, or got checked, holds
        nothing unchecked, so item access checks only the item.

        Raises:
            ImportError: As check, or the container holds a function or module, which can
                only be handed out on its own (as a wrapper or proxy).
        """
        value = self.check(value, holder)
        if isinstance(value, _CONTAINERS):
            self._check_contents(value)
        return value

    def proxy(self, module: ModuleType) -> ModuleProxy:
        """The proxy of ``module``, which the code must be allowed to import."""
        problem = import_problem(module.__name__, 0, self.allowed_imports)
        if problem:
            raise ImportError(problem)
        proxy = self._proxies.get(module.__name__)
        if proxy is None:
            proxy = self._proxy_class(module.__name__, module.__doc__)
            self._proxies[module.__name__] = proxy
            # By the proxy, not its name: user code cannot rename what it does not hold.
            self._modules[id(proxy)] = module
        return proxy

    def _expose(self, proxy: ModuleProxy, name: str) -> object:
        module = self._modules.get(id(proxy))
        if module is None or name.startswith("_"):
            raise AttributeError(f"module {proxy.__name__!r} has no attribute {name!r}")
        replacement = self._replaced.get(f"{module.__name__}.{name}")
        if replacement is not None:
            return replacement
        return self.check_result(getattr(module, name), module)

    def _check_contents(self, container: Collection[object]) -> None:
        seen = {id(container)}
        stack = [container]
        while stack:
            items = stack.pop()
            parts = (dict.keys(items), dict.values(items)) if isinstance(items, dict) else (items,)
            for part in parts:
                if _SCALARS.issuperset(map(type, part)):  # in C: json.loads() returns many
                    continue
                for element in part:
                    if type(element) in _SCALARS:
                        continue
                    if type(element) not in PLAIN_DATA and self.check(element) is not element:
                        raise ImportError(
                            f"{_describe(element)} is inside what a call returned: functions"
                            " and modules are handed out only on their own"
                        )
                    if isinstance(element, _CONTAINERS) and id(element) not in seen:
                        seen.add(id(element))
                        stack.append(element)

    def _runs_module_code(self, value: object, holder: object) -> TypeGuard[Callable[..., Any]]:
        """Whether calling ``value`` (which passed the rule) runs code of a module."""
        if type(value) is FunctionType:
            # A function with __mro_entries__ stands in for a class (typing's NamedTuple
            # and TypedDict), as a base too, where it must be itself: like a class, it is
            # not wrapped.
            return not (
                value.__module__ == USER_MODULE
                or id(value) in self._builtins
                or "__mro_entries__" in value.__dict__
            )
        if type(value) is MethodType:
            return self._runs_module_code(value.__func__, None)
        if isinstance(value, BuiltinFunctionType):  # or its subclass, re.Pattern.match's
            # Bound to a module, an object or a class; a C type's static method to nothing
            # (str.maketrans), and the type it was read from is its owner.
            owner = holder if value.__self__ is None else value.__self__
            plain_class = type(owner) is type and owner in PLAIN_DATA
            return not (plain_class or id(value) in self._builtins)
        if isinstance(value, _DESCRIPTORS):
            return value.__objclass__ not in PLAIN_DATA
        return False

    def _deny(self, path: str) -> None:
        module_name, _, rest = path.partition(".")
        # Not allowed, its contents fail the check anyway; allowed, it must be loaded now
        # for its callables to be recognised.
        if import_problem(module_name, 0, self.allowed_imports):
            return
        value: object = importlib.import_module(module_name)
        for part in rest.split("."):
            found = getattr(value, part, None)
            if found is None and isinstance(value, ModuleType):
                # A submodule nothing imported yet: user code may import it later.
                with contextlib.suppress(ImportError):
                    found = importlib.import_module(f"{value.__name__}.{part}")
            value = found
        if value is not None:
            self._denied[id(value)] = path

    def _comes_from_allowed(self, value: object, holder: object = None) -> bool:
        """Whether the code ``value`` runs when called or used comes from allowed code."""
        if isinstance(value, MethodType):
            return self._comes_from_allowed(value.__func__) and self._comes_from_allowed(
                value.__self__
            )
        if isinstance(value, BuiltinFunctionType):
            owner = value.__self__
            if owner is not None and not isinstance(owner, ModuleType):
                return self._comes_from_allowed(owner)
            if owner is None and value.__module__ is None:
                # A C type's static method (str.maketrans): the type it was read from decides.
                return holder is not None and self._comes_from_allowed(holder)
        elif not isinstance(value, type | FunctionType):
            # An instance: its class decides, and the interpreter's own types are data.
            cls = type(value)
            allowed = self._allowed_instances.get(cls)
            if allowed is None:
                allowed = cls.__module__ in _DATA_MODULES or self._comes_from_allowed(cls)
                self._allowed_instances[cls] = allowed
            return allowed
        if id(value) in self._builtins:
            return True
        module = getattr(value, "__module__", None)
        return type(module) is str and self._module_allowed(module)

    def _module_allowed(self, module: str) -> bool:
        allowed = self._allowed_modules.get(module)
        if allowed is None:
            top = module.partition(".")[0]
            if top.startswith("_") and not top.startswith("__"):
                top = _ACCELERATORS.get(top, top[1:])
            allowed = top == USER_MODULE or import_problem(top, 0, self.allowed_imports) is None
            self._allowed_modules[module] = allowed
        return allowed


def _makes_classes(cls: type) -> bool:
    """Whether calling ``cls`` can build a class from a namespace of any names.

    So it can if it is a metaclass, or if its metaclass's ``__call__`` is code of its
    own instead of type's (EnumType's makes a class when called with names: Enum's
    functional API) or a plain data type (TypedDict's is ``dict``).
    """
    call = type(cls).__call__
    return issubclass(cls, type) or not (call is type.__call__ or call in PLAIN_DATA)


def _describe(value: object) -> str:
    name = getattr(value, "__qualname__", None)
    if not isinstance(name, str):
        return f"a {type(value).__qualname__} object"
    return name
