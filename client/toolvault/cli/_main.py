"""The entry point: the global options, the command groups, errors and exit codes.

Exit codes:
  0  success
  1  the function failed (its status is not OK), a tool call's result is an error, or
     the server failed the request
     (INTERNAL, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...)
  2  usage error (bad options, unreadable file, --args not a JSON object), or the
     request was rejected (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
     FAILED_PRECONDITION, PERMISSION_DENIED, UNAUTHENTICATED)
  3  the server cannot be reached (UNAVAILABLE)

With --json (before or after the command), an error is one JSON object on stderr:
{"error": MESSAGE, "code": CODE}, CODE being the gRPC status code's name (NOT_FOUND,
UNAVAILABLE, ...) or USAGE for a problem with the command line or its files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from toolvault.cli import _access, _agents, _functions, _runs, _secrets, _server
from toolvault.cli._input import BadCommandLine, Parser, UsageError, positive_int, tls
from toolvault.client import (
    DEFAULT_MAX_ARGS_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_FILES_BYTES,
    DEFAULT_MAX_SOURCE_BYTES,
    DEFAULT_TARGET,
    AlreadyExists,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ToolvaultError,
    Unauthenticated,
    Unavailable,
)

__all__ = ["main"]

_REJECTED = (
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
)
_EXIT_CODES = "exit codes:" + (__doc__ or "").partition("Exit codes:")[2]
# The "code" of an error under --json that no server reported: the command line is wrong.
_USAGE = "USAGE"
_JSON_HELP = "print machine-readable JSON"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`) and return its exit code."""
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader went away (`toolvault ... | head`): stop quietly, as Unix tools do,
        # with stdout on /dev/null so that the interpreter's last flush fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(argv)
    except BadCommandLine as error:
        # Without a parsed command line, only the words themselves say if JSON was asked for.
        if "--json" in argv:
            return _fail(error.message, 2, _USAGE, as_json=True)
        error.parser.print_usage(sys.stderr)
        print(f"{error.parser.prog}: error: {error.message}", file=sys.stderr)
        return 2
    try:
        if args.local is not None:
            exit_code = int(args.local(args))
        else:
            client = Client(
                args.server,
                api_key=args.api_key,
                tls=tls(args),
                max_args_bytes=args.max_args_bytes,
                max_source_bytes=args.max_source_bytes,
                max_files=args.max_files,
                max_file_bytes=args.max_file_bytes,
                max_files_bytes=args.max_files_bytes,
            )
            with client:
                exit_code = int(args.call(client, args))
        sys.stdout.flush()  # here, where a closed pipe can still be told apart
        return exit_code
    except UsageError as error:
        return _fail(str(error), 2, _USAGE, as_json=args.json)
    except Unavailable as error:
        message = f"cannot reach the server at {args.server}: {error}"
        return _fail(message, 3, error.code.name, as_json=args.json)
    except ToolvaultError as error:
        exit_code = 2 if isinstance(error, _REJECTED) else 1
        # The arguments were given as --args, whatever the request field that carried them.
        message = error.naming_arguments("--args")
        return _fail(message, exit_code, error.code.name, as_json=args.json)


def _fail(message: str, exit_code: int, code: str, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": message, "code": code}, ensure_ascii=False), file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)
    return exit_code


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="toolvault",
        description="Publish, run and inspect sandboxed Python functions on a toolvault server.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=os.environ.get("TOOLVAULT_SERVER", DEFAULT_TARGET),
        help=f"the server to talk to (env TOOLVAULT_SERVER, default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get("TOOLVAULT_API_KEY"),
        help="the API key to send, for a server with --auth required (env TOOLVAULT_API_KEY)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=bool(os.environ.get("TOOLVAULT_TLS")),
        help="connect over TLS, trusting the system's roots (env TOOLVAULT_TLS=1)",
    )
    for option, what in (
        ("ca-cert", "the CA certificate that signed the server's; implies --tls"),
        ("client-cert", "a client certificate, for mutual TLS; implies --tls"),
        ("client-key", "the client certificate's key"),
    ):
        env = "TOOLVAULT_" + option.upper().replace("-", "_")
        parser.add_argument(
            f"--{option}",
            metavar="PEM",
            default=os.environ.get(env),
            help=f"{what} (env {env})",
        )
    for option, what, limit in (
        ("max-args-bytes", "--args", DEFAULT_MAX_ARGS_BYTES),
        ("max-source-bytes", "sources to publish", DEFAULT_MAX_SOURCE_BYTES),
        ("max-files", "numbers of --file", DEFAULT_MAX_FILES),
        ("max-file-bytes", "files of --file", DEFAULT_MAX_FILE_BYTES),
        ("max-files-bytes", "--file files together", DEFAULT_MAX_FILES_BYTES),
    ):
        env = "TOOLVAULT_" + option.upper().replace("-", "_")
        parser.add_argument(
            f"--{option}",
            type=positive_int,
            metavar="N",
            # A string default goes through `type` too, so a bad variable is a usage error.
            default=os.environ.get(env, str(limit)),
            help=f"refuse larger {what} before sending, as the server would; set the "
            f"server's limit if it is not the default (env {env}, default {limit})",
        )
    parser.add_argument("--json", action="store_true", help=_JSON_HELP)
    parser.set_defaults(local=None)
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    # In this order in --help: running things first, then functions, runs, agents, access.
    _server.add_commands(commands)
    _functions.add_commands(commands)
    _runs.add_commands(commands)
    _agents.add_commands(commands)
    _access.add_commands(commands)
    _secrets.add_commands(commands)
    _server.add_mcp_command(commands)
    _accept_json_after(parser)
    return parser


def _accept_json_after(parser: argparse.ArgumentParser) -> None:
    """Let every command take `--json` too, as in `toolvault invoke --json add`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                # SUPPRESS: left out, it does not reset a --json given before the command.
                command.add_argument(
                    "--json", action="store_true", default=argparse.SUPPRESS, help=_JSON_HELP
                )
                _accept_json_after(command)
