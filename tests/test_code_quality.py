"""Lint, formatting, types and import layering hold for the whole tree.

mypy and import-linter see the packages through a link tree that mirrors the installed
layout (``toolvault/server`` -> ``server/``, ...), since the source folders are mapped to
``toolvault.*`` names by the build and not by their location.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PACKAGES = {"client": ROOT / "client", "server": ROOT / "server", "sandbox": ROOT / "sandbox"}


@pytest.fixture(scope="module")
def link_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("links")
    (root / "toolvault").mkdir()
    for name, path in PACKAGES.items():
        (root / "toolvault" / name).symlink_to(path)
    (root / "toolvault" / "v1").symlink_to(ROOT / "proto" / "toolvault" / "v1")
    return root


def run(args: list[str], **kwargs: object) -> None:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing() -> None:
    run([str(BIN / "ruff"), "check", "."])


def test_code_is_formatted() -> None:
    run([str(BIN / "ruff"), "format", "--check", "."])


@pytest.mark.timeout(600)
def test_mypy_strict_passes(link_tree: Path) -> None:
    packages = [arg for name in [*PACKAGES, "v1"] for arg in ("-p", f"toolvault.{name}")]
    env = {**os.environ, "MYPYPATH": str(link_tree)}
    run([str(BIN / "mypy"), "--cache-dir", str(link_tree / ".mypy_cache"), *packages], env=env)


def test_imports_follow_the_layering(link_tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(link_tree)}
    run([str(BIN / "lint-imports"), "--no-cache"], env=env)
