"""Chat models the agent loop talks to: a protocol, an OpenAI-compatible one, a scripted one.

Messages and tools travel in the shape of OpenAI chat completions, the lingua franca of
model servers (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM...): a model receives the whole
conversation so far and the tools' specs, and replies with text, tool calls, or both.
`OpenAIChatModel` speaks that protocol over HTTP with httpx; `ScriptedModel` replays fixed
replies, so tests and demos run without a model server.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

import httpx

__all__ = [
    "ChatModel",
    "ChatModelError",
    "ChatReply",
    "OpenAIChatModel",
    "ScriptedModel",
    "ToolCall",
]

# How much of an error response's body an exception quotes.
_BODY_EXCERPT = 500


class ChatModelError(Exception):
    """A model could not produce a reply: unreachable, an HTTP error, a malformed reply."""


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model asked for.

    Attributes:
        id: The model's id of the call; the tool's result message refers to it.
        name: The tool's name.
        arguments_json: The arguments as the model wrote them: JSON text, not yet checked.
    """

    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class ChatReply:
    """One reply of a model: text, tool calls, or both."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()

    def to_message(self) -> dict[str, Any]:
        """Return the reply as an assistant message for the conversation's history."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        # Some servers reject an empty tool_calls list, so it is left out instead.
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for call in self.tool_calls
            ]
        return message


class ChatModel(Protocol):
    """Anything that answers a conversation, given the tools it may call."""

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ChatReply:
        """Return the model's next reply.

        Args:
            messages: The conversation so far, as chat-completions messages.
            tools: The tools' specs, as chat-completions `tools` entries.

        Raises:
            ChatModelError: The model failed to reply.
        """
        ...


class OpenAIChatModel:
    """A model behind an OpenAI-compatible `/chat/completions` endpoint.

    For example, a local Ollama server:

        model = OpenAIChatModel("http://127.0.0.1:11434/v1", "qwen2.5:7b")
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Configure the endpoint; nothing is sent until `complete`.

        Args:
            base_url: The API's root, e.g. "https://api.openai.com/v1".
            model: The model's name on that server.
            api_key: Sent as a bearer token; None reads OPENAI_API_KEY and sends no key
                when that is unset too (local servers rarely need one).
            timeout: Seconds to wait for each reply.
            settings: Extra request fields, e.g. {"temperature": 0}.
        """
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.settings = dict(settings or {})
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One client for every turn: a loop of many turns reuses its connection.
        self._http = httpx.Client(headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connection to the model's server."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ChatReply:
        """Send the conversation and return the first choice's message.

        Raises:
            ChatModelError: The server cannot be reached, answered with an HTTP error, or
                sent something that is not a chat completion.
        """
        body: dict[str, Any] = {**self.settings, "model": self.model, "messages": messages}
        # Some servers reject an empty tools list, so it is left out instead.
        if tools:
            body["tools"] = tools
        try:
            response = self._http.post(self.url, json=body)
        except httpx.HTTPError as error:
            raise ChatModelError(f"cannot reach the model at {self.url}: {error}") from error
        if response.is_error:
            raise ChatModelError(
                f"the model at {self.url} answered HTTP {response.status_code}: "
                f"{response.text[:_BODY_EXCERPT]}"
            )
        try:
            return _parse_reply(response.json())
        except (ValueError, LookupError, TypeError, AttributeError) as error:
            raise ChatModelError(
                f"the model at {self.url} sent a malformed reply ({error!r}): "
                f"{response.text[:_BODY_EXCERPT]}"
            ) from error


def _parse_reply(completion: Any) -> ChatReply:
    """Return the reply in a chat completion; raise on a missing or mistyped field."""
    message = completion["choices"][0]["message"]
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise TypeError(f"message content is {type(content).__name__}, not a string")
    calls = []
    for call in message.get("tool_calls") or ():
        arguments = call["function"]["arguments"]
        calls.append(
            ToolCall(
                id=str(call["id"]),
                name=str(call["function"]["name"]),
                # Some servers send the arguments as an object instead of JSON text.
                arguments_json=arguments if isinstance(arguments, str) else json.dumps(arguments),
            )
        )
    return ChatReply(content=content, tool_calls=tuple(calls))


class ScriptedModel:
    """A model that replays fixed replies in order and records what it was given.

        model = ScriptedModel([
            ChatReply(None, (ToolCall("call_1", "add", '{"a": 1, "b": 2}'),)),
            "1 + 2 = 3",
        ])

    Attributes:
        calls: One (messages, tools) pair per `complete` call, copied as they were then.
    """

    def __init__(self, replies: Sequence[ChatReply | str]) -> None:
        """Script the replies; a string is a final answer without tool calls."""
        self.replies = [ChatReply(r) if isinstance(r, str) else r for r in replies]
        self.calls: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ChatReply:
        """Return the next scripted reply.

        Raises:
            ChatModelError: Every scripted reply has been returned already.
        """
        if len(self.calls) == len(self.replies):
            raise ChatModelError(
                f"the scripted model has {len(self.replies)} replies and was asked for another"
            )
        # Copies, because the caller keeps appending to its conversation.
        self.calls.append((copy.deepcopy(messages), copy.deepcopy(tools)))
        return self.replies[len(self.calls) - 1]
