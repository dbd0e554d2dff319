"""The agent loop: the model talks, its tool calls run on toolvault, until it answers.

The agent's definition lives on the server; the loop runs here. The model gets the
agent's system prompt, the user's message and the agent's tools as chat-completions
specs. Every tool call it makes goes through `Client.call_tool`, so toolvault checks it
against the agent's tool list and the tool's schemas, runs it in a sandbox and records it
in the history under the agent and the conversation. Whatever comes back, including a
refusal, is handed to the model as the tool's result, so it can correct itself. The loop
ends when the model replies without tool calls, or after `max_steps` model replies.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal

from toolvault.agent._chat import ChatModel, ChatReply, OpenAIChatModel, ToolCall
from toolvault.client import (
    Agent,
    ChainContext,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ToolResult,
)

__all__ = ["MODEL_READABLE", "AgentRun", "Step", "iter_agent", "run_agent"]

# A tool call refused for what the model asked (a tool it may not use, bad arguments, a
# chain too deep, a tool gone): the agent loop and the MCP bridge hand these back to the
# model as text it can act on, rather than failing the run. Other errors (the server
# unreachable, or failing) end the run.
MODEL_READABLE = (PermissionDenied, InvalidArgument, FailedPrecondition, NotFound)

# model_settings keys the loop uses to build a model; the others become request fields.
_CONNECTION_KEYS = ("base_url", "model", "api_key_env")


@dataclass(frozen=True)
class Step:
    """One step of a run: a model reply, or one of the tool calls in it.

    Attributes:
        index: The step's position in the run, from 0.
        kind: "model" for a reply, "tool" for a tool call.
        reply: The model's reply (kind "model").
        call: The tool call (kind "tool").
        result: What toolvault returned for the call; None when it refused the call or
            the arguments were not a JSON object (see `error`).
        error: Why the call did not run, as the model was told.
        output: The tool message's content the model got back (kind "tool").
    """

    index: int
    kind: Literal["model", "tool"]
    reply: ChatReply | None = None
    call: ToolCall | None = None
    result: ToolResult | None = None
    error: str | None = None
    output: str | None = None


@dataclass(frozen=True)
class AgentRun:
    """The outcome of a run.

    Attributes:
        final: The model's final answer; None when the run stopped at the step limit.
        steps: Every step, in order.
        conversation_id: The id the tool calls were recorded under in the history.
        stopped: "answer" when the model answered, "max_steps" when the limit ended it.
    """

    final: str | None
    steps: list[Step]
    conversation_id: str
    stopped: Literal["answer", "max_steps"]


def run_agent(
    client: Client,
    agent: str,
    message: str,
    *,
    model: ChatModel | None = None,
    max_steps: int = 10,
    conversation_id: str | None = None,
    chain: ChainContext | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> AgentRun:
    """Run an agent on a user message until its model answers or the step limit.

    Args:
        client: The connection to the toolvault server.
        agent: The agent's name.
        message: The user's message.
        model: The chat model; None builds an `OpenAIChatModel` from the agent's
            model_settings (keys base_url, model, api_key_env: the name of the
            environment variable holding the API key; other keys become request fields
            such as temperature).
        max_steps: At most this many model replies.
        conversation_id: Groups the tool calls in the history; None makes a new one.
        chain: The delegation chain this run belongs to (from `Client.route_task`).
        on_step: Called with each step as soon as it is done.

    Returns:
        The final answer with every step.

    Raises:
        ValueError: `max_steps` is below 1, or the model cannot be built from the
            agent's model_settings.
        ChatModelError: The model failed to reply.
        ToolvaultError: The server failed a request other than by refusing a tool call
            for the model's own mistake (those go back to the model).
    """
    steps = iter_agent(
        client,
        agent,
        message,
        model=model,
        max_steps=max_steps,
        conversation_id=conversation_id,
        chain=chain,
    )
    while True:
        try:
            step = next(steps)
        except StopIteration as done:
            run: AgentRun = done.value
            return run
        if on_step is not None:
            on_step(step)


def iter_agent(
    client: Client,
    agent: str,
    message: str,
    *,
    model: ChatModel | None = None,
    max_steps: int = 10,
    conversation_id: str | None = None,
    chain: ChainContext | None = None,
) -> Generator[Step, None, AgentRun]:
    """Run an agent like `run_agent`, yielding each step as soon as it is done.

    The generator's return value (`StopIteration.value`, or the value of a
    `yield from`) is the `AgentRun`; the last step yielded is the final reply when the
    model answered.

    Raises:
        ValueError: `max_steps` is below 1, or the model cannot be built.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, not {max_steps}")
    definition = client.agent(agent)
    # A model built here is closed here; one passed in belongs to the caller.
    own = None
    if model is None:
        own = model = _model_from_settings(definition)
    try:
        return (
            yield from _loop(client, definition, message, model, max_steps, conversation_id, chain)
        )
    finally:
        if own is not None:
            own.close()


def _loop(
    client: Client,
    definition: Agent,
    message: str,
    model: ChatModel,
    max_steps: int,
    conversation_id: str | None,
    chain: ChainContext | None,
) -> Generator[Step, None, AgentRun]:
    """The loop of `iter_agent`, once the agent and its model are known."""
    agent = definition.spec.name
    tools = [spec.to_openai_chat() for spec in client.agent_tools(agent)]
    conversation_id = conversation_id or uuid.uuid4().hex
    messages: list[dict[str, Any]] = []
    if definition.spec.system_prompt:
        messages.append({"role": "system", "content": definition.spec.system_prompt})
    messages.append({"role": "user", "content": message})
    steps: list[Step] = []
    for _ in range(max_steps):
        reply = model.complete(messages, tools)
        messages.append(reply.to_message())
        steps.append(Step(len(steps), "model", reply=reply))
        yield steps[-1]
        if not reply.tool_calls:
            return AgentRun(reply.content, steps, conversation_id, "answer")
        for call in reply.tool_calls:
            steps.append(_call_tool(client, agent, call, len(steps), conversation_id, chain))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": steps[-1].output})
            yield steps[-1]
    return AgentRun(None, steps, conversation_id, "max_steps")


def _call_tool(
    client: Client,
    agent: str,
    call: ToolCall,
    index: int,
    conversation_id: str,
    chain: ChainContext | None,
) -> Step:
    """Run one tool call and return its step, with the text for the model as `output`."""
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        # Models do write broken JSON; telling them is cheaper than a server round trip.
        error_text = f"the arguments are not a JSON object: {call.arguments_json!r}"
        return Step(index, "tool", call=call, error=error_text, output=f"error: {error_text}")
    try:
        result = client.call_tool(
            agent, call.name, arguments, conversation_id=conversation_id, chain=chain
        )
    except MODEL_READABLE as refusal:
        reason = refusal.naming_arguments()  # what the model wrote: the call's "arguments"
        return Step(index, "tool", call=call, error=reason, output=f"error: {reason}")
    # A failed tool's text already starts with its status, e.g. "ERROR: ValueError: ...".
    return Step(index, "tool", call=call, result=result, output=result.text)


def _model_from_settings(agent: Agent) -> OpenAIChatModel:
    """Build the model an agent's model_settings describe."""
    settings = agent.spec.model_settings
    missing = [key for key in ("base_url", "model") if not settings.get(key)]
    if missing:
        raise ValueError(
            f"agent {agent.spec.name!r} has no {' or '.join(missing)} in its model_settings: "
            "set them, or pass a model"
        )
    api_key = None
    if key_env := settings.get("api_key_env"):
        api_key = os.environ.get(key_env)
        if api_key is None:
            raise ValueError(
                f"agent {agent.spec.name!r} reads its API key from ${key_env}, which is not set"
            )
    return OpenAIChatModel(
        settings["base_url"],
        settings["model"],
        api_key=api_key,
        settings={k: v for k, v in settings.items() if k not in _CONNECTION_KEYS},
    )
