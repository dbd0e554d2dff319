"""Helpers for the client tests: an address nobody listens on, and the CLI run in-process."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from toolvault.cli import main


@pytest.fixture
def closed_address() -> str:
    """A loopback address whose port was free a moment ago, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `toolvault ARGS...` in this process; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse exits on usage errors and --help
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
