"""The access commands: `keys` (create, list, revoke, generate) and `audit`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from toolvault.cli._input import Commands, positive_int, timestamp
from toolvault.cli._output import print_json, print_table, text
from toolvault.client import Client, Role, generate_key

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """Add `keys` and `audit` to the command line."""
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
    cmd.add_argument("--since", type=timestamp, metavar="ISO", help="naive means UTC")
    cmd.add_argument("--limit", type=positive_int, default=20, help="at most N events (20)")
    cmd.set_defaults(call=_audit)


def _keys_create(client: Client, args: argparse.Namespace) -> int:
    secret, key = client.create_key(
        args.role, namespaces=args.namespace, agent=args.agent, description=args.description
    )
    if args.json:
        print_json({"key": secret, **{f.name: getattr(key, f.name) for f in fields(key)}})
    else:
        print(secret)
        print(f"# {key.prefix}: role {key.role}; shown only now, store it safely", file=sys.stderr)
    return 0


def _keys_list(client: Client, args: argparse.Namespace) -> int:
    keys = client.keys()
    if args.json:
        print_json(keys)
        return 0
    print_table(
        ("PREFIX", "ROLE", "SCOPE", "CREATED", "REVOKED", "DESCRIPTION"),
        (
            (
                k.prefix,
                k.role,
                k.agent or ",".join(k.namespaces) or "*",
                text(k.created_at),
                text(k.revoked_at) if k.revoked_at else "",
                k.description,
            )
            for k in keys
        ),
    )
    return 0


def _keys_revoke(client: Client, args: argparse.Namespace) -> int:
    key = client.revoke_key(args.prefix)
    if args.json:
        print_json(key)
    else:
        print(f"revoked {key.prefix} at {text(key.revoked_at)}")
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def _audit(client: Client, args: argparse.Namespace) -> int:
    events = client.audit_events(
        actor=args.actor, action=args.action, target=args.target, since=args.since, limit=args.limit
    )
    if args.json:
        print_json(events)
        return 0
    print_table(
        ("TIME", "ACTOR", "ACTION", "TARGET", "DETAILS"),
        (
            (text(e.time), e.actor, e.action, e.target, json.dumps(e.details, sort_keys=True))
            for e in events
        ),
    )
    return 0
