"""Run an example agent end to end: publish the functions, apply agents.yaml, ask the agent.

    toolvault serve &                    # a server on 127.0.0.1:50051
    python examples/run_agent.py         # the calculator agent with a scripted model
    python examples/run_agent.py --agent text
    python examples/run_agent.py --live "How many feet are 3 miles?"

Without --live the model is a `ScriptedModel` replaying the replies a model would give to a
fixed question, so the demo needs no LLM; the tool calls are real all the same: toolvault
checks them against the agent's tools, runs them in sandboxes and records them. With
--live the agent's model_settings in agents.yaml say which OpenAI-compatible server and
model to use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from toolvault.agent import (
    ChatModelError,
    ChatReply,
    ScriptedModel,
    Step,
    ToolCall,
    run_agent,
)
from toolvault.client import AgentSpec, Client, ToolvaultError

HERE = Path(__file__).parent


def _call(call_id: str, tool: str, **arguments: object) -> ToolCall:
    return ToolCall(call_id, tool, json.dumps(arguments))


# For each agent: a question, and the replies a model would give to it.
SCRIPTS: dict[str, tuple[str, list[ChatReply | str]]] = {
    "calculator": (
        "How many miles is a 5 km run, and what are the mean and median of 3, 1, 4, 1, 5?",
        [
            ChatReply(
                None,
                (
                    _call("call_1", "unit_convert", value=5, from_unit="km", to_unit="mi"),
                    _call("call_2", "stats", numbers=[3, 1, 4, 1, 5]),
                ),
            ),
            "A 5 km run is 3.106856 miles; the numbers have a mean of 2.8 and a median of 3.",
        ],
    ),
    "text": (
        "How many words and sentences are in: The cat sat. The cat ran.",
        [
            ChatReply(None, (_call("call_1", "word_count", text="The cat sat. The cat ran."),)),
            "It has 6 words in 2 sentences; 'the' and 'cat' come twice each.",
        ],
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Set up the example on the server and run one agent; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else "")
    parser.add_argument(
        "--server",
        default=os.environ.get("TOOLVAULT_SERVER", "127.0.0.1:50051"),
        help="the toolvault server (env TOOLVAULT_SERVER, default 127.0.0.1:50051)",
    )
    parser.add_argument("--agent", choices=sorted(SCRIPTS), default="calculator")
    parser.add_argument(
        "--live", action="store_true", help="use the model in the agent's model_settings"
    )
    parser.add_argument("message", nargs="?", help="the question (with --live)")
    args = parser.parse_args(argv)
    if args.message and not args.live:
        parser.error("a scripted model only answers its own question: add --live")
    question, replies = SCRIPTS[args.agent]
    try:
        with Client(args.server) as client:
            set_up(client)
            message = args.message or question
            print(f"user: {message}")
            model = None if args.live else ScriptedModel(replies)
            run = run_agent(client, args.agent, message, model=model, on_step=show)
            calls = client.history(agent=args.agent, conversation_id=run.conversation_id)
            print(f"stopped: {run.stopped}; {len(calls)} tool call(s) recorded in the history")
    except (ToolvaultError, ChatModelError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def set_up(client: Client) -> None:
    """Publish the functions under their file names and create or update the agents."""
    for path in sorted((HERE / "functions").glob("*.py")):
        version = client.publish(path.stem, path.read_text())
        print(f"function {path.stem}: version {version.version}")
    for document in yaml.safe_load((HERE / "agents.yaml").read_text())["agents"]:
        agent, changed = client.apply_agent(AgentSpec.from_dict(document))
        state = "stored" if changed else "unchanged"
        print(f"agent {agent.spec.name}: revision {agent.revision} ({state})")


def show(step: Step) -> None:
    """Print a step as it happens."""
    if step.reply is not None:
        for call in step.reply.tool_calls:
            print(f"[{step.index}] model calls {call.name}({call.arguments_json})")
        if not step.reply.tool_calls:
            print(f"[{step.index}] model answers: {step.reply.content}")
    elif step.call is not None:
        print(f"[{step.index}] {step.call.name} -> {step.output}")


if __name__ == "__main__":
    sys.exit(main())
