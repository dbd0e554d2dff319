"""The restricted runtime in-process: guards, module proxies and the value policy."""

import ast
import dataclasses
import functools
import json
import os
import re
import types
from pathlib import Path
from textwrap import dedent, indent
from typing import Any

import pytest
from RestrictedPython.compile import compile_restricted_exec

from toolvault.sandbox import DEFAULT_ALLOWED_IMPORTS
from toolvault.sandbox._globals import restricted_globals
from toolvault.sandbox._modules import ModuleProxy
from toolvault.sandbox._validate import RestrictingTransformer


def run(source: str, allowed: tuple[str, ...] = DEFAULT_ALLOWED_IMPORTS, **names: Any) -> Any:
    """Run ``source``'s main() in restricted globals, with ``names`` made outside the sandbox."""
    compiled = compile_restricted_exec(dedent(source), "<test>", policy=RestrictingTransformer)
    assert compiled.code is not None, compiled.errors
    namespace = restricted_globals(allowed)
    namespace.update(names)
    exec(compiled.code, namespace)
    return namespace["main"]()


def test_imports_hand_out_proxies_not_modules() -> None:
    json_, abc = run("import json\nfrom collections import abc\ndef main():\n    return json, abc")

    assert isinstance(json_, ModuleProxy) and isinstance(abc, ModuleProxy)
    assert (json_.__name__, abc.__name__) == ("json", "collections.abc")


def test_a_module_reached_through_another_is_the_proxy_of_an_allowed_one() -> None:
    scanner_re = run("import json\ndef main():\n    return json.decoder.scanner.re")

    assert isinstance(scanner_re, ModuleProxy) and scanner_re.__name__ == "re"


def test_a_proxy_reads_each_attribute_once_and_keeps_it() -> None:
    same = run("import json\ndef main():\n    return json.dumps is json.dumps and json is json")

    assert same is True


def test_allowed_modules_and_what_they_return_work_as_usual() -> None:
    source = """\
        import collections, datetime, decimal, hashlib, json, random, re, statistics
        from collections import abc

        def main():
            match = re.compile("(?P<word>[a-z]+)").match("abc1")
            return [
                json.loads('{"a": [1]}'),
                match.group("word"),
                match.re.groupindex.get("word"),
                str(decimal.Decimal("1.25").quantize(decimal.Decimal("0.1"))),
                decimal.getcontext().traps.get(decimal.DivisionByZero),
                datetime.date(2024, 2, 29).isoformat(),
                hashlib.blake2b(b"x", digest_size=4).hexdigest(),
                random.Random(4).randint(1, 1),
                statistics.median([3, 1, 2]),
                collections.Counter("aab").most_common(1),
                isinstance({}, abc.Mapping),
                str.maketrans("a", "b")[97],
                dict.fromkeys("ab", 0),
                json.JSONDecoder().scan_once.strict,
            ]
    """

    assert run(source) == [
        {"a": [1]},
        "abc",
        1,
        "1.2",
        True,
        "2024-02-29",
        "b1ba07e5",
        1,
        2,
        [("a", 2)],
        True,
        98,
        {"a": 0, "b": 0},
        True,
    ]


def test_user_classes_dataclasses_closures_and_wraps_work() -> None:
    source = """\
        import functools
        from dataclasses import KW_ONLY, asdict, dataclass, field

        @dataclass(frozen=True)
        class Point:
            x: int
            _: KW_ONLY
            tags: list = field(default_factory=list)

        def twice(f):
            @functools.wraps(f)
            def wrapper(*args):
                return 2 * f(*args)
            return wrapper

        @twice
        def norm(p):
            return abs(p.x)

        def main():
            p = Point(-3, tags=["a"])
            gen = (n * n for n in range(3))
            return asdict(p), repr(p), norm(p), list(gen), f"{p.x!r:>4}"
    """

    assert run(source) == (
        {"x": -3, "tags": ["a"]},
        "Point(x=-3, tags=['a'])",
        6,
        [0, 1, 4],
        "  -3",
    )


def test_f_strings_cant_read_private_attributes() -> None:
    compiled = compile_restricted_exec('f"{x.__class__}"', policy=RestrictingTransformer)

    assert compiled.errors == (
        'Line 1: "__class__" is an invalid attribute name because it starts with "_".',
    )


def test_annotated_attributes_stay_forbidden() -> None:
    compiled = compile_restricted_exec("self.x: int = 1", policy=RestrictingTransformer)

    assert compiled.errors == ("Line 1: annotated assignments are allowed to plain names only",)


@pytest.mark.parametrize(
    ("expression", "error", "message"),
    [
        ("getattr(main, '__globals__')", AttributeError, "invalid attribute name"),
        ("getattr((x for x in ()), 'gi_' + 'code')", AttributeError, "is a restricted name"),
        ("getattr(str, 'format')", NotImplementedError, "format*() methods"),
        ("json.codecs", ImportError, "import of 'codecs' is not allowed"),
        ("typing.sys", ImportError, "import of 'sys' is not allowed"),
        ("statistics.sys", ImportError, "import of 'sys' is not allowed"),
        ("dataclasses.FunctionType", ImportError, "comes from a module that is not allowed"),
        ("functools.recursive_repr", ImportError, "comes from a module that is not allowed"),
        ("typing.get_origin(typing.Type[int])", ImportError, "type is not allowed in the sandbox"),
        ("typing.NamedTupleMeta", ImportError, "NamedTupleMeta is not allowed in the sandbox"),
        ("typing.get_origin(typing.ContextManager)", ImportError, "AbstractContextManager comes"),
        ("next(iter(fractions.Fraction.mro()[1:]))", ImportError, "Rational comes from a module"),
        ("min(fractions.Fraction.mro(), key=str)", ImportError, "Rational comes from a module"),
        ("fractions.Fraction.mro()[1]", ImportError, "Rational comes from a module that is not"),
        ("re.RegexFlag", ImportError, "RegexFlag is not allowed in the sandbox: it makes classes"),
        ("operator.attrgetter", ImportError, "operator.attrgetter is not allowed"),
        ("operator.attrgetter.__call__", SyntaxError, ""),
        ("functools.singledispatchmethod", ImportError, "is not allowed in the sandbox"),
        ("functools.wraps(main).func.__name__", SyntaxError, ""),
        ("string.Formatter", ImportError, "string.Formatter is not allowed"),
        ("collections.UserString('').format_map", ImportError, "UserString.format_map"),
        ("uuid.uuid1", ImportError, "uuid.uuid1 is not allowed"),
        ("setattr(main, '__doc__', 'x')", AttributeError, "invalid attribute name"),
        ("delattr(json, 'dumps')", TypeError, "attribute-less object"),
    ],
)
def test_the_guards_refuse(expression: str, error: type[Exception], message: str) -> None:
    source = (
        "import collections, dataclasses, fractions, functools, json, operator, re, statistics\n"
        "import string, typing, uuid\n"
        f"def main():\n    return {expression}\n"
    )
    if error is SyntaxError:
        assert compile_restricted_exec(source, policy=RestrictingTransformer).code is None
        return
    with pytest.raises(error, match=re.escape(message)):
        run(source)


def test_the_real_originals_of_replaced_functions_are_refused() -> None:
    getitem = restricted_globals(("functools",))["_getitem_"]

    with pytest.raises(ImportError, match="functools.update_wrapper is not allowed"):
        getitem({"f": functools.update_wrapper}, "f")


def test_item_writes_reach_lists_dicts_and_user_objects_only() -> None:
    source = """\
        import collections

        class Box(list):
            pass

        def main():
            items, table, box = [0, 0], {}, Box([0])
            items[0] = 1
            table["a"] = 2
            box[0] = 3
            del items[1]
            refused = []
            for target in (collections.OrderedDict(), (0,), "ab", json_like()):
                try:
                    target[0] = 1
                except TypeError as exc:
                    refused.append(str(exc))
            return items, table, list(box), refused

        def json_like():
            return collections.Counter()
        """

    assert run(source, ("collections",)) == (
        [1],
        {"a": 2},
        [3],
        ["object does not support item or slice assignment"] * 4,
    )


def test_augmented_assignment_of_names_works_and_of_items_stays_forbidden() -> None:
    assert run("def main():\n    n = 1\n    n += 2\n    n *= 5\n    n //= 2\n    return n") == 7
    compiled = compile_restricted_exec("x = [1]\nx[0] += 1", policy=RestrictingTransformer)
    assert compiled.errors == (
        "Line 2: Augmented assignment of object items and slices is not allowed.",
    )
    compiled = compile_restricted_exec("_n = 1\n_n += 1", policy=RestrictingTransformer)
    assert compiled.code is None


def test_functions_and_methods_of_modules_come_wrapped_and_plain_data_methods_as_they_are() -> None:
    source = """\
        import collections, json, re

        class Mine:
            def method(self):
                return 1

        def mine():
            pass

        def main():
            items, counter = [], collections.Counter("aab")
            return (
                json.dumps, counter.most_common, re.compile("a").match, collections.Counter.copy,
                items.append, "".join, str.upper, dict.fromkeys, Mine().method, mine, len,
                counter.most_common(1), json.dumps([1]),
            )
    """
    *wrapped, append, join, upper, fromkeys, method, mine, length, common, dumped = run(source)

    assert all(type(f) is types.FunctionType and f.__module__ == "function" for f in wrapped)
    assert wrapped[0] is not json.dumps
    assert (append.__self__, join.__self__, upper, fromkeys.__self__) == ([], "", str.upper, dict)
    assert (method.__func__.__module__, mine.__module__, length) == ("function", "function", len)
    assert (common, dumped) == ([("a", 2)], "[1]")


def test_module_code_that_names_its_callers_module_still_sees_the_users() -> None:
    source = """\
        import collections, typing

        def main():
            return [
                collections.namedtuple("A", "x"),
                typing.NamedTuple("B", [("x", int)]),
                typing.TypedDict("C", {"x": int}),
                typing.NewType("D", int),
            ]
    """
    assert [made.__module__ for made in run(source)] == ["function"] * 4


def test_a_module_inside_what_a_call_returns_is_refused() -> None:
    source = """\
        import functools

        def main():
            return functools.reduce(lambda acc, module: acc + [module], [outside], [])
    """
    with pytest.raises(ImportError, match="import of 'os' is not allowed"):
        run(source, outside=os)


@pytest.mark.parametrize(
    "make",
    [
        "enum.Enum('E', {'A': 1, '_' + '_getattr__': hook})",
        "enum.IntFlag('E', [('A', 1), ('_' + '_getattr__', hook)])",
    ],
)
def test_cant_build_a_class_with_enums_functional_api(make: str) -> None:
    source = f"""\
        import enum

        hooked = []

        def hook(self, name):
            hooked.append(name)

        def main():
            try:
                E = {make}
            except ImportError as exc:
                return [str(exc), hooked]
            return [E.A.anything, hooked]
    """
    refusal, hooked = run(source, (*DEFAULT_ALLOWED_IMPORTS, "enum"))

    assert refusal.endswith("is not allowed in the sandbox: it makes classes")
    assert hooked == []


@pytest.mark.parametrize(
    ("namespace", "refused"),
    [
        ({"__getattr__": lambda self, name: name}, "__getattr__"),
        ({"__init_subclass__": classmethod(lambda cls: None)}, "__init_subclass__"),
        ({"_guarded_writes": False}, "_guarded_writes"),
        ({"__dataclass_fields__": {}}, "__dataclass_fields__"),
    ],
)
def test_the_class_hook_refuses_what_a_class_body_could_not_define(
    namespace: dict[str, object], refused: str
) -> None:
    user_class = restricted_globals(DEFAULT_ALLOWED_IMPORTS)["__metaclass__"]

    with pytest.raises(TypeError, match=f"class X can't define '{refused}'"):
        user_class("X", (), {"__module__": "function", **namespace})


def test_class_bodies_keep_what_the_interpreter_and_the_compiler_let_them_define() -> None:
    source = """\
        import typing

        T = typing.TypeVar("T")

        class Base(typing.Generic[T]):
            "A docstring."
            size: int = 1
            _ = 2

            def __init__(self, value):
                self.value = value

            def __eq__(self, other):
                return self.value == other.value

            def doubled(self):
                return 2 * self.value

        class Child(Base[int]):
            def doubled(self):
                return super().doubled() + 1

        def main():
            return Child(1) == Base(1), Child(1).doubled(), Child.size
    """
    assert run(source) == (True, 3, 1)


def test_dataclasses_work_as_usual_within_the_rules() -> None:
    source = """\
        import dataclasses
        from dataclasses import KW_ONLY

        @dataclasses.dataclass(frozen=True)
        class Base:
            x: int
            tags: list = dataclasses.field(default_factory=list)

        @dataclasses.dataclass(frozen=True, slots=True)
        class Child(Base):
            _: KW_ONLY
            y: int = 0

        def twice(self):
            return 2 * self.x

        Made = dataclasses.make_dataclass(
            "Made",
            [("z", int, 0), ("y", int, dataclasses.field(default=3))],
            bases=(Base,),
            namespace={"twice": twice},
            frozen=True,
        )

        def main():
            made = Made(1, [], 5)
            return repr(Child(1, y=2)), dataclasses.asdict(made), made.twice(), Made(1, [], 5, 3)
    """
    child, fields, twice, made = run(source)

    assert (child, fields, twice) == (
        "Child(x=1, tags=[], y=2)",
        {"x": 1, "tags": [], "z": 5, "y": 3},
        2,
    )
    assert type(made).__module__ == "function"


def test_cant_inherit_a_field_whose_name_was_changed_after_its_class_was_made(
    tmp_path: Path,
) -> None:
    created = tmp_path / "created"
    escape = (
        "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
        f".__init__.__globals__['open']({str(created)!r}, {os.O_CREAT | os.O_WRONLY})"
    )

    @dataclasses.dataclass
    class Base:
        a: int

    dataclasses.fields(Base)[0].name = f"a if 0 else {escape}"
    source = """\
        import dataclasses

        def main():
            @dataclasses.dataclass(init=False, repr=False)
            class Child(Base):
                pass

            return Child(1) == Child(1)
    """
    with pytest.raises(TypeError, match='dataclass field name "a if 0 else'):
        run(source, Base=Base)
    assert not created.exists()


@pytest.mark.parametrize("name", ["'_' + '_class__'", "'_hidden'", "'def'", "'\\uff41'", "'a b'"])
def test_dataclass_field_names_must_be_plain_identifiers(name: str) -> None:
    source = f"""\
        import dataclasses, typing

        def main():
            refused = []
            for make in (
                lambda: dataclasses.dataclass(typing.TypedDict("T", {{{name}: int}})),
                lambda: dataclasses.make_dataclass("M", [{name}]),
            ):
                try:
                    make()
                except TypeError as exc:
                    refused.append(str(exc))
            return refused
    """
    refused = run(source)

    assert len(refused) == 2
    assert all(message.startswith("dataclass field name") for message in refused)


def test_item_writes_to_an_object_that_claims_to_be_a_list_go_through_the_write_guard() -> None:
    # Built outside: the sandbox refuses the namespace that would make one.
    written: list[object] = []
    liar = type(
        "Liar",
        (),
        {
            "__class__": property(lambda self: list),
            "__setitem__": lambda self, key, value: written.append(value),
        },
    )()
    source = """\
        def main():
            target = liar
            try:
                target[0] = 1
            except TypeError as exc:
                return isinstance(target, list), str(exc)
    """
    refusal = "object does not support item or slice assignment"

    assert run(source, liar=liar) == (True, refusal)
    assert written == []


def transformed(source: str) -> str:
    """``source`` as the sandbox compiles it, as source again."""
    policy = RestrictingTransformer()
    new = policy.visit(ast.parse(dedent(source)))
    assert not policy.errors, policy.errors
    return ast.unparse(new)


def test_a_loop_writes_straight_to_a_list_or_dict_named_before_it() -> None:
    source = """\
        def main(n=6):
            flags, seen = [True] * n, {}
            for i in range(n):
                for j in range(0, n, i + 1):
                    flags[j] = not flags[j]
                seen[i] = flags[i]
            return flags, seen
        """
    loops = transformed(source).partition("for i")[2]

    assert "_write_" not in loops and "_type_" not in loops
    assert "_writes_to_flags[j] =" in loops and "_writes_to_seen[i] =" in loops
    assert run(source) == (
        [True, False, True, True, False, True],
        {0: False, 1: False, 2: True, 3: True, 4: False, 5: True},
    )


@pytest.mark.parametrize(
    "loop",
    [
        # Bound in the loop (its target, an assignment, an import, a nested loop's
        # target), not surely before it, bound by a nested scope, deleted, or global:
        # each write keeps its own test.
        "for target in ([0], [0]):\n    target[0] = 1",
        "target = [0]\nfor i in range(1):\n    target[0] = 1\n    target = [0]",
        "target = [0]\nfor i in range(1):\n    target[0] = 1\n    import json as target",
        "target = [0]\nwhile n:\n    target[0] = 1\n    for target in ([0],):\n        pass",
        "if n:\n    target = [0]\nfor i in range(1):\n    target[0] = 1",
        "target = [0]\nswap = lambda: [(target := 1) for _ in '']\n"
        "for i in range(1):\n    target[0] = 1",
        "target = [0]\nfor i in range(1):\n    target[0] = 1\ndel target",
        "target = [0]\ntry:\n    pass\nexcept ValueError as target:\n    pass\n"
        "while n:\n    target[0] = 1",
        "global target\ntarget = [0]\nfor i in range(1):\n    target[0] = 1",
    ],
)
def test_a_loop_keeps_the_write_test_for_a_name_that_may_change_in_it(loop: str) -> None:
    compiled = transformed("def main(n):\n" + indent(loop, "    "))

    assert "_writes_to_" not in compiled and "_type_(target) is _list_" in compiled


REFUSAL = "object does not support item or slice assignment"


class Liar:
    """Claims to be a list; built outside, as the sandbox refuses the namespace."""

    def __init__(self) -> None:
        self.written: list[object] = []

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: D105
        return list

    def __setitem__(self, key: object, value: object) -> None:
        self.written.append(value)


@pytest.mark.parametrize(
    ("setup", "swap"),
    [
        ("", "target = liar"),
        ("", "import json as target"),
        ("", "def target():\n    pass"),
        ("", "for target in (liar,):\n    pass"),
        ("swaps = ((target := liar) for _ in range(1))", "next(swaps, None)"),
    ],
)
def test_an_item_write_in_a_loop_is_guarded_once_its_name_holds_another_object(
    setup: str, swap: str
) -> None:
    source = f"""\
def main():
    target = [0]
{indent(setup, "    ")}
    refused = []
    for i in range(2):
        try:
            target[0] = i
        except TypeError as exc:
            refused.append(str(exc))
{indent(swap, "        ")}
    return refused
"""
    liar = Liar()

    assert run(source, liar=liar) == [REFUSAL]
    assert liar.written == []


def test_an_item_write_in_a_loop_is_guarded_once_its_global_holds_another_object() -> None:
    source = """\
        target = [0]

        def swap():
            global target
            target = liar

        def main():
            refused = []
            for i in range(2):
                try:
                    target[0] = i
                except TypeError as exc:
                    refused.append(str(exc))
                swap()
            return refused
        """
    liar = Liar()

    assert run(source, liar=liar) == [REFUSAL]
    assert liar.written == []


def test_item_writes_in_a_loop_refuse_and_let_through_what_the_write_guard_does() -> None:
    source = """\
        import collections

        class Box(list):
            pass

        def main():
            box, refused = Box([0, 0]), []
            for i in range(2):
                box[i] = i + 1
            after_loop = list(box)
            for target in (box, bytearray(2), (0,), "ab", collections.OrderedDict(), liar):
                for i in range(1):
                    try:
                        target[0] = 1
                    except TypeError as exc:
                        refused.append(str(exc))
                    try:
                        target[0:1] = [2]
                    except TypeError as exc:
                        refused.append(str(exc))
                    try:
                        del target[0]
                    except TypeError as exc:
                        refused.append(str(exc))
            return after_loop, list(box), refused
        """
    liar = Liar()

    # Each inner loop writes through what _loop_writes_ gave for its name.
    assert transformed(source).count("_loop_writes_(") == 2
    assert run(source, ("collections",), liar=liar) == ([1, 2], [2], [REFUSAL] * 15)
    assert liar.written == []


def test_a_write_after_except_as_unbound_the_name_fails_as_in_python() -> None:
    source = """\
        def main():
            target = [0]
            try:
                raise ValueError
            except ValueError as target:
                pass
            for i in range(1):
                try:
                    target[0] = 1
                except UnboundLocalError:
                    return "unbound"
        """

    assert run(source) == "unbound"
