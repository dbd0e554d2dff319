"""Agent definitions, tool specs, tool results and routing, as frozen Python values.

`AgentSpec` is what a caller writes (in code or in a YAML/JSON document); the other models
come back from the server. `ToolSpec` renders itself in the shapes the model SDKs expect
(OpenAI chat completions and Responses, Anthropic, MCP), so an agent loop can hand the
specs to a model without knowing toolvault's messages. Nothing here talks to the network.
"""

from __future__ import annotations

import copy
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from toolvault.client._models import Execution, _datetime, _member_named
from toolvault.v1 import agent_pb2

__all__ = [
    "Agent",
    "AgentSpec",
    "ChainContext",
    "RoutedTask",
    "RoutingStrategy",
    "ToolResult",
    "ToolSpec",
]

_STRATEGY_PREFIX = "ROUTING_STRATEGY_"


@dataclass(frozen=True)
class AgentSpec:
    """What defines an agent; every change the server stores makes a new revision.

    Attributes:
        name: Unique name, `[a-z][a-z0-9_-]{0,63}`, optionally after `NAMESPACE/`.
        description: What the agent is for (shown to routers and people).
        system_prompt: The system prompt its model gets.
        model_settings: Free-form model settings, e.g. {"model": ..., "temperature": ...}.
        input_schema: JSON Schema of the agent's input, if any.
        output_schema: JSON Schema of the agent's final answer, if any.
        tools: Function refs the agent may call: "name", "name@3" or "name@alias".
        capabilities: What the agent offers to routing, e.g. "math".
        max_chain_depth: Levels of delegation allowed below the agent; None for the
            server's default.
        enabled: Disabled agents are not routed to and cannot call tools.
    """

    name: str
    description: str = ""
    system_prompt: str = ""
    model_settings: dict[str, Any] = field(default_factory=dict)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    tools: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    max_chain_depth: int | None = None
    enabled: bool = True

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> AgentSpec:
        """Build a spec from one agent of a YAML or JSON document.

        Keys are the attribute names; lists become tuples.

        Raises:
            ValueError: A key is unknown, "name" is missing, or a value has the wrong type;
                the message names the key.
        """
        # Keys of a YAML document need not be strings, hence sorting their reprs.
        unknown = sorted(map(repr, set(document) - set(_DOCUMENT_TYPES)))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}")
        if "name" not in document:
            raise ValueError("missing key 'name'")
        values: dict[str, Any] = {}
        for key, given in document.items():
            expected, wanted = _DOCUMENT_TYPES[key]
            value = tuple(given) if isinstance(given, list) else given
            if not isinstance(value, expected) or not _fits(key, value):
                raise ValueError(f"{key!r} must be {wanted}, not {given!r}")
            values[key] = value
        return cls(**values)

    @classmethod
    def from_proto(cls, pb: agent_pb2.AgentSpec) -> AgentSpec:
        """Build a spec from its message, parsing the JSON fields."""
        return cls(
            name=pb.name,
            description=pb.description,
            system_prompt=pb.system_prompt,
            model_settings=json.loads(pb.model_settings_json) if pb.model_settings_json else {},
            input_schema=json.loads(pb.input_schema_json) if pb.input_schema_json else None,
            output_schema=json.loads(pb.output_schema_json) if pb.output_schema_json else None,
            tools=tuple(pb.tools),
            capabilities=tuple(pb.capabilities),
            max_chain_depth=pb.max_chain_depth if pb.HasField("max_chain_depth") else None,
            enabled=pb.enabled if pb.HasField("enabled") else True,
        )

    def to_proto(self) -> agent_pb2.AgentSpec:
        """Return the `toolvault.v1.AgentSpec` message of this spec."""
        return agent_pb2.AgentSpec(
            name=self.name,
            description=self.description,
            system_prompt=self.system_prompt,
            model_settings_json=json.dumps(self.model_settings) if self.model_settings else "",
            input_schema_json=(
                json.dumps(self.input_schema) if self.input_schema is not None else ""
            ),
            output_schema_json=(
                json.dumps(self.output_schema) if self.output_schema is not None else ""
            ),
            tools=self.tools,
            capabilities=self.capabilities,
            max_chain_depth=self.max_chain_depth,
            enabled=self.enabled,
        )


# The type each document key (an AgentSpec field) must have, and how errors name it.
_DOCUMENT_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "name": (str, "a string"),
    "description": (str, "a string"),
    "system_prompt": (str, "a string"),
    "model_settings": (dict, "a mapping"),
    "input_schema": ((dict, type(None)), "a mapping or null"),
    "output_schema": ((dict, type(None)), "a mapping or null"),
    "tools": (tuple, "a list of strings"),
    "capabilities": (tuple, "a list of strings"),
    "max_chain_depth": ((int, type(None)), "a non-negative integer or null"),
    "enabled": (bool, "true or false"),
}


def _fits(key: str, value: object) -> bool:
    """Check what isinstance cannot: list items, and a depth that is a count."""
    if isinstance(value, tuple):
        return all(isinstance(item, str) for item in value)
    if key == "max_chain_depth" and value is not None:
        # bool is an int in Python, but `max_chain_depth: true` is a mistake.
        return not isinstance(value, bool) and isinstance(value, int) and value >= 0
    return True


@dataclass(frozen=True)
class Agent:
    """One stored revision of an agent, with the server's defaults filled in."""

    spec: AgentSpec
    revision: int
    created_at: datetime

    @classmethod
    def from_proto(cls, pb: agent_pb2.Agent) -> Agent:
        """Build an agent revision from its message."""
        return cls(AgentSpec.from_proto(pb.spec), pb.revision, _datetime(pb.create_time))


@dataclass(frozen=True)
class ToolSpec:
    """One of an agent's tools as a model sees it, and the version its ref resolves to.

    The `to_*` methods return new dicts in each target's shape; changing them does not
    change the spec. `open_world` is True when the tool may reach hosts on the network
    (its version declares egress).
    """

    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    ref: str
    version: int
    sha256: str
    open_world: bool = False

    @classmethod
    def from_proto(cls, pb: agent_pb2.ToolSpec) -> ToolSpec:
        """Build a tool spec from its message, parsing the schemas."""
        return cls(
            name=pb.name,
            description=pb.description,
            input_schema=json.loads(pb.input_schema_json),
            output_schema=json.loads(pb.output_schema_json) if pb.output_schema_json else None,
            ref=pb.ref,
            version=pb.version,
            sha256=pb.sha256,
            open_world=pb.open_world,
        )

    def to_openai_chat(self) -> dict[str, Any]:
        """Return an entry of OpenAI chat completions' `tools` list."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self.input_schema),
            },
        }

    def to_openai_responses(self) -> dict[str, Any]:
        """Return an entry of the OpenAI Responses API's `tools` list.

        `strict` is off: strict mode demands every property be required and
        `additionalProperties: false`, which published schemas need not satisfy.
        """
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.input_schema),
            "strict": False,
        }

    def to_anthropic(self) -> dict[str, Any]:
        """Return an entry of Anthropic's Messages API `tools` list."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": copy.deepcopy(self.input_schema),
        }

    def to_mcp(self) -> dict[str, Any]:
        """Return an MCP `Tool` as JSON, with `outputSchema` when the result is an object.

        MCP requires an output schema of type "object" (structured content is an object),
        so schemas of other results are left out and the result goes as text only.
        `openWorldHint` is always given: MCP takes a tool without it to reach the world.
        """
        tool: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": copy.deepcopy(self.input_schema),
            "annotations": {"openWorldHint": self.open_world},
        }
        if self.output_schema is not None and self.output_schema.get("type") == "object":
            tool["outputSchema"] = copy.deepcopy(self.output_schema)
        return tool


@dataclass(frozen=True)
class ChainContext:
    """Where a call sits in a chain of delegation (from `Client.route_task`).

    Attributes:
        depth: How many delegations led to the call; 0 for a direct call.
        root_agent: The agent at the top of the chain; empty when depth is 0.
    """

    depth: int = 0
    root_agent: str = ""

    @classmethod
    def from_proto(cls, pb: agent_pb2.ChainContext) -> ChainContext:
        """Build a chain context from its message."""
        return cls(depth=pb.depth, root_agent=pb.root_agent)

    def to_proto(self) -> agent_pb2.ChainContext:
        """Return the `toolvault.v1.ChainContext` message of this context."""
        return agent_pb2.ChainContext(depth=self.depth, root_agent=self.root_agent)


@dataclass(frozen=True)
class ToolResult:
    """The outcome of a tool call, ready for the model.

    Attributes:
        execution: The recorded run, with the agent, revision and conversation.
        is_error: True when the tool did not produce a valid result (it failed, hit a
            limit, or its result does not match the output schema).
        text: What to hand the model: the result as JSON text, or a short report of the
            failure.
    """

    execution: Execution
    is_error: bool
    text: str

    @classmethod
    def from_proto(cls, pb: agent_pb2.CallToolResponse) -> ToolResult:
        """Build a tool result from a CallTool response."""
        return cls(Execution.from_proto(pb.execution, pb.output_files), pb.is_error, pb.text)


class RoutingStrategy(enum.StrEnum):
    """How `Client.route_task` picks among qualifying agents; names ignore case."""

    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"
    NAMED = "named"

    @classmethod
    def _missing_(cls, value: object) -> RoutingStrategy:
        return _member_named(cls, value, "routing strategy")

    def to_proto(self) -> agent_pb2.RoutingStrategy.ValueType:
        """Return the `toolvault.v1.RoutingStrategy` value of this strategy."""
        return agent_pb2.RoutingStrategy.Value(_STRATEGY_PREFIX + self.name)


@dataclass(frozen=True)
class RoutedTask:
    """The agent picked for a task, and the chain context its calls must carry."""

    agent: Agent
    chain: ChainContext

    @classmethod
    def from_proto(cls, pb: agent_pb2.RouteTaskResponse) -> RoutedTask:
        """Build a routed task from a RouteTask response."""
        return cls(Agent.from_proto(pb.agent), ChainContext.from_proto(pb.chain))
