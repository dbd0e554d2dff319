"""The commands that run something here: serve, db upgrade, doctor, health, mcp, secrets rotate.

`serve`, `db upgrade`, `doctor` and `secrets rotate` hand over to `toolvault.server.cli`
(the `server` extra), and `mcp` to `toolvault.agent.mcp` (the `mcp` extra). Each is
imported inside its command only: the client must work without the extras, whose
dependencies (SQLAlchemy, RestrictedPython, the `mcp` package...) it does not need.
"""

from __future__ import annotations

import argparse

from toolvault.cli._input import Commands, UsageError, tls
from toolvault.cli._output import print_json
from toolvault.client import ToolvaultError, Unavailable, check_health

__all__ = ["add_commands", "add_mcp_command", "add_rotate_command"]


def add_commands(commands: Commands) -> None:
    """Add serve, health, db upgrade and doctor to the command line."""
    cmd = commands.add_parser("serve", help="run the server")
    cmd.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
    _add_storage_options(cmd)
    cmd.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve Prometheus /metrics on PORT"
    )
    cmd.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE:ATTR",
        help="load a plugin beside the installed ones (repeatable; env TOOLVAULT_PLUGINS)",
    )
    cmd.add_argument(
        "--auth",
        choices=("off", "required"),
        help="require an API key on every call but health (env TOOLVAULT_AUTH; default off)",
    )
    cmd.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain")
    cmd.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    cmd.add_argument(
        "--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA"
    )
    cmd.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow listening beyond loopback without --auth required and TLS",
    )
    cmd.set_defaults(local=_serve)

    cmd = commands.add_parser(
        "health",
        help="probe the server's gRPC health service; exit 0 if SERVING, 3 if unreachable, else 1",
    )
    cmd.add_argument("--service", default="", help="a service name; default: the server")
    cmd.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    cmd.set_defaults(local=_health)

    db_commands = commands.add_parser("db", help="manage the database").add_subparsers(
        metavar="COMMAND", required=True
    )
    cmd = db_commands.add_parser("upgrade", help="apply the database migrations")
    _add_storage_options(cmd)
    cmd.set_defaults(local=_db_upgrade)

    cmd = commands.add_parser("doctor", help="show which sandbox layers this host allows")
    cmd.set_defaults(local=_doctor)


def add_mcp_command(commands: Commands) -> None:
    """Add mcp to the command line."""
    cmd = commands.add_parser("mcp", help="serve an agent's tools over MCP on stdin/stdout")
    cmd.add_argument("--agent", required=True, metavar="NAME", help="the agent to serve")
    cmd.set_defaults(local=_mcp)


def add_rotate_command(commands: Commands) -> None:
    """Add rotate to the `secrets` commands."""
    cmd = commands.add_parser(
        "rotate",
        help="re-encrypt every secret with the first key of TOOLVAULT_SECRETS_KEY "
        "(on the server's database; then the old keys may go)",
    )
    _add_storage_options(cmd)
    cmd.set_defaults(local=_secrets_rotate)


def _add_storage_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--db", metavar="URL", help="database URL (default: the server's)")
    cmd.add_argument("--data-dir", metavar="DIR", help="directory for the server's files")


def _serve(args: argparse.Namespace) -> int:
    try:
        from toolvault.server.cli import serve
    except ModuleNotFoundError as error:
        raise _server_missing(error) from error
    return serve(
        listen=args.listen,
        db=args.db,
        data_dir=args.data_dir,
        metrics_port=args.metrics_port,
        plugins=tuple(args.plugin) if args.plugin else None,
        auth=args.auth,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        insecure=args.insecure,
    )


def _health(args: argparse.Namespace) -> int:
    # Every failure is a status on stdout, not an error: probes read the exit code only, and
    # any but 0 fails them; 3 for an unreachable server, as every other command says it.
    exit_code = 1
    try:
        status = check_health(
            args.server, service=args.service, tls=tls(args), timeout=args.timeout
        )
    except ToolvaultError as error:
        status = f"UNREACHABLE ({error.code.name}: {error.details})"
        if isinstance(error, Unavailable):
            exit_code = 3
    if args.json:
        print_json({"service": args.service, "status": status})
    else:
        print(status)
    return 0 if status == "SERVING" else exit_code


def _db_upgrade(args: argparse.Namespace) -> int:
    try:
        from toolvault.server.cli import db_upgrade
    except ModuleNotFoundError as error:
        raise _server_missing(error) from error
    return db_upgrade(db=args.db, data_dir=args.data_dir)


def _doctor(args: argparse.Namespace) -> int:
    try:
        from toolvault.server.cli import doctor
    except ModuleNotFoundError as error:
        raise _server_missing(error) from error
    return doctor(json_output=args.json)


def _secrets_rotate(args: argparse.Namespace) -> int:
    try:
        from toolvault.server.cli import secrets_rotate
    except ModuleNotFoundError as error:
        raise _server_missing(error) from error
    return secrets_rotate(db=args.db, data_dir=args.data_dir)


def _server_missing(error: ModuleNotFoundError) -> UsageError:
    return _missing("the server", "server", error)


def _missing(what: str, extra: str, error: ModuleNotFoundError) -> UsageError:
    # Both forms, as the README gives them: a newcomer often runs from a clone.
    return UsageError(
        f"{what} is not installed: pip install '.[{extra}]' from a checkout, or "
        f"'toolvault[{extra}]' from a package index ({error})"
    )


def _mcp(args: argparse.Namespace) -> int:
    try:
        from toolvault.agent.mcp import serve_mcp
    except ModuleNotFoundError as error:
        raise _missing("the MCP bridge", "mcp", error) from error
    return serve_mcp(
        args.server,
        args.agent,
        api_key=args.api_key,
        tls=tls(args),
        max_args_bytes=args.max_args_bytes,
    )
