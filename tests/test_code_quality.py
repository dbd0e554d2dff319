"""Lint, formatting, types and import layering hold for the whole tree.

Each check is the plain command a developer types in the checkout (its configuration is in
pyproject.toml), so a red test here reproduces with the same command by hand.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*args: str) -> None:
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing() -> None:
    run("ruff", "check")


def test_code_is_formatted() -> None:
    run("ruff", "format", "--check")


@pytest.mark.timeout(600)
def test_mypy_strict_passes() -> None:
    run("mypy")


def test_imports_follow_the_layering() -> None:
    run("lint-imports", "--no-cache")


@pytest.mark.timeout(300)
def test_no_block_of_six_lines_is_repeated() -> None:
    run("pylint", "proto", "client", "server", "sandbox", "tests", "bench", "examples")


def import_graph() -> dict[str, set[str]]:
    """Every ``toolvault`` module and the ``toolvault`` modules it imports, read with ``ast``.

    All imports count: those under ``if TYPE_CHECKING:`` and inside functions too, since a
    cycle closed through them is still a cycle of the design. ``from pkg import name``
    imports the submodule ``pkg.name`` when there is one, else ``pkg`` itself.
    """
    modules: dict[str, Path] = {}
    for source_root in ("proto", "client", "server", "sandbox"):
        for path in (ROOT / source_root / "toolvault").rglob("*.py"):
            parts = path.relative_to(ROOT / source_root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    imported.add(submodule if submodule in modules else base)
        graph[name] = {module for module in imported if module in modules and module != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as the list of its modules (first one repeated at the end), or []."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(module: str) -> list[str]:
        path.append(module)
        on_path.add(module)
        for imported in sorted(graph[module]):
            if imported in on_path:
                return [*path[path.index(imported) :], imported]
            if imported not in done and (cycle := visit(imported)):
                return cycle
        path.pop()
        on_path.discard(module)
        done.add(module)
        return []

    for module in sorted(graph):
        if module not in done and (cycle := visit(module)):
            return cycle
    return []


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()
    assert "toolvault.server.app" in graph, "the graph found no server modules"
    cycle = find_cycle(graph)
    assert cycle == [], "import cycle: " + " -> ".join(cycle)
