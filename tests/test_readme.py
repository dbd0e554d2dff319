"""The README's examples run as written, in order, against a fresh server.

The files the tour uses (`add.py`, `div.py`, `bad.py`, `agents.yaml`) are taken from the
README's own code blocks; every `$ ` line of its console blocks runs in one directory,
one after the other, and what it prints must be what the README shows. Times, execution
ids and durations differ from run to run, so they are masked, and runs of spaces are
folded (a longer duration widens a table's column); hashes, versions, results and
messages must match byte for byte. Python blocks that need nothing beyond toolvault run
too; the ones that talk to a model (`openai`) cannot run here and are left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# A file's block follows a line that names it, e.g. "and `div.py`, which fails for ...:".
NAMED_FILE = re.compile(r"`([\w.]+\.py)`[^\n]*:\n\n```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MASKS = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"), "<TIME>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<ID>"),
    (re.compile(r"(?<=\s)\d+\.\d(?=\s|$)"), "<MS>"),
)
DEFAULT_ADDRESS = "127.0.0.1:50051"


def readme_files() -> dict[str, str]:
    """The files the README shows by name: the tour's sources and agents.yaml."""
    files = {name: text for name, text in NAMED_FILE.findall(README)}
    for language, text in BLOCK.findall(README):
        if language == "yaml" and text.startswith("# agents.yaml"):
            files["agents.yaml"] = text
    return files


def console_steps() -> list[tuple[str, str]]:
    """Each `$ ` command of the README's console blocks, with the output shown for it."""
    steps: list[tuple[str, str]] = []
    for language, text in BLOCK.findall(README):
        if language != "console":
            continue
        for line in text.splitlines(keepends=True):
            if line.startswith("$ "):
                steps.append((line[2:].strip(), ""))
            else:
                steps[-1] = (steps[-1][0], steps[-1][1] + line)
    return steps


def python_examples() -> list[str]:
    """The README's Python programs that run against a server with nothing but toolvault."""
    return [
        text
        for language, text in BLOCK.findall(README)
        if language == "python" and "Client(" in text and "openai" not in text
    ]


def normalized(text: str) -> list[str]:
    for pattern, mask in MASKS:
        text = pattern.sub(mask, text)
    return [" ".join(line.split()) for line in text.strip("\n").splitlines()]


def test_the_readme_shows_its_tour_files_and_agents_file() -> None:
    assert sorted(readme_files()) == ["add.py", "agents.yaml", "bad.py", "div.py"]


def test_the_readme_examples_run_as_written_in_order(server: str, tmp_path: Path) -> None:
    for name, text in readme_files().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TOOLVAULT_SERVER": server,
    }
    steps = console_steps()
    assert any(command.startswith("toolvault agents call") for command, _ in steps)
    for command, expected in steps:
        shown = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        ).stdout
        assert normalized(shown) == normalized(expected), f"$ {command}\n{shown}"
    for program in python_examples():
        ran = subprocess.run(
            [sys.executable, "-c", program.replace(DEFAULT_ADDRESS, server)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, f"{program}\n{ran.stderr}"


@pytest.mark.parametrize("line", ["pip install 'toolvault[", "pip install toolvault gives"])
def test_the_readme_installs_from_the_checkout(line: str) -> None:
    # A newcomer reads the README in a clone, where the package is the current directory.
    assert line not in README


def test_the_readme_says_how_grpcurl_sends_a_key() -> None:
    assert 'grpcurl -plaintext -H "authorization: Bearer $TOOLVAULT_API_KEY"' in README
