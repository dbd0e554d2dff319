"""The commands on recorded runs: history, stats, execution."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from toolvault.cli._files import add_save_arguments, print_outputs, save_outputs
from toolvault.cli._input import (
    Commands,
    UsageError,
    execution_status,
    positive_int,
    timestamp,
)
from toolvault.cli._output import (
    first_line,
    print_json,
    print_object,
    print_pairs,
    print_table,
    text,
)
from toolvault.client import Client, EgressRequest

__all__ = ["add_commands"]

_USER_NAMES = {"args_json": "arguments", "args_truncated": "arguments_truncated"}
_EGRESS_COLUMNS = (
    "HOST",
    "PORT",
    "ADDRESS",
    "METHOD",
    "STATUS",
    "SENT",
    "RECEIVED",
    "MS",
    "OUTCOME",
)


def add_commands(commands: Commands) -> None:
    """Add the commands on recorded runs to the command line."""
    cmd = commands.add_parser("history", help="list recorded runs, newest first")
    cmd.add_argument("name", nargs="?", help="only runs of this function")
    cmd.add_argument("--status", type=execution_status, help="only runs with this status")
    cmd.add_argument("--version", type=positive_int, help="only runs of this version")
    cmd.add_argument("--limit", type=positive_int, default=20, help="at most N runs (20)")
    cmd.add_argument("--agent", metavar="NAME", help="only tool calls made for this agent")
    cmd.add_argument("--conversation", metavar="ID", help="only tool calls of this conversation")
    cmd.set_defaults(call=_history)

    cmd = commands.add_parser("stats", help="summarize a function's runs in a time window")
    cmd.add_argument("name")
    cmd.add_argument("--version", type=positive_int, help="only runs of this version")
    window = cmd.add_mutually_exclusive_group()
    window.add_argument(
        "--since", type=timestamp, metavar="ISO", help="window start (naive means UTC)"
    )
    window.add_argument(
        "--hours", type=float, metavar="H", help="window: the last H hours (default 24)"
    )
    cmd.add_argument(
        "--failures", type=positive_int, default=5, metavar="N", help="latest failures (5)"
    )
    cmd.set_defaults(call=_stats)

    cmd = commands.add_parser("execution", help="show one recorded run")
    cmd.add_argument("id")
    add_save_arguments(cmd)
    cmd.set_defaults(call=_execution)


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
        print_json(executions)
        return 0
    print_table(
        ("ID", "STATUS", "FUNCTION", "VERSION", "STARTED", "MS", "ERROR"),
        (
            (
                e.execution_id,
                e.status,
                e.function_name,
                str(e.version),
                text(e.started_at),
                f"{e.duration_ms:.1f}",
                f"{e.error.type}: {first_line(e.error.message)}" if e.error else "",
            )
            for e in executions
        ),
    )
    return 0


def _stats(client: Client, args: argparse.Namespace) -> int:
    if args.failures > 50:
        raise UsageError(f"--failures must be at most 50, not {args.failures}")
    since = args.since
    if args.hours is not None:
        since = datetime.now(UTC) - timedelta(hours=args.hours)
    stats = client.stats(args.name, version=args.version, since=since, failures=args.failures)
    if args.json:
        print_json(stats)
        return 0
    print_pairs(
        [
            ("name", stats.name),
            ("version", stats.version or "all"),
            ("window", f"{text(stats.since)} .. {text(stats.until)}"),
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
        print_table(
            ("ID", "STARTED", "VERSION", "STATUS", "ERROR"),
            (
                (
                    f.execution_id,
                    text(f.started_at),
                    str(f.version),
                    f.status,
                    f"{f.error_type}: {first_line(f.error_message)}",
                )
                for f in stats.recent_failures
            ),
        )
    return 0


def _execution(client: Client, args: argparse.Namespace) -> int:
    execution = client.execution(args.id, include_files=args.save is not None)
    saved = [] if args.save is None else save_outputs(execution, args.save, force=args.force)
    if args.json:
        print_json(execution)
    else:
        # The JSON texts show exactly what was recorded, even when cut to fit the history;
        # the arguments under the name --args gives them, not the wire's.
        hide = {"result", "args", "egress", "files", "output_files"}
        print_object(execution, hide=hide, rename=_USER_NAMES)
        if execution.files:
            print("files:")
            print_table(
                ("DIRECTION", "NAME", "SIZE", "SHA256"),
                ((f.direction, f.name, str(f.size), f.sha256) for f in execution.files),
            )
        print_outputs(execution, saved)
        if execution.egress:
            print("egress:")
            print_table(_EGRESS_COLUMNS, (_egress_row(request) for request in execution.egress))
    return 0


def _egress_row(request: EgressRequest) -> tuple[str, ...]:
    outcome = "refused" if request.refused else "failed" if not request.address else "ok"
    return (
        request.host,
        str(request.port),
        request.address or "-",
        request.method or "-",
        str(request.status or "-"),
        str(request.bytes_sent),
        str(request.bytes_received),
        f"{request.duration_ms:.1f}",
        f"{outcome}: {request.reason}" if request.reason else outcome,
    )
