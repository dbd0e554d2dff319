"""Agents as values: a definition, a stored revision, a tool, a call's place in a chain."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass

from toolvault.server.domain.executions import ExecutionInfo
from toolvault.server.domain.functions import VersionInfo


@dataclass(frozen=True)
class AgentDefinition:
    """What defines an agent; JSON texts are canonical (sorted keys, compact)."""

    name: str
    description: str = ""
    system_prompt: str = ""
    model_settings: str = "{}"
    input_schema: str | None = None
    output_schema: str | None = None
    tools: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    max_chain_depth: int | None = None
    enabled: bool = True

    def canonical(self) -> str:
        """The stored form; two definitions are the same revision iff these are equal."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_canonical(cls, text: str) -> AgentDefinition:
        """Read the stored form back."""
        fields = json.loads(text)
        fields["tools"] = tuple(fields["tools"])
        fields["capabilities"] = tuple(fields["capabilities"])
        return cls(**fields)


@dataclass(frozen=True)
class AgentInfo:
    """One revision of an agent."""

    definition: AgentDefinition
    revision: int
    created_at: dt.datetime


@dataclass(frozen=True)
class ToolInfo:
    """A tool as a model sees it, with the version its ref resolves to now."""

    name: str
    description: str
    input_schema: str
    output_schema: str | None
    ref: str
    version: VersionInfo


@dataclass(frozen=True)
class Chain:
    """Where a call sits in a chain of delegation."""

    depth: int = 0
    root_agent: str = ""


@dataclass(frozen=True)
class ToolCallResult:
    """A tool call's run, and what to hand the model."""

    execution: ExecutionInfo
    is_error: bool
    text: str
