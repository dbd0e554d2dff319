"""Red-team attacks on the write guard's fast paths (``_itemwrites``), through the real compiler.

Before a loop, ``_writes_to_<name> = _loop_writes_(name)`` holds a list or dict itself,
or a stand-in that calls the write guard at each write, for a local that is surely bound
before the loop and bound nowhere in it. The attacks make the name hold another object
during the loop by every binding route Python has that RestrictedPython lets through,
write through the fast paths to what the write guard refuses, and reach the names the
transform adds. Each asserts the attack had no effect: writes land where plain Python
puts them, and what the guard refuses stays refused.

The last one is a finding: the analysis costs the trusted server quadratic time in how
deeply functions nest, for source that the publish-time check accepts in linear time.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from textwrap import dedent, indent
from typing import Any

import pytest

from tests.sandbox.test_guards import REFUSAL, Liar, run, transformed
from toolvault.sandbox import check_source


def plain_python(source: str) -> Any:
    """What ``source``'s main() returns as plain Python, or the exception it raises."""
    namespace: dict[str, Any] = {}
    try:
        exec(compile(dedent(source), "<plain>", "exec"), namespace)
        return namespace["main"]()
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return type(exc)


def restricted(source: str) -> Any:
    """What ``source``'s main() returns in the sandbox's runtime, or the exception it raises."""
    try:
        return run(source)
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return type(exc)


# Each loop writes to ``x`` while something moves ``x`` to another list (or leaves it),
# or writes to it in a way only a correct transform gets right; ``a`` and ``b`` show
# where each write landed. Whether hoisted or not, the writes must land where plain
# Python puts them.
WHERE_WRITES_LAND = {
    "tuple target of an assignment": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                x[i] = 1
                x, y = b, 0
            return a, b
        """,
    "starred target": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                x[i] = 1
                x, *rest = b, 0
            return a, b
        """,
    "augmented assignment": """\
        def main():
            a = [0, 0]
            x = a
            for i in range(2):
                x[i] = 1
                x = x + [5]
            return a, x
        """,
    "tuple target of an inner for": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                x[i] = 1
                for y, x in ((0, b),):
                    pass
            return a, b
        """,
    "walrus in the while test": """\
        def main():
            a, b = [0, 0, 0], [0, 0, 0]
            x, n = a, 0
            while n < 3 and (n == 0 or (x := b)):
                x[n] = 1
                n += 1
            return a, b
        """,
    "walrus in a comprehension in the loop": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                x[i] = 1
                [(x := b) for _ in (0,)]
            return a, b
        """,
    "walrus in a lambda's default": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                x[i] = 1
                grab = lambda y=(x := b): y
            return a, b
        """,
    "walrus in a def's default": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                x[i] = 1
                def grab(y=(x := b)):
                    return y
            return a, b
        """,
    "walrus in a decorator": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                x[i] = 1
                @(lambda f: f) if (x := b) else None
                def grab():
                    pass
            return a, b
        """,
    "a class body's name is not the function's": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                x[i] = 1
                class Grab:
                    x = b
            return a, b
        """,
    "except flow": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                try:
                    x[i] = 1
                    raise ValueError
                except ValueError:
                    x = b
            return a, b
        """,
    "finally": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                try:
                    x[i] = 1
                finally:
                    x = b
            return a, b
        """,
    "except as in the loop": """\
        def main():
            a = [0, 0]
            x = a
            for i in range(2):
                try:
                    x[i] = 1
                    raise ValueError
                except ValueError as x:
                    pass
            return a
        """,
    "while else": """\
        def main():
            a, b = [0, 0], [0, 0]
            x, n = a, 0
            while n < 1:
                x[n] = 1
                n += 1
            else:
                x = b
                x[1] = 2
            return a, b
        """,
    "for else": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(1):
                x[i] = 1
            else:
                x = b
                x[1] = 2
            return a, b
        """,
    "the outer loop rebinds, the inner is hoisted": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            for i in range(2):
                for j in range(1):
                    x[i] = 1
                x = b
            return a, b
        """,
    "three loops deep, rebinding in the middle one": """\
        def main():
            a, b = [0, 0, 0, 0], [0, 0, 0, 0]
            x = a
            for i in range(2):
                for j in range(2):
                    for k in range(1):
                        x[2 * i + j] = 1
                    x = b
            return a, b
        """,
    "subscript as a for target": """\
        def main():
            a = [0, 0]
            x = a
            for i in range(2):
                for x[i] in (7,):
                    pass
            return a
        """,
    "subscript as a comprehension target": """\
        def main():
            a = [0, 0]
            x = a
            for i in range(2):
                [0 for x[i] in (7,)]
            return a
        """,
    "subscript in a tuple target": """\
        def main():
            a, d = [0, 0], {}
            x = a
            for i in range(2):
                x[i], d[i] = i + 5, i
            return a, d
        """,
    "slices and deletes": """\
        def main():
            a, d = [0, 1, 2, 3], {1: 2, 3: 4}
            x = a
            for i in range(2):
                del x[0]
                x[0:1] = [9, 9]
                del d[1 + 2 * i]
            return a, d
        """,
    "a generator's loop across its yields": """\
        def fill(x):
            for i in range(2):
                x[i] = yield i

        def main():
            a = [0, 0]
            gen = fill(a)
            next(gen)
            gen.send(5)
            next(gen, None)
            return a
        """,
    "a generator that rebinds its own name between yields": """\
        def fill(x, b):
            for i in range(2):
                x[i] = yield i
                x = b

        def main():
            a, b = [0, 0], [0, 0]
            gen = fill(a, b)
            next(gen)
            gen.send(5)
            next(gen, None)
            return a, b
        """,
    "recursion into the same function": """\
        def fill(x, depth):
            for i in range(2):
                x[i] = depth
                if depth:
                    fill([0, 0], depth - 1)
            return x

        def main():
            return fill([0, 0], 2)
        """,
    "a nested function's parameter of the same name": """\
        def main():
            a, b = [0, 0], [0, 0]
            x = a
            def grab(x):
                for i in range(2):
                    x[i] = 2
            for i in range(2):
                x[i] = 1
                grab(b)
            return a, b
        """,
    "a closure that reads the name": """\
        def main():
            a = [0, 0]
            x = a
            read = lambda: x
            for i in range(2):
                read()[i] = i + 1
                x[i] = x[i] * 10
            return a
        """,
    "the name unbound before the loop": """\
        def main():
            for i in range(0):
                x[i] = 1
            x = [0]
            return x
        """,
    "bound only in one branch": """\
        def main(n=0):
            if n:
                x = [0]
            for i in range(0):
                x[i] = 1
            return "no write, no error"
        """,
    "keyword and star parameters": """\
        def fill(*args, **kwargs):
            for k in ("a",):
                kwargs[k] = 1
            return kwargs

        def main():
            return fill(b=2)
        """,
}


@pytest.mark.parametrize("name", WHERE_WRITES_LAND)
def test_writes_in_loops_land_where_plain_python_puts_them(name: str) -> None:
    source = WHERE_WRITES_LAND[name]

    assert restricted(source) == plain_python(source)


# What moves ``target`` from a list to an object the write guard refuses, inside the loop.
SWAPS = [
    "target, other = liar, 0",
    "target, *rest = liar, 0",
    "with hold((0, liar)) as (other, target):\n    pass",
    "for other, target in ((0, liar),):\n    pass",
    "if (target := liar) is None:\n    pass",
    "[(target := liar) for _ in (0,)]",
    "grab = lambda other=(target := liar): other",
    "def grab(other=(target := liar)):\n    pass",
    "@(lambda f: f) if (target := liar) else None\ndef grab():\n    pass",
    "try:\n    raise ValueError\nexcept ValueError:\n    target = liar",
    "try:\n    pass\nfinally:\n    target = liar",
    "while True:\n    target = liar\n    break",
    "for other in (0,):\n    pass\nelse:\n    target = liar",
    "for other in (0,):\n    for target in (liar,):\n        pass",
]


@pytest.mark.parametrize("swap", SWAPS)
def test_an_item_write_is_guarded_once_its_name_holds_another_object(swap: str) -> None:
    source = f"""\
def main():
    target = [0]
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

    assert run(source, liar=liar, hold=contextlib.nullcontext) == [REFUSAL]
    assert liar.written == []


def test_a_name_the_loop_rebinds_is_never_hoisted_whatever_the_route() -> None:
    for swap in SWAPS:
        source = "def main(liar, hold):\n    target = [0]\n    for i in range(2):\n"
        source += "        target[0] = i\n" + indent(swap, "        ") + "\n"
        assert "_writes_to_target" not in transformed(source), swap


def test_item_writes_in_loops_refuse_what_the_write_guard_refuses() -> None:
    source = """\
        import collections, json

        class Plain:
            pass

        def main():
            refused, written = [], []
            targets = (
                json,
                Plain,
                collections.OrderedDict(),
                collections.defaultdict(int),
                collections.Counter(),
                collections.ChainMap({}),
                collections.deque([0]),
                frozenset(),
                range(2),
                bytes(2),
                outside,
            )
            for target in targets:
                for i in range(1):
                    try:
                        target[0] = 1
                    except TypeError as exc:
                        refused.append(str(exc))
                    try:
                        del target[0]
                    except TypeError as exc:
                        refused.append(str(exc))
            return refused, [dict(t) for t in targets[2:6]], list(targets[6])
        """

    class Outside:
        """No _guarded_writes: an object from outside that takes item writes."""

        def __init__(self) -> None:
            self.items: dict[object, object] = {}

        def __setitem__(self, key: object, value: object) -> None:
            self.items[key] = value

        def __delitem__(self, key: object) -> None:
            del self.items[key]

    outside = Outside()
    refused, mappings, deque = run(source, outside=outside)

    # Two refusals from each: the write and the delete. Plain's class is a user class,
    # which the guard lets through, as Python then refuses a class's items.
    assert refused.count(REFUSAL) == 2 * 10
    assert sum("'type' object does not support item" in r for r in refused) == 2
    assert mappings == [{}, {}, {}, {}] and deque == [0]
    assert outside.items == {}


@pytest.mark.parametrize(
    "source",
    [
        "def main():\n    return sorted(vars())",
        "def main():\n    return sorted(locals())",
        "def main():\n    return dir()",
        "def main():\n    return globals()",
        "def main():\n    gen = (i for i in (0,))\n    return getattr(gen, 'gi' + '_frame')",
        "def main():\n    x = [0]\n    for i in (0,):\n"
        "        x[i] = getattr(x, '_writes_to_x', 1)\n    return x",
        "def main():\n    x = [0]\n    for i in (0,):\n        x[i] = 1\n"
        "    return getattr(main, '_' + '_code__').co_varnames",
    ],
)
def test_the_names_the_transform_adds_are_out_of_reach(source: str) -> None:
    try:
        outcome = run(source)
    except (NameError, AttributeError, TypeError) as exc:
        outcome = type(exc)
    # Refused or absent: never a value that shows or holds what the transform added.
    assert "_writes_to_" not in repr(outcome) and "_loop_writes_" not in repr(outcome)
    assert outcome in (NameError, AttributeError, TypeError, [0], [1]), outcome


# Functions nested ``DEPTH`` deep, each with a loop writing to a parameter, over a body
# of plain assignments up to the publish limit's size (256 KiB, the server's default).
DEPTH = 90
PUBLISH_LIMIT = 256 * 1024


def deep_source() -> str:
    lines = []
    for depth in range(DEPTH):
        pad = "  " * depth
        lines += [f"{pad}def f{depth}(a):", f"{pad}  for i in a:", f"{pad}    a[i] = i"]
    pad = "  " * DEPTH
    body = f"{pad}b = [a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a]"
    size = sum(len(line) + 1 for line in lines) + len("def main():\n  return 1\n")
    lines += [body] * ((PUBLISH_LIMIT - size) // (len(body) + 1))
    return "\n".join([*lines, "def main():", "  return 1", ""])


COMPILE_IN_A_CHILD = """\
import sys
from toolvault.sandbox._child import compile_job
program = compile_job(sys.stdin.read(), "deep")
print(program.error_type or "compiled")
"""


def test_compiling_what_publish_accepts_costs_the_server_no_more_than_checking_it() -> None:
    source = deep_source()
    assert len(source.encode()) <= PUBLISH_LIMIT
    started = time.monotonic()
    checked = check_source(source, entrypoint="main", allowed_imports=())
    assert checked.ok, checked.issues
    checking_s = time.monotonic() - started
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", COMPILE_IN_A_CHILD],
            input=source,
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        )
    except subprocess.TimeoutExpired:
        compiled = "still compiling after 15 s"
    else:
        compiled = done.stdout.strip()
    compiling_s = time.monotonic() - started
    # The compile the server runs may cost what the check did, times a constant (with
    # room for the child's start and a busy machine), never minutes.
    assert compiled == "compiled", (compiled, checking_s)
    assert compiling_s < 10 + 20 * checking_s, (compiling_s, checking_s)
