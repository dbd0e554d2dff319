"""The secret commands: `secrets` set, list, delete, generate-key and rotate.

A value is read from standard input or a file, never from the command line, where the
shell's history and every process listing would keep it. `rotate` runs here, on the
server's database (`_server`).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import os
import sys

from toolvault.cli._input import Commands, read_text
from toolvault.cli._output import print_json, print_table, text
from toolvault.cli._server import add_rotate_command
from toolvault.client import Client

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """Add `secrets` to the command line."""
    secrets = commands.add_parser(
        "secrets", help="manage the secrets of namespaces (values are never shown)"
    )
    secret_commands = secrets.add_subparsers(metavar="COMMAND", required=True)
    cmd = secret_commands.add_parser(
        "set",
        help="create or replace a secret; the value comes from standard input "
        "(prompted for on a terminal) or --from-file, never the command line",
    )
    cmd.add_argument("name", help="NAME or NAMESPACE/NAME, NAME like an environment variable")
    cmd.add_argument(
        "--from-file",
        metavar="PATH",
        help="read the value from this file (one trailing newline is dropped)",
    )
    cmd.set_defaults(call=_set)
    cmd = secret_commands.add_parser("list", help="list secrets (names only), by name")
    cmd.add_argument("--namespace", metavar="NS", help="only this namespace's")
    cmd.set_defaults(call=_list)
    cmd = secret_commands.add_parser("delete", help="delete a secret")
    cmd.add_argument("name", help="NAME or NAMESPACE/NAME")
    cmd.set_defaults(call=_delete)
    cmd = secret_commands.add_parser(
        "generate-key", help="print a new key for the server's TOOLVAULT_SECRETS_KEY (offline)"
    )
    cmd.set_defaults(local=_generate_key)
    add_rotate_command(secret_commands)


def _set(client: Client, args: argparse.Namespace) -> int:
    secret, created = client.set_secret(args.name, _value(args.from_file))
    if args.json:
        print_json({"secret": secret, "created": created})
    else:
        print(f"{'created' if created else 'replaced'} secret {secret.name}")
    return 0


def _value(path: str | None) -> str:
    """The value to set: from ``path``, a prompt on a terminal, or standard input."""
    if path is not None:
        value = read_text(path)
    elif sys.stdin.isatty():
        value = getpass.getpass("value (not echoed): ")
    else:
        value = sys.stdin.read()
    # `echo KEY | toolvault secrets set` and most editors end the text with a newline,
    # which is never part of an API key.
    return value.removesuffix("\n").removesuffix("\r")


def _list(client: Client, args: argparse.Namespace) -> int:
    secrets = client.list_secrets(namespace=args.namespace)
    if args.json:
        print_json(secrets)
        return 0
    print_table(
        ("NAME", "CREATED", "UPDATED", "UPDATED BY"),
        ((s.name, text(s.created_at), text(s.updated_at), s.updated_by) for s in secrets),
    )
    return 0


def _delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_secret(args.name)
    if not args.json:
        print(f"deleted secret {args.name}")
    else:
        print_json({"deleted": args.name})
    return 0


def _generate_key(args: argparse.Namespace) -> int:
    # A Fernet key: 32 random bytes in URL-safe base64. Made here without `cryptography`,
    # which only the server needs.
    print(base64.urlsafe_b64encode(os.urandom(32)).decode())
    return 0
