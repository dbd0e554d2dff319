"""The `toolvault` command: the SDK on the command line, plus `serve`, `db upgrade`, `doctor`.

`toolvault agents ...` defines agents (from YAML or JSON files) and calls their tools;
`toolvault mcp` serves an agent's tools over MCP through the optional `mcp` extra.

Commands that talk to a server go through `Client`. `serve`, `db upgrade` and `doctor`
load the server package only when run, so the CLI works with just the client installed. `--json`
prints one JSON document per command with the SDK models' field names; otherwise lists
are aligned tables and single objects "key: value" lines.

Exit codes:
  0  success
  1  the function failed (its status is not OK), a tool call's result is an error, or
     the server failed the request
     (INTERNAL, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...)
  2  usage error (bad options, unreadable file, --args not a JSON object), or the
     request was rejected (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
     FAILED_PRECONDITION, PERMISSION_DENIED, UNAUTHENTICATED)
  3  the server cannot be reached (UNAVAILABLE)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toolvault.client._access_models import Role
from toolvault.client._agent_models import AgentSpec, RoutingStrategy, ToolSpec
from toolvault.client._client import DEFAULT_TARGET, TLS, Client, open_channel
from toolvault.client._models import ExecutionStatus
from toolvault.client.errors import (
    AlreadyExists,
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


class _UsageError(Exception):
    """A problem with the command line or its files, found before or without the server."""


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
    args = _parser().parse_args(argv)
    try:
        if args.local is not None:
            code = int(args.local(args))
        else:
            with Client(args.server, api_key=args.api_key, tls=_tls(args)) as client:
                code = int(args.call(client, args))
        sys.stdout.flush()  # here, where a closed pipe can still be told apart
        return code
    except _UsageError as error:
        return _fail(str(error), 2)
    except Unavailable as error:
        return _fail(f"cannot reach the server at {args.server}: {error}", 3)
    except ToolvaultError as error:
        return _fail(str(error), 2 if isinstance(error, _REJECTED) else 1)


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(local=None)
    commands = parser.add_subparsers(metavar="COMMAND", required=True)

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
        "health", help="probe the server's gRPC health service; exit 0 if SERVING, else 1"
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

    cmd = commands.add_parser("publish", help="publish a function version from a file")
    cmd.add_argument("name", help="the function's name")
    cmd.add_argument("file", help="the Python source file; - reads standard input")
    cmd.add_argument("--entrypoint", default="main", help="the function to call (main)")
    cmd.add_argument("--description", help="default: the entrypoint's docstring")
    cmd.add_argument("--timeout-ms", type=_positive_int, metavar="N")
    cmd.add_argument("--memory-mb", type=_positive_int, metavar="N")
    cmd.add_argument("--max-output-bytes", type=_positive_int, metavar="N")
    cmd.add_argument("--input-schema", metavar="FILE", help="JSON Schema of the arguments")
    cmd.add_argument("--output-schema", metavar="FILE", help="JSON Schema of the result")
    cmd.add_argument(
        "--allow-import",
        action="append",
        metavar="MODULE",
        help="a module the code may import (repeatable; default: the server's list)",
    )
    cmd.add_argument(
        "--max-concurrency", type=_positive_int, metavar="N", help="most calls at once"
    )
    cmd.add_argument(
        "--deterministic",
        action="store_true",
        help="equal arguments always give the same result: allow the result cache",
    )
    cmd.set_defaults(call=_publish)

    cmd = commands.add_parser("invoke", help="run a function; exit 1 if it fails")
    cmd.add_argument("ref", help="name, name@VERSION or name@ALIAS")
    cmd.add_argument("--args", metavar="JSON|@FILE", help="the arguments, a JSON object")
    cmd.add_argument("--timeout", type=float, metavar="SECONDS", help="deadline of the call")
    cmd.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="run once: a repeat with the same key returns the first call's result",
    )
    cmd.set_defaults(call=_invoke)

    cmd = commands.add_parser("get", help="show a version with its source")
    cmd.add_argument("ref", help="name, name@VERSION or name@ALIAS")
    cmd.set_defaults(call=_get)

    cmd = commands.add_parser("functions", help="list the functions")
    cmd.set_defaults(call=_functions)

    cmd = commands.add_parser("versions", help="list a function's versions, newest first")
    cmd.add_argument("name")
    cmd.set_defaults(call=_versions)

    cmd = commands.add_parser("alias", help="point an alias at a version")
    cmd.add_argument("name")
    cmd.add_argument("alias")
    cmd.add_argument("version", type=_positive_int)
    cmd.set_defaults(call=_alias)

    cmd = commands.add_parser("unalias", help="remove an alias")
    cmd.add_argument("name")
    cmd.add_argument("alias")
    cmd.set_defaults(call=_unalias)

    cmd = commands.add_parser("delete", help="delete a function and its versions")
    cmd.add_argument("name")
    cmd.set_defaults(call=_delete)

    cmd = commands.add_parser("history", help="list recorded runs, newest first")
    cmd.add_argument("name", nargs="?", help="only runs of this function")
    cmd.add_argument("--status", type=_status, help="only runs with this status")
    cmd.add_argument("--version", type=_positive_int, help="only runs of this version")
    cmd.add_argument("--limit", type=_positive_int, default=20, help="at most N runs (20)")
    cmd.add_argument("--agent", metavar="NAME", help="only tool calls made for this agent")
    cmd.add_argument("--conversation", metavar="ID", help="only tool calls of this conversation")
    cmd.set_defaults(call=_history)

    cmd = commands.add_parser("stats", help="summarize a function's runs in a time window")
    cmd.add_argument("name")
    cmd.add_argument("--version", type=_positive_int, help="only runs of this version")
    window = cmd.add_mutually_exclusive_group()
    window.add_argument(
        "--since", type=_timestamp, metavar="ISO", help="window start (naive means UTC)"
    )
    window.add_argument(
        "--hours", type=float, metavar="H", help="window: the last H hours (default 24)"
    )
    cmd.add_argument(
        "--failures", type=_positive_int, default=5, metavar="N", help="latest failures (5)"
    )
    cmd.set_defaults(call=_stats)

    cmd = commands.add_parser("execution", help="show one recorded run")
    cmd.add_argument("id")
    cmd.set_defaults(call=_execution)

    _add_agent_commands(commands)
    _add_access_commands(commands)
    cmd = commands.add_parser("mcp", help="serve an agent's tools over MCP on stdin/stdout")
    cmd.add_argument("--agent", required=True, metavar="NAME", help="the agent to serve")
    cmd.set_defaults(local=_mcp)
    return parser


def _add_agent_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agents = commands.add_parser("agents", help="define agents and call their tools")
    agent_commands = agents.add_subparsers(metavar="COMMAND", required=True)

    cmd = agent_commands.add_parser("apply", help="create or update agents from a file")
    cmd.add_argument(
        "-f",
        "--file",
        required=True,
        metavar="FILE",
        help='YAML or JSON: a list of agents or {"agents": [...]}; - reads standard input',
    )
    cmd.set_defaults(call=_agents_apply)

    cmd = agent_commands.add_parser("list", help="list the agents")
    cmd.add_argument("--capability", help="only agents offering this capability")
    cmd.set_defaults(call=_agents_list)

    cmd = agent_commands.add_parser("show", help="show an agent's definition")
    cmd.add_argument("name")
    cmd.add_argument("--revision", type=_positive_int, help="default: the current one")
    cmd.set_defaults(call=_agents_show)

    cmd = agent_commands.add_parser("revisions", help="list an agent's revisions, newest first")
    cmd.add_argument("name")
    cmd.set_defaults(call=_agents_revisions)

    cmd = agent_commands.add_parser("tools", help="show an agent's tool specs")
    cmd.add_argument("name")
    cmd.add_argument(
        "--format",
        choices=["plain", *_TOOL_FORMATS],
        default="plain",
        help="plain: a table; otherwise the JSON list a model SDK takes as `tools`",
    )
    cmd.set_defaults(call=_agents_tools)

    cmd = agent_commands.add_parser("call", help="call an agent's tool; exit 1 if it fails")
    cmd.add_argument("name", help="the agent")
    cmd.add_argument("tool", help="the tool's name")
    cmd.add_argument("--args", metavar="JSON|@FILE", help="the arguments, a JSON object")
    cmd.add_argument("--conversation", metavar="ID", help="the conversation it belongs to")
    cmd.set_defaults(call=_agents_call)

    cmd = agent_commands.add_parser("route", help="pick an agent with a capability")
    cmd.add_argument("capability")
    cmd.add_argument(
        "--strategy",
        choices=[strategy.value for strategy in RoutingStrategy],
        help="default: named with --agent, else round_robin",
    )
    cmd.add_argument("--agent", metavar="NAME", help="the agent to pick (strategy named)")
    cmd.set_defaults(call=_agents_route)

    cmd = agent_commands.add_parser("delete", help="delete an agent and its revisions")
    cmd.add_argument("name")
    cmd.set_defaults(call=_agents_delete)


def _add_access_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="manage API keys (admin keys only)")
    key_commands = keys.add_subparsers(metavar="COMMAND", required=True)
    cmd = key_commands.add_parser("create", help="create a key and print it, once")
    cmd.add_argument("--role", required=True, choices=[r.value for r in Role])
    cmd.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="a namespace a publisher or invoker key may see (repeatable; * for all)",
    )
    cmd.add_argument("--agent", default="", help="the agent an agent key calls tools for")
    cmd.add_argument("--description", default="", help="whose key this is")
    cmd.set_defaults(call=_keys_create)
    cmd = key_commands.add_parser("list", help="list keys (prefixes only), newest first")
    cmd.set_defaults(call=_keys_list)
    cmd = key_commands.add_parser("revoke", help="revoke a key; it stops working at once")
    cmd.add_argument("prefix", help="the key's prefix, tvk_ and 12 hex digits")
    cmd.set_defaults(call=_keys_revoke)
    cmd = key_commands.add_parser(
        "generate", help="print a new random key, e.g. for TOOLVAULT_ADMIN_KEY (offline)"
    )
    cmd.set_defaults(local=_keys_generate)

    cmd = commands.add_parser("audit", help="list recorded changes, newest first")
    cmd.add_argument("--actor", metavar="PREFIX", help="only changes made with this key")
    cmd.add_argument("--action", help="only this action, e.g. function.publish")
    cmd.add_argument("--target", metavar="NAME", help="only changes of this object")
    cmd.add_argument("--since", type=_timestamp, metavar="ISO", help="naive means UTC")
    cmd.add_argument("--limit", type=_positive_int, default=20, help="at most N events (20)")
    cmd.set_defaults(call=_audit)


def _add_storage_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--db", metavar="URL", help="database URL (default: the server's)")
    cmd.add_argument("--data-dir", metavar="DIR", help="directory for the server's files")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text}")
    return value


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text}") from error
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _status(text: str) -> ExecutionStatus:
    try:
        return ExecutionStatus(text)
    except ValueError as error:
        # argparse would replace a ValueError's message with a generic one.
        raise argparse.ArgumentTypeError(str(error)) from error


# The server is imported inside these commands only: the client must work without the
# `server` extra, whose dependencies (SQLAlchemy, RestrictedPython, ...) it does not need.
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
    # Exit 0 or 1 only, whatever the failure: orchestrators' probes read nothing else.
    request = health_pb2.HealthCheckRequest(service=args.service)
    try:
        with open_channel(args.server, tls=_tls(args)) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=args.timeout)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as error:
        status = f"UNREACHABLE ({error.code().name}: {error.details()})"
    if args.json:
        _print_json({"service": args.service, "status": status})
    else:
        print(status)
    return 0 if status == "SERVING" else 1


def _db_upgrade(args: argparse.Namespace) -> int:
    try:
        from toolvault.server.cli import db_upgrade
    except ModuleNotFoundError as error:
        raise _server_missing(error) from error
    return db_upgrade(db=args.db, data_dir=args.data_dir)


# Like the server, the MCP bridge is an extra (the `mcp` package), imported only when used.
def _mcp(args: argparse.Namespace) -> int:
    try:
        from toolvault.client._mcp import serve_mcp
    except ModuleNotFoundError as error:
        raise _UsageError(
            f"the MCP bridge is not installed: pip install 'toolvault[mcp]' ({error})"
        ) from error
    return serve_mcp(args.server, args.agent, api_key=args.api_key, tls=_tls(args))


def _doctor(args: argparse.Namespace) -> int:
    try:
        from toolvault.server.cli import doctor
    except ModuleNotFoundError as error:
        raise _server_missing(error) from error
    return doctor(json_output=args.json)


def _server_missing(error: ModuleNotFoundError) -> _UsageError:
    return _UsageError(f"the server is not installed: pip install 'toolvault[server]' ({error})")


def _publish(client: Client, args: argparse.Namespace) -> int:
    version = client.publish(
        args.name,
        _read_text(args.file),
        entrypoint=args.entrypoint,
        description=args.description,
        input_schema=None if args.input_schema is None else _read_json(args.input_schema),
        output_schema=None if args.output_schema is None else _read_json(args.output_schema),
        timeout_ms=args.timeout_ms,
        memory_mb=args.memory_mb,
        max_output_bytes=args.max_output_bytes,
        allowed_imports=args.allow_import,
        max_concurrency=args.max_concurrency,
        deterministic=args.deterministic,
    )
    if args.json:
        _print_json(version)
    else:
        _print_pairs(
            [
                ("name", version.name),
                ("version", version.version),
                ("sha256", version.sha256),
                ("state", "created" if version.created else "unchanged"),
            ]
        )
    return 0


def _invoke(client: Client, args: argparse.Namespace) -> int:
    arguments = {} if args.args is None else _arguments(args.args)
    execution = client.invoke(
        args.ref, arguments, timeout=args.timeout, idempotency_key=args.idempotency_key
    )
    if args.json:
        _print_json(execution)
        return 0 if execution.ok else 1
    if execution.ok:
        print(json.dumps(execution.result, indent=2, ensure_ascii=False))
    _print_block(sys.stdout, "--- stdout ---", execution.stdout)
    _print_block(sys.stderr, "--- stderr ---", execution.stderr)
    if execution.ok:
        return 0
    failure = f"the function failed with status {execution.status}"
    if execution.error is not None:
        failure += f": {execution.error.type}: {execution.error.message}"
    print(failure, file=sys.stderr)
    if execution.error is not None:
        _print_block(sys.stderr, "", execution.error.traceback)
    return 1


def _get(client: Client, args: argparse.Namespace) -> int:
    version = client.get(args.ref)
    if args.json:
        _print_json(version)
    else:
        _print_object(version, hide={"created"})
    return 0


def _functions(client: Client, args: argparse.Namespace) -> int:
    functions = client.functions()
    if args.json:
        _print_json(functions)
        return 0
    _print_table(
        ("NAME", "LATEST", "ALIASES", "UPDATED", "DESCRIPTION"),
        (
            (
                f.name,
                str(f.latest_version),
                ",".join(f"{alias}={version}" for alias, version in f.aliases.items()),
                _text(f.updated_at),
                _first_line(f.description),
            )
            for f in functions
        ),
    )
    return 0


def _versions(client: Client, args: argparse.Namespace) -> int:
    versions = client.versions(args.name)
    if args.json:
        _print_json(versions)
        return 0
    _print_table(
        ("VERSION", "SHA256", "CREATED", "DESCRIPTION"),
        (
            (str(v.version), v.sha256[:12], _text(v.created_at), _first_line(v.description))
            for v in versions
        ),
    )
    return 0


def _alias(client: Client, args: argparse.Namespace) -> int:
    function = client.set_alias(args.name, args.alias, args.version)
    if args.json:
        _print_json(function)
    else:
        _print_object(function)
    return 0


def _unalias(client: Client, args: argparse.Namespace) -> int:
    client.delete_alias(args.name, args.alias)
    if args.json:
        _print_json({"name": args.name, "alias": args.alias})
    else:
        print(f"removed alias {args.name}@{args.alias}")
    return 0


def _delete(client: Client, args: argparse.Namespace) -> int:
    deleted = client.delete(args.name)
    if args.json:
        _print_json({"name": args.name, "deleted_versions": deleted})
    else:
        print(f"deleted {args.name} (versions: {deleted})")
    return 0


def _history(client: Client, args: argparse.Namespace) -> int:
    executions = client.history(
        args.name,
        status=args.status,
        version=args.version,
        limit=args.limit,
        agent=args.agent,
        conversation_id=args.conversation,
    )
    if args.json:
        _print_json(executions)
        return 0
    _print_table(
        ("ID", "STATUS", "FUNCTION", "VERSION", "STARTED", "MS", "ERROR"),
        (
            (
                e.execution_id,
                e.status,
                e.function_name,
                str(e.version),
                _text(e.started_at),
                f"{e.duration_ms:.1f}",
                f"{e.error.type}: {_first_line(e.error.message)}" if e.error else "",
            )
            for e in executions
        ),
    )
    return 0


def _stats(client: Client, args: argparse.Namespace) -> int:
    if args.failures > 50:
        raise _UsageError(f"--failures must be at most 50, not {args.failures}")
    since = args.since
    if args.hours is not None:
        since = datetime.now(UTC) - timedelta(hours=args.hours)
    stats = client.stats(args.name, version=args.version, since=since, failures=args.failures)
    if args.json:
        _print_json(stats)
        return 0
    _print_pairs(
        [
            ("name", stats.name),
            ("version", stats.version or "all"),
            ("window", f"{_text(stats.since)} .. {_text(stats.until)}"),
            ("calls", stats.calls),
            ("cached", stats.cached_calls),
            ("statuses", {str(status): n for status, n in stats.status_counts.items()}),
            ("success_rate", f"{stats.success_rate:.1%}"),
            (
                "latency_ms",
                f"p50 {stats.p50_duration_ms:.1f}  p95 {stats.p95_duration_ms:.1f}  "
                f"p99 {stats.p99_duration_ms:.1f}",
            ),
            (
                "peak_memory",
                f"max {stats.max_peak_memory_bytes}  p95 {stats.p95_peak_memory_bytes} bytes",
            ),
            ("errors", stats.error_counts),
        ]
    )
    if stats.recent_failures:
        print()
        _print_table(
            ("ID", "STARTED", "VERSION", "STATUS", "ERROR"),
            (
                (
                    f.execution_id,
                    _text(f.started_at),
                    str(f.version),
                    f.status,
                    f"{f.error_type}: {_first_line(f.error_message)}",
                )
                for f in stats.recent_failures
            ),
        )
    return 0


def _execution(client: Client, args: argparse.Namespace) -> int:
    execution = client.execution(args.id)
    if args.json:
        _print_json(execution)
    else:
        # The JSON texts show exactly what was recorded, even when cut to fit the history.
        _print_object(execution, hide={"result", "args"})
    return 0


def _agents_apply(client: Client, args: argparse.Namespace) -> int:
    # Every spec is checked before the first is sent, so a bad file changes nothing.
    specs = _agent_specs(args.file)
    applied = []
    for spec in specs:
        agent, changed = client.apply_agent(spec)
        state = "unchanged" if not changed else "created" if agent.revision == 1 else "updated"
        applied.append({"state": state, "agent": agent})
        if not args.json:
            print(f"{spec.name}: {state} (revision {agent.revision})")
    if args.json:
        _print_json(applied)
    return 0


def _agent_specs(path: str) -> list[AgentSpec]:
    """Read the agents of a YAML or JSON document: a list, or {"agents": [...]}."""
    try:
        # JSON is YAML too, so one parser reads both kinds of file.
        document = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as error:
        raise _UsageError(f"{path} is not valid YAML or JSON: {error}") from error
    if isinstance(document, dict) and set(document) == {"agents"}:
        document = document["agents"]
    if not isinstance(document, list):
        raise _UsageError(f'{path}: expected a list of agents or a mapping {{"agents": [...]}}')
    specs: list[AgentSpec] = []
    for index, item in enumerate(document):
        try:
            if not isinstance(item, dict):
                raise ValueError(f"expected a mapping, not {type(item).__name__}")
            spec = AgentSpec.from_dict(item)
            if any(other.name == spec.name for other in specs):
                raise ValueError(f"the name {spec.name!r} appears twice")
        except ValueError as error:
            raise _UsageError(f"{path}: agents[{index}]: {error}") from error
        specs.append(spec)
    return specs


def _agents_list(client: Client, args: argparse.Namespace) -> int:
    agents = client.agents(capability=args.capability)
    if args.json:
        _print_json(agents)
        return 0
    _print_table(
        ("NAME", "REVISION", "ENABLED", "CAPABILITIES", "TOOLS", "DESCRIPTION"),
        (
            (
                a.spec.name,
                str(a.revision),
                "yes" if a.spec.enabled else "no",
                ",".join(a.spec.capabilities),
                ",".join(a.spec.tools),
                _first_line(a.spec.description),
            )
            for a in agents
        ),
    )
    return 0


def _agents_show(client: Client, args: argparse.Namespace) -> int:
    agent = client.agent(args.name, revision=args.revision or 0)
    if args.json:
        _print_json(agent)
    else:
        _print_object(agent)
    return 0


def _agents_revisions(client: Client, args: argparse.Namespace) -> int:
    agents = client.agent_revisions(args.name)
    if args.json:
        _print_json(agents)
        return 0
    _print_table(
        ("REVISION", "CREATED", "TOOLS", "DESCRIPTION"),
        (
            (
                str(a.revision),
                _text(a.created_at),
                ",".join(a.spec.tools),
                _first_line(a.spec.description),
            )
            for a in agents
        ),
    )
    return 0


_TOOL_FORMATS = {
    "openai": ToolSpec.to_openai_chat,
    "openai-responses": ToolSpec.to_openai_responses,
    "anthropic": ToolSpec.to_anthropic,
    "mcp": ToolSpec.to_mcp,
}


def _agents_tools(client: Client, args: argparse.Namespace) -> int:
    tools = client.agent_tools(args.name)
    if args.format in _TOOL_FORMATS:
        _print_json([_TOOL_FORMATS[args.format](tool) for tool in tools])
    elif args.json:
        _print_json(tools)
    else:
        _print_table(
            ("NAME", "REF", "VERSION", "DESCRIPTION"),
            ((t.name, t.ref, str(t.version), _first_line(t.description)) for t in tools),
        )
    return 0


def _agents_call(client: Client, args: argparse.Namespace) -> int:
    arguments = {} if args.args is None else _arguments(args.args)
    result = client.call_tool(
        args.name, args.tool, arguments, conversation_id=args.conversation or ""
    )
    if args.json:
        _print_json(result)
    else:
        # The text is the tool's answer either way: the result, or what went wrong.
        print(result.text)
    return 1 if result.is_error else 0


def _agents_route(client: Client, args: argparse.Namespace) -> int:
    routed = client.route_task(args.capability, strategy=args.strategy, agent=args.agent)
    if args.json:
        _print_json(routed)
    else:
        _print_pairs(
            [
                ("agent", routed.agent.spec.name),
                ("revision", routed.agent.revision),
                ("chain_depth", routed.chain.depth),
                ("root_agent", routed.chain.root_agent),
            ]
        )
    return 0


def _agents_delete(client: Client, args: argparse.Namespace) -> int:
    deleted = client.delete_agent(args.name)
    if args.json:
        _print_json({"name": args.name, "deleted_revisions": deleted})
    else:
        print(f"deleted agent {args.name} (revisions: {deleted})")
    return 0


def _tls(args: argparse.Namespace) -> TLS | None:
    if not (args.tls or args.ca_cert or args.client_cert):
        return None
    if bool(args.client_cert) != bool(args.client_key):
        raise _UsageError("--client-cert and --client-key go together")
    try:
        return TLS.from_files(args.ca_cert, args.client_cert, args.client_key)
    except OSError as error:
        raise _UsageError(f"cannot read a TLS file: {error}") from error


def _keys_create(client: Client, args: argparse.Namespace) -> int:
    secret, key = client.create_key(
        args.role, namespaces=args.namespace, agent=args.agent, description=args.description
    )
    if args.json:
        _print_json({"key": secret, **{f.name: getattr(key, f.name) for f in fields(key)}})
    else:
        print(secret)
        print(f"# {key.prefix}: role {key.role}; shown only now, store it safely", file=sys.stderr)
    return 0


def _keys_list(client: Client, args: argparse.Namespace) -> int:
    keys = client.keys()
    if args.json:
        _print_json(keys)
        return 0
    _print_table(
        ("PREFIX", "ROLE", "SCOPE", "CREATED", "REVOKED", "DESCRIPTION"),
        (
            (
                k.prefix,
                k.role,
                k.agent or ",".join(k.namespaces) or "*",
                _text(k.created_at),
                _text(k.revoked_at) if k.revoked_at else "",
                k.description,
            )
            for k in keys
        ),
    )
    return 0


def _keys_revoke(client: Client, args: argparse.Namespace) -> int:
    key = client.revoke_key(args.prefix)
    if args.json:
        _print_json(key)
    else:
        print(f"revoked {key.prefix} at {_text(key.revoked_at)}")
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    try:
        from toolvault.server.cli import generate_key
    except ModuleNotFoundError as error:
        raise _server_missing(error) from error
    print(generate_key())
    return 0


def _audit(client: Client, args: argparse.Namespace) -> int:
    events = client.audit_events(
        actor=args.actor, action=args.action, target=args.target, since=args.since, limit=args.limit
    )
    if args.json:
        _print_json(events)
        return 0
    _print_table(
        ("TIME", "ACTOR", "ACTION", "TARGET", "DETAILS"),
        (
            (_text(e.time), e.actor, e.action, e.target, json.dumps(e.details, sort_keys=True))
            for e in events
        ),
    )
    return 0


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise _UsageError(f"cannot read {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise _UsageError(f"cannot read {path}: not UTF-8 text ({error.reason})") from error


def _read_json(path: str) -> Any:
    return _parse_json(_read_text(path), path)


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _UsageError(f"{source} is not valid JSON: {error}") from error


def _arguments(text: str) -> dict[str, Any]:
    """Parse `--args`: JSON text, or "@FILE" naming a file that holds it."""
    value = _read_json(text[1:]) if text.startswith("@") else _parse_json(text, "--args")
    if not isinstance(value, dict):
        raise _UsageError(f"--args must be a JSON object, not {type(value).__name__}")
    return value


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in fields(value)}
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _print_object(obj: object, hide: Collection[str] = ()) -> None:
    """Print a model's fields as "key: value" lines; nested models get dotted keys."""
    _print_pairs([(key, value) for key, value in _flatten(obj) if key not in hide])


def _flatten(obj: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    for field in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, field.name)
        if is_dataclass(value):
            yield from _flatten(value, f"{prefix}{field.name}.")
        else:
            yield prefix + field.name, value


def _print_pairs(pairs: Sequence[tuple[str, object]]) -> None:
    """Print aligned "key: value" lines, then multi-line values as indented blocks."""
    texts = [(key, _text(value)) for key, value in pairs]
    width = max(len(key) for key, _ in texts) + 1
    blocks = []
    for key, text in texts:
        if "\n" in text:
            blocks.append((key, text))
        else:
            print(f"{key + ':':<{width}} {text}".rstrip())
    for key, text in blocks:
        _print_block(sys.stdout, f"{key}:", textwrap.indent(text, "    "))


def _print_block(stream: TextIO, title: str, text: str) -> None:
    if not text:
        return
    if title:
        print(title, file=stream)
    print(text, end="" if text.endswith("\n") else "\n", file=stream)


def _print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    table = [headers, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _first_line(text: str) -> str:
    return text.strip().partition("\n")[0]
