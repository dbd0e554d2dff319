"""Lint, formatting, types and import layering hold for the whole tree.

Each check is the plain command a developer types in the checkout (its configuration is in
pyproject.toml), so a red test here reproduces with the same command by hand.
"""

from __future__ import annotations

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
