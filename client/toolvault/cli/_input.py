"""What the commands read: the command line, option values, files, `--args`, TLS options.

Every problem found here is a `UsageError`, or a `BadCommandLine` from the parser, which
the CLI reports with exit code 2 before (or without) talking to a server.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

from toolvault.client import TLS, ExecutionStatus

__all__ = [
    "BadCommandLine",
    "Commands",
    "Parser",
    "UsageError",
    "arguments",
    "execution_status",
    "positive_int",
    "read_json",
    "read_text",
    "timestamp",
    "tls",
]


class UsageError(Exception):
    """A problem with the command line or its files, found before or without the server."""


class BadCommandLine(Exception):
    """argparse refused the command line; raised so that --json can shape the report."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    """A parser, and each of its commands' parsers, raising errors instead of exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise `BadCommandLine` (argparse's own version prints the usage and exits 2)."""
        raise BadCommandLine(self, message)


# What `add_subparsers` returns, which each command group adds its commands to; a string,
# because argparse's class is generic only in its type stubs.
Commands: TypeAlias = "argparse._SubParsersAction[Parser]"


def positive_int(text: str) -> int:
    """Parse an option that must be a positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text}")
    return value


def timestamp(text: str) -> datetime:
    """Parse an ISO 8601 time; a naive one means UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text}") from error
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def execution_status(text: str) -> ExecutionStatus:
    """Parse an execution status name, in any case."""
    try:
        return ExecutionStatus(text)
    except ValueError as error:
        # argparse would replace a ValueError's message with a generic one.
        raise argparse.ArgumentTypeError(str(error)) from error


def read_text(path: str) -> str:
    """Return a UTF-8 file's text; "-" reads standard input."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise UsageError(f"cannot read {path}: not UTF-8 text ({error.reason})") from error


def read_json(path: str) -> Any:
    """Return the JSON value in a file."""
    return _parse_json(read_text(path), path)


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{source} is not valid JSON: {error}") from error


def arguments(text: str) -> dict[str, Any]:
    """Parse `--args`: JSON text, or "@FILE" naming a file that holds it."""
    value = read_json(text[1:]) if text.startswith("@") else _parse_json(text, "--args")
    if not isinstance(value, dict):
        raise UsageError(f"--args must be a JSON object, not {type(value).__name__}")
    return value


def tls(args: argparse.Namespace) -> TLS | None:
    """Return how to reach the server over TLS, from the global options; None: plaintext."""
    if not (args.tls or args.ca_cert or args.client_cert):
        return None
    if bool(args.client_cert) != bool(args.client_key):
        raise UsageError("--client-cert and --client-key go together")
    try:
        return TLS.from_files(args.ca_cert, args.client_cert, args.client_key)
    except OSError as error:
        raise UsageError(f"cannot read a TLS file: {error}") from error
