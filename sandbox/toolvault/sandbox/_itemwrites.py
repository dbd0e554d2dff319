"""The write guard's fast paths for item writes: a list test at each, hoisted from loops.

RestrictedPython compiles ``name[key] = value`` (and ``del name[key]``) to
``_write_(name)[key] = value``. The write guard (``full_write_guard``) returns a list or a
dict unchanged, so the compiler here emits ``(name if _type_(name) is _list_ else
_write_(name))[key] = value`` (``list_write``): the guard's call is most of the cost of a
loop that fills a list.

The test itself still makes a loop like a prime sieve's inner one half as slow again, so
``hoist_write_guards`` takes the guard out of loops where its answer cannot change: in a
function, before a ``for`` or ``while`` loop, for a name that

- is a local of the function, surely bound before the loop (a parameter, the target of
  an assignment earlier in the same or an enclosing block, of an enclosing ``for`` or
  ``with`` whose body holds the loop), never deleted (``del name``,
  ``except ... as name``) and never bound by a nested scope (a ``nonlocal``, a walrus in
  a generator expression run later, a nested ``def``'s parameter: any binding at all
  there counts, however harmless);
- is bound nowhere inside the loop (its header, body and ``else``, nested scopes
  included).

Such a name holds the same object for the whole loop: a function's fast locals change
only through its own bindings and those of closures, and user code reaches no frame to
write them through. Right before the loop ``_writes_to_<name> = _loop_writes_(name)``
holds the object itself if its type is exactly ``list`` or ``dict`` (what the guard
would return at every write: such an object's type cannot change, ``__class__`` cannot be
assigned to or from an immutable type), and otherwise a stand-in that calls the write
guard at every write and writes to what it returns, as before (``_globals``). The loop's
writes to the name write there. The guard then runs after the key is evaluated rather
than before; it reads only the object's type and whether it has ``_guarded_writes``, so
nothing else changes. The names added start with "_": user code can neither read nor
bind them.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterable, Iterator

_HOISTED_PREFIX = "_writes_to_"
_NESTED_SCOPES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.Lambda,
    ast.ClassDef,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)
_LOOPS = (ast.For, ast.While)


def list_write(target: str, guarded: ast.expr) -> ast.IfExp:
    """``target if _type_(target) is _list_ else guarded``: what an item write writes to."""
    is_list = ast.Compare(
        ast.Call(ast.Name("_type_", ast.Load()), [ast.Name(target, ast.Load())], []),
        [ast.Is()],
        [ast.Name("_list_", ast.Load())],
    )
    return ast.IfExp(is_list, ast.Name(target, ast.Load()), guarded)


def hoist_write_guards(module: ast.Module) -> None:
    """Take the write guard out of the loops of every function in ``module``."""
    # Reading the whole module is the costly part: only for a loop with writes, once.
    bindings = functools.cache(functools.partial(_Bindings, module))
    for function in list(_functions(module.body)):
        arguments = function.args
        parameters = {
            argument.arg
            for argument in (
                *arguments.posonlyargs,
                *arguments.args,
                *arguments.kwonlyargs,
                *(a for a in (arguments.vararg, arguments.kwarg) if a is not None),
            )
        }
        never = functools.partial(_never_hoisted, bindings, function)
        function.body = _hoist_block(function.body, parameters, never)


def _never_hoisted(
    bindings: Callable[[], _Bindings],
    function: ast.FunctionDef | ast.AsyncFunctionDef,
    loop: ast.For | ast.While,
) -> frozenset[str]:
    """The names whose writes in ``loop`` of ``function`` keep the write guard."""
    table = bindings()
    return table.unstable[function] | table.bound[loop]


def _functions(body: list[ast.stmt]) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The functions defined in ``body``, at any depth (a ``def`` is always a statement)."""
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            yield statement
            yield from _functions(statement.body)
        elif isinstance(statement, ast.ClassDef):
            yield from _functions(statement.body)
        for owner, field in _blocks(statement):
            yield from _functions(getattr(owner, field))


class _Bindings:
    """What each function makes unstable and each loop binds, from one pass over a module.

    unstable[f]: the names ``f`` (or anything in it) deletes, unbinds at the end of an
    ``except ... as``, declares global or nonlocal, or binds in a nested scope.
    bound[loop]: every name the loop or anything in it binds, in any scope.
    One bottom-up pass: walking each function and loop on its own would cost the
    server time quadratic in how deep they nest.
    """

    def __init__(self, module: ast.Module) -> None:
        self.unstable: dict[ast.AST, frozenset[str]] = {}
        self.bound: dict[ast.AST, frozenset[str]] = {}
        self._visit(module)

    def _visit(self, node: ast.AST) -> tuple[set[str], set[str], set[str]]:
        """The names bound in ``node``'s subtree, unsettled in it, bound in its nested scopes."""
        bound, unsettled, nested = set(_binds(node)), set(_unsettles(node)), set()
        for child in ast.iter_child_nodes(node):
            child_bound, child_unsettled, child_nested = self._visit(child)
            bound |= child_bound
            unsettled |= child_unsettled
            nested |= child_bound if isinstance(child, _NESTED_SCOPES) else child_nested
        if isinstance(node, _LOOPS):
            self.bound[node] = frozenset(bound)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self.unstable[node] = frozenset(unsettled | nested)
        return bound, unsettled, nested


def _unsettles(node: ast.AST) -> tuple[str, ...]:
    """The names ``node`` itself deletes, unbinds or declares global or nonlocal."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Del):
        return (node.id,)
    if isinstance(node, ast.ExceptHandler) and node.name is not None:
        return (node.name,)  # unbound when the handler ends
    if isinstance(node, ast.Global | ast.Nonlocal):
        return tuple(node.names)
    return ()


def _binds(node: ast.AST) -> tuple[str, ...]:
    """The names ``node`` itself binds, in whatever scope."""
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
        return (node.id,)
    if isinstance(node, ast.arg):
        return (node.arg,)
    if isinstance(node, ast.alias):
        return (node.asname or node.name.partition(".")[0],)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return (node.name,)
    if isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar):
        return () if node.name is None else (node.name,)
    if isinstance(node, ast.MatchMapping):
        return () if node.rest is None else (node.rest,)
    if isinstance(node, ast.Global | ast.Nonlocal):
        return tuple(node.names)
    return ()


def _hoist_block(
    body: list[ast.stmt], bound: set[str], never: Callable[[ast.For | ast.While], frozenset[str]]
) -> list[ast.stmt]:
    """``body`` with the write guard taken out of its loops, outermost first.

    Args:
        body: A block of statements in a function's own scope.
        bound: The names surely bound when the block starts.
        never: The names a loop of the block may not hoist (_never_hoisted).
    """
    bound = set(bound)
    hoisted: list[ast.stmt] = []
    for statement in body:
        if isinstance(statement, _LOOPS):
            hoisted += _hoist_loop(statement, bound, never)
        for owner, field in _blocks(statement):
            inner = bound
            if field == "body" and isinstance(owner, ast.For):
                inner = bound | set(_assigned_names([owner.target]))
            elif field == "body" and isinstance(owner, ast.With):
                named = (item.optional_vars for item in owner.items if item.optional_vars)
                inner = bound | set(_assigned_names(named))
            setattr(owner, field, _hoist_block(getattr(owner, field), inner, never))
        hoisted.append(statement)
        if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            bound.update(_assigned_names(targets))
    return hoisted


def _hoist_loop(
    loop: ast.For | ast.While,
    bound: set[str],
    never: Callable[[ast.For | ast.While], frozenset[str]],
) -> list[ast.stmt]:
    """Make ``loop``'s writes to names it may hoist write to hoisted targets.

    Returns:
        The assignments of those targets, to go right before the loop.
    """
    writes = [
        (node, name)
        for node in _own_scope(loop)
        if isinstance(node, ast.Subscript) and (name := _written_name(node.value))
    ]
    if not writes:
        return []
    names = bound - never(loop)
    hoisted: set[str] = set()
    for node, name in writes:
        if name in names:
            node.value = ast.copy_location(ast.Name(_HOISTED_PREFIX + name, ast.Load()), node.value)
            hoisted.add(name)
    assignments: list[ast.stmt] = []
    for name in sorted(hoisted):
        assignment = ast.Assign(
            [ast.Name(_HOISTED_PREFIX + name, ast.Store())],
            ast.Call(ast.Name("_loop_writes_", ast.Load()), [ast.Name(name, ast.Load())], []),
        )
        assignments.append(ast.fix_missing_locations(ast.copy_location(assignment, loop)))
    return assignments


def _written_name(write: ast.expr) -> str | None:
    """The name ``write`` writes items of, if it is what list_write makes of the guard."""
    if isinstance(write, ast.IfExp) and isinstance(write.body, ast.Name):
        name = write.body.id
        guarded = ast.Call(ast.Name("_write_", ast.Load()), [ast.Name(name, ast.Load())], [])
        if ast.dump(write) == ast.dump(list_write(name, guarded)):
            return name
    return None


def _own_scope(node: ast.AST) -> Iterator[ast.AST]:
    """``node`` and what is in it, but not what is inside nested scopes."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack += (c for c in ast.iter_child_nodes(current) if not isinstance(c, _NESTED_SCOPES))


def _blocks(statement: ast.stmt) -> list[tuple[ast.AST, str]]:
    """Where the statement lists directly in ``statement`` are (none of a nested scope)."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return []
    # A try's handlers and a match's cases hold blocks of their own.
    owners = [statement, *getattr(statement, "handlers", ()), *getattr(statement, "cases", ())]
    return [
        (owner, field)
        for owner in owners
        for field in ("body", "orelse", "finalbody")
        if isinstance(getattr(owner, field, None), list)
    ]


def _assigned_names(targets: Iterable[ast.expr]) -> Iterator[str]:
    """The plain names an assignment to ``targets`` binds, unpacking included."""
    for target in targets:
        if isinstance(target, ast.Name):
            yield target.id
        elif isinstance(target, ast.Tuple | ast.List):
            yield from _assigned_names(target.elts)
        elif isinstance(target, ast.Starred):
            yield from _assigned_names([target.value])
