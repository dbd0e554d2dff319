"""The function commands: publish, invoke, get, functions, versions, alias, unalias, delete."""

from __future__ import annotations

import argparse
import json
import sys

from toolvault.cli._files import add_save_arguments, print_outputs, read_files, save_outputs
from toolvault.cli._input import Commands, arguments, positive_int, read_json, read_text
from toolvault.cli._output import (
    first_line,
    print_block,
    print_json,
    print_object,
    print_pairs,
    print_table,
    text,
)
from toolvault.client import Client, Isolation

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """Add the function commands to the command line."""
    cmd = commands.add_parser("publish", help="publish a function version from a file")
    cmd.add_argument("name", help="the function's name")
    cmd.add_argument("file", help="the Python source file; - reads standard input")
    cmd.add_argument("--entrypoint", default="main", help="the function to call (main)")
    cmd.add_argument("--description", help="default: the entrypoint's docstring")
    cmd.add_argument("--timeout-ms", type=positive_int, metavar="N")
    cmd.add_argument("--memory-mb", type=positive_int, metavar="N")
    cmd.add_argument("--max-output-bytes", type=positive_int, metavar="N")
    cmd.add_argument("--input-schema", metavar="FILE", help="JSON Schema of the arguments")
    cmd.add_argument("--output-schema", metavar="FILE", help="JSON Schema of the result")
    cmd.add_argument(
        "--allow-import",
        action="append",
        metavar="MODULE",
        help="a module the code may import (repeatable; default: the server's list)",
    )
    cmd.add_argument("--max-concurrency", type=positive_int, metavar="N", help="most calls at once")
    cmd.add_argument(
        "--deterministic",
        action="store_true",
        help="equal arguments always give the same result: allow the result cache",
    )
    cmd.add_argument(
        "--isolation",
        choices=[isolation.value for isolation in Isolation],
        help="warm (default): calls may share warm workers of this version; "
        "fresh: every call in a process of its own",
    )
    cmd.add_argument(
        "--egress",
        action="append",
        metavar="HOST[:PORT]",
        help="a host its calls may reach, e.g. api.example.com:443 or *.example.org "
        "(ports 80 and 443); repeatable; within what the server allows the namespace",
    )
    cmd.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME",
        help="a secret of the namespace the code reads as `from toolvault import secrets` "
        "(repeatable; see `toolvault secrets set`)",
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
    cmd.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="PATH",
        help="a file the function finds in its working directory by its name (repeatable)",
    )
    add_save_arguments(cmd)
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
    cmd.add_argument("version", type=positive_int)
    cmd.set_defaults(call=_alias)

    cmd = commands.add_parser("unalias", help="remove an alias")
    cmd.add_argument("name")
    cmd.add_argument("alias")
    cmd.set_defaults(call=_unalias)

    cmd = commands.add_parser("delete", help="delete a function and its versions")
    cmd.add_argument("name")
    cmd.set_defaults(call=_delete)


def _publish(client: Client, args: argparse.Namespace) -> int:
    version = client.publish(
        args.name,
        read_text(args.file),
        entrypoint=args.entrypoint,
        description=args.description,
        input_schema=None if args.input_schema is None else read_json(args.input_schema),
        output_schema=None if args.output_schema is None else read_json(args.output_schema),
        timeout_ms=args.timeout_ms,
        memory_mb=args.memory_mb,
        max_output_bytes=args.max_output_bytes,
        allowed_imports=args.allow_import,
        max_concurrency=args.max_concurrency,
        deterministic=args.deterministic,
        isolation=args.isolation,
        egress=args.egress,
        secrets=args.secret,
    )
    if args.json:
        print_json(version)
    else:
        print_pairs(
            [
                ("name", version.name),
                ("version", version.version),
                ("sha256", version.sha256),
                ("state", "created" if version.created else "unchanged"),
            ]
        )
    return 0


def _invoke(client: Client, args: argparse.Namespace) -> int:
    values = {} if args.args is None else arguments(args.args)
    execution = client.invoke(
        args.ref,
        values,
        timeout=args.timeout,
        idempotency_key=args.idempotency_key,
        files=read_files(args.file),
    )
    saved = [] if args.save is None else save_outputs(execution, args.save, force=args.force)
    if args.json:
        print_json(execution)
        return 0 if execution.ok else 1
    if execution.ok:
        print(json.dumps(execution.result, indent=2, ensure_ascii=False))
    print_block(sys.stdout, "--- stdout ---", execution.stdout)
    print_block(sys.stderr, "--- stderr ---", execution.stderr)
    print_outputs(execution, saved)
    if execution.ok:
        return 0
    failure = f"the function failed with status {execution.status}"
    if execution.error is not None:
        failure += f": {execution.error.type}: {execution.error.message}"
    print(failure, file=sys.stderr)
    if execution.error is not None:
        print_block(sys.stderr, "", execution.error.traceback)
    return 1


def _get(client: Client, args: argparse.Namespace) -> int:
    version = client.get(args.ref)
    if args.json:
        print_json(version)
    else:
        print_object(version, hide={"created"})
    return 0


def _functions(client: Client, args: argparse.Namespace) -> int:
    functions = client.functions()
    if args.json:
        print_json(functions)
        return 0
    print_table(
        ("NAME", "LATEST", "ALIASES", "UPDATED", "DESCRIPTION"),
        (
            (
                f.name,
                str(f.latest_version),
                ",".join(f"{alias}={version}" for alias, version in f.aliases.items()),
                text(f.updated_at),
                first_line(f.description),
            )
            for f in functions
        ),
    )
    return 0


def _versions(client: Client, args: argparse.Namespace) -> int:
    versions = client.versions(args.name)
    if args.json:
        print_json(versions)
        return 0
    print_table(
        ("VERSION", "SHA256", "CREATED", "DESCRIPTION"),
        (
            (str(v.version), v.sha256[:12], text(v.created_at), first_line(v.description))
            for v in versions
        ),
    )
    return 0


def _alias(client: Client, args: argparse.Namespace) -> int:
    function = client.set_alias(args.name, args.alias, args.version)
    if args.json:
        print_json(function)
    else:
        print_object(function)
    return 0


def _unalias(client: Client, args: argparse.Namespace) -> int:
    client.delete_alias(args.name, args.alias)
    if args.json:
        print_json({"name": args.name, "alias": args.alias})
    else:
        print(f"removed alias {args.name}@{args.alias}")
    return 0


def _delete(client: Client, args: argparse.Namespace) -> int:
    deleted = client.delete(args.name)
    if args.json:
        print_json({"name": args.name, "deleted_versions": deleted})
    else:
        print(f"deleted {args.name} (versions: {deleted})")
    return 0
