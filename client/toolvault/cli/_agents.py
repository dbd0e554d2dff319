"""The `agents` commands: define agents from YAML or JSON files, inspect them, call their tools."""

from __future__ import annotations

import argparse

import yaml

from toolvault.cli._input import Commands, UsageError, arguments, positive_int, read_text
from toolvault.cli._output import (
    first_line,
    print_json,
    print_object,
    print_pairs,
    print_table,
    text,
)
from toolvault.client import AgentSpec, Client, RoutingStrategy, ToolSpec

__all__ = ["add_commands"]

# `agents tools --format`: how each model API takes a tool list.
_TOOL_FORMATS = {
    "openai": ToolSpec.to_openai_chat,
    "openai-responses": ToolSpec.to_openai_responses,
    "anthropic": ToolSpec.to_anthropic,
    "mcp": ToolSpec.to_mcp,
}


def add_commands(commands: Commands) -> None:
    """Add `agents` and its commands to the command line."""
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
    cmd.add_argument("--revision", type=positive_int, help="default: the current one")
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
        print_json(applied)
    return 0


def _agent_specs(path: str) -> list[AgentSpec]:
    """Read the agents of a YAML or JSON document: a list, or {"agents": [...]}."""
    try:
        # JSON is YAML too, so one parser reads both kinds of file.
        document = yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not valid YAML or JSON: {error}") from error
    if isinstance(document, dict) and set(document) == {"agents"}:
        document = document["agents"]
    if not isinstance(document, list):
        raise UsageError(f'{path}: expected a list of agents or a mapping {{"agents": [...]}}')
    specs: list[AgentSpec] = []
    for index, item in enumerate(document):
        try:
            if not isinstance(item, dict):
                raise ValueError(f"expected a mapping, not {type(item).__name__}")
            spec = AgentSpec.from_dict(item)
            if any(other.name == spec.name for other in specs):
                raise ValueError(f"the name {spec.name!r} appears twice")
        except ValueError as error:
            raise UsageError(f"{path}: agents[{index}]: {error}") from error
        specs.append(spec)
    return specs


def _agents_list(client: Client, args: argparse.Namespace) -> int:
    agents = client.agents(capability=args.capability)
    if args.json:
        print_json(agents)
        return 0
    print_table(
        ("NAME", "REVISION", "ENABLED", "CAPABILITIES", "TOOLS", "DESCRIPTION"),
        (
            (
                a.spec.name,
                str(a.revision),
                "yes" if a.spec.enabled else "no",
                ",".join(a.spec.capabilities),
                ",".join(a.spec.tools),
                first_line(a.spec.description),
            )
            for a in agents
        ),
    )
    return 0


def _agents_show(client: Client, args: argparse.Namespace) -> int:
    agent = client.agent(args.name, revision=args.revision or 0)
    if args.json:
        print_json(agent)
    else:
        print_object(agent)
    return 0


def _agents_revisions(client: Client, args: argparse.Namespace) -> int:
    agents = client.agent_revisions(args.name)
    if args.json:
        print_json(agents)
        return 0
    print_table(
        ("REVISION", "CREATED", "TOOLS", "DESCRIPTION"),
        (
            (
                str(a.revision),
                text(a.created_at),
                ",".join(a.spec.tools),
                first_line(a.spec.description),
            )
            for a in agents
        ),
    )
    return 0


def _agents_tools(client: Client, args: argparse.Namespace) -> int:
    tools = client.agent_tools(args.name)
    if args.format in _TOOL_FORMATS:
        print_json([_TOOL_FORMATS[args.format](tool) for tool in tools])
    elif args.json:
        print_json(tools)
    else:
        print_table(
            ("NAME", "REF", "VERSION", "DESCRIPTION"),
            ((t.name, t.ref, str(t.version), first_line(t.description)) for t in tools),
        )
    return 0


def _agents_call(client: Client, args: argparse.Namespace) -> int:
    values = {} if args.args is None else arguments(args.args)
    result = client.call_tool(args.name, args.tool, values, conversation_id=args.conversation or "")
    if args.json:
        print_json(result)
    else:
        # The text is the tool's answer either way: the result, or what went wrong.
        print(result.text)
    return 1 if result.is_error else 0


def _agents_route(client: Client, args: argparse.Namespace) -> int:
    routed = client.route_task(args.capability, strategy=args.strategy, agent=args.agent)
    if args.json:
        print_json(routed)
    else:
        print_pairs(
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
        print_json({"name": args.name, "deleted_revisions": deleted})
    else:
        print(f"deleted agent {args.name} (revisions: {deleted})")
    return 0
