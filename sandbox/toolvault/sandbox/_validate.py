"""Check published source before it is stored: syntax, restrictions, imports, entrypoint.

check_source reports every problem it finds, each with its line and column, as values:
bad source is the expected case, not an exception. The compile policy and the import rule
defined here are the ones the sandbox process enforces at run time, so source that passes
the check compiles and imports there too.
"""

import ast
import io
import keyword
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from RestrictedPython.transformer import RestrictingNodeTransformer

from ._itemwrites import hoist_write_guards, list_write


@dataclass(frozen=True)
class SourceIssue:
    """One problem found in published source.

    Attributes:
        message: What is wrong, e.g. ``"import of 'os' is not allowed (allowed: ...)"``.
        line: 1-based line, or None when the problem has no position.
        column: 1-based column (in characters), or None.
    """

    message: str
    line: int | None
    column: int | None


@dataclass(frozen=True)
class CheckedSource:
    """The outcome of check_source.

    Attributes:
        issues: Every problem found, in source order within each kind of check.
        docstring: The entrypoint's docstring, cleaned like inspect.cleandoc; None if none.
    """

    issues: tuple[SourceIssue, ...]
    docstring: str | None

    @property
    def ok(self) -> bool:
        """Whether the source may be stored and run."""
        return not self.issues


class RestrictingTransformer(RestrictingNodeTransformer):
    """RestrictedPython's policy, allowing async functions and annotated names.

    RestrictedPython forbids ``async def``, ``await`` and annotated assignments only
    because it has not reviewed them; they reach nothing its guards protect, tools that
    await are common, and dataclasses need annotated fields. It also keeps each error's
    node. ``async for`` and ``async with`` stay forbidden: RestrictedPython does not guard their
    iteration and unpacking the way it guards ``for`` and ``with``. Item writes get the
    write guard's fast paths (``_itemwrites``); ``hoist=False`` leaves out the one that
    takes it out of loops, which only makes the code faster.
    """

    def __init__(
        self,
        errors: list[str] | None = None,
        warnings: list[str] | None = None,
        used_names: dict[str, bool] | None = None,
        *,
        hoist: bool = True,
    ) -> None:
        super().__init__(errors, warnings, used_names)
        self.error_nodes: list[tuple[ast.AST, str]] = []
        # False where only the errors count (check_source): the hoisting finds none.
        self._hoist = hoist

    def error(self, node: ast.AST, info: str) -> None:
        """Record an error; RestrictedPython's own record keeps only the line."""
        super().error(node, info)
        self.error_nodes.append((node, info))

    def visit_AsyncFunctionDef(
        self, node: ast.AsyncFunctionDef
    ) -> ast.AST | Iterable[ast.AST] | None:
        """Check an ``async def`` exactly like a ``def``; the two have the same fields."""
        return self.visit_FunctionDef(node)  # type: ignore[arg-type]

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        """Allow an annotated assignment to a plain name, as dataclass fields need.

        The annotation is an expression checked like any other; an annotated attribute or
        item (``self.x: int = 1``) stays forbidden, as RestrictedPython forbids all of them.
        """
        if not isinstance(node.target, ast.Name):
            self.error(node, "annotated assignments are allowed to plain names only")
        return self.node_contents_visit(node)

    def visit_Await(self, node: ast.Await) -> ast.AST:
        """Allow ``await``; its operand is checked like any expression."""
        return self.node_contents_visit(node)

    def visit_Module(self, node: ast.Module) -> ast.AST | Iterable[ast.AST] | None:
        """Transform the module as RestrictedPython does, then take the write guard out of loops."""
        new = super().visit_Module(node)
        if isinstance(new, ast.Module) and self._hoist and not self.errors:
            hoist_write_guards(new)
        return new

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST | Iterable[ast.AST] | None:
        """Guard item writes as RestrictedPython does, skipping the guard's call for a list.

        ``name[key] = value`` becomes ``(name if _type_(name) is _list_ else
        _write_(name))[key] = value`` (``_itemwrites``): the write guard returns a list
        unchanged, and the call it saves is most of the cost of a loop that fills a
        list. Only for a plain name, which can be read twice without running anything.
        """
        new = super().visit_Subscript(node)
        if (
            isinstance(new, ast.Subscript)
            and isinstance(new.value, ast.Call)
            and isinstance(new.value.func, ast.Name)
            and new.value.func.id == "_write_"
            and len(new.value.args) == 1
            and isinstance(target := new.value.args[0], ast.Name)
        ):
            guarded = new.value
            new.value = ast.fix_missing_locations(
                ast.copy_location(list_write(target.id, guarded), guarded)
            )
        return new

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST | Iterable[ast.AST] | None:
        """Keep ``name op= value`` as it is, checked like RestrictedPython checks it.

        RestrictedPython rewrites it to ``name = _inplacevar_(op, name, value)`` for a hook
        that applies the operator, which is all the runtime's hook did: the same operation
        without a Python call per step. Attributes and items stay forbidden.
        """
        if isinstance(node.target, ast.Name):
            return self.node_contents_visit(node)
        return super().visit_AugAssign(node)


# Submodules of allowed packages that are not allowed with them.
_DENIED_MODULES = frozenset(
    {
        # A command-line program: its main() opens the files named in sys.argv.
        "json.tool",
        # A server (egress's http): its handlers read and list files and run CGI programs.
        "http.server",
    }
)


# What a version that declares secrets imports them from: ``from toolvault import secrets``
# hands out the call's values as a read-only mapping (``_globals``); nothing else of the
# real package of that name is ever importable.
SECRETS_MODULE = "toolvault"
SECRETS_ATTRIBUTE = "secrets"


def secrets_import_problem(
    module: str, names: Collection[str] | None, declares_secrets: bool
) -> str | None:
    """Why importing ``module`` (``SECRETS_MODULE`` or below it) is not allowed, or None.

    Args:
        module: The dotted module name, starting with SECRETS_MODULE.
        names: What ``from module import ...`` imports; empty or None for ``import module``.
        declares_secrets: Whether the version declares secrets.
    """
    if not declares_secrets:
        return (
            f"import of {module!r} is not allowed: only a version that declares secrets "
            f"may import it (from {SECRETS_MODULE} import {SECRETS_ATTRIBUTE})"
        )
    if module != SECRETS_MODULE or any(name != SECRETS_ATTRIBUTE for name in names or ()):
        return (
            f"import of {module!r} is not allowed: {SECRETS_MODULE} holds only "
            f"{SECRETS_ATTRIBUTE} (from {SECRETS_MODULE} import {SECRETS_ATTRIBUTE})"
        )
    return None


def import_problem(module: str | None, level: int, allowed: Collection[str]) -> str | None:
    """Why importing ``module`` is not allowed, or None if it is.

    Args:
        module: The dotted module name, as in ``import a.b`` or ``from a.b import c``.
        level: The number of leading dots of a relative import.
        allowed: The top-level modules that may be imported.
    """
    if level:
        return "relative imports are not allowed"
    top, _, rest = (module or "").partition(".")
    if rest and any(part.startswith("_") for part in rest.split(".")):
        return f"import of {module!r} is not allowed: it is private"
    if module in _DENIED_MODULES:
        return f"import of {module!r} is not allowed"
    # __future__ imports are compiler directives; the module itself holds only flags.
    if top in allowed or top == "__future__":
        return None
    return f"import of {module!r} is not allowed (allowed: {', '.join(sorted(allowed)) or 'none'})"


def check_source(
    source: str,
    *,
    entrypoint: str,
    allowed_imports: Collection[str],
    filename: str = "<function>",
    secrets: bool = False,
) -> CheckedSource:
    """Find what keeps ``source`` from being stored and run; never raises for bad source.

    Checks syntax first and stops there if it is broken; otherwise reports, in this
    order, what RestrictedPython rejects, imports outside ``allowed_imports`` and
    problems with the entrypoint.

    Args:
        source: The module source.
        entrypoint: The module-level function that calls will run.
        allowed_imports: The top-level modules the source may import.
        filename: The name syntax errors give the source.
        secrets: Whether the version declares secrets, and so may import them
            (``from toolvault import secrets``).
    """
    try:
        # Compiling catches what parsing lets through, such as "return" outside a function.
        compile(source, filename, "exec", dont_inherit=True)
        tree = ast.parse(source, filename)
        policy = RestrictingTransformer(hoist=False)
        policy.visit(ast.parse(source, filename))
    except SyntaxError as exc:
        issue = SourceIssue(f"{type(exc).__name__}: {exc.msg}", exc.lineno, exc.offset)
        return CheckedSource(issues=(issue,), docstring=None)
    except (MemoryError, RecursionError):
        # What the parser, compiler and AST visitors raise for absurdly nested code.
        issue = SourceIssue("source is nested too deeply", None, None)
        return CheckedSource(issues=(issue,), docstring=None)

    lines = source_lines(source)
    issues = [_issue_at(lines, node, info) for node, info in policy.error_nodes]
    issues += sorted(
        (
            _issue_at(lines, node, why)
            for node, why in _import_problems(tree, allowed_imports, secrets)
        ),
        key=lambda issue: (issue.line or 0, issue.column or 0),
    )
    problem, docstring = _find_entrypoint(tree, entrypoint)
    if problem:
        issues.append(SourceIssue(problem, None, None))
    return CheckedSource(issues=tuple(issues), docstring=docstring)


def source_lines(source: str) -> list[str]:
    """The lines of ``source`` as Python's tokenizer counts them, each with its line end.

    ``str.splitlines`` would also split on form feeds, U+2028 and more, and so disagree
    with the line numbers of errors and tracebacks.
    """
    return io.StringIO(source, newline=None).readlines()


def _import_problems(
    tree: ast.AST, allowed: Collection[str], secrets: bool
) -> Iterator[tuple[ast.AST, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                problem = _problem(alias.name, 0, (), allowed, secrets)
                if problem:
                    yield alias, problem
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            problem = _problem(node.module, node.level, names, allowed, secrets)
            if problem:
                yield node, problem


def _problem(
    module: str | None,
    level: int,
    names: Collection[str],
    allowed: Collection[str],
    secrets: bool,
) -> str | None:
    if not level and (module or "").partition(".")[0] == SECRETS_MODULE:
        return secrets_import_problem(module or "", names, secrets)
    return import_problem(module, level, allowed)


def _find_entrypoint(tree: ast.Module, entrypoint: str) -> tuple[str | None, str | None]:
    """What is wrong with the entrypoint (or None), and its docstring (or None)."""
    if not entrypoint.isidentifier() or keyword.iskeyword(entrypoint):
        return f"entrypoint {entrypoint!r} is not a valid Python identifier", None
    if entrypoint.startswith("_"):
        return f"entrypoint {entrypoint!r} must not start with '_'", None
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    if entrypoint in functions:
        return None, ast.get_docstring(functions[entrypoint])
    found = ", ".join(functions) or "none"
    return f"no top-level function named {entrypoint!r} (top-level functions: {found})", None


def _issue_at(lines: list[str], node: ast.AST, message: str) -> SourceIssue:
    line: int | None = getattr(node, "lineno", None)
    offset: int | None = getattr(node, "col_offset", None)
    if line is None or offset is None or not 0 < line <= len(lines):
        return SourceIssue(message, line, None)
    # The AST counts columns in UTF-8 bytes; SyntaxError, and people, count characters.
    prefix = lines[line - 1].encode()[:offset].decode(errors="replace")
    return SourceIssue(message, line, len(prefix) + 1)
