"""Agents: definitions with revisions, their tools as specs, tool calls and routing.

The server never talks to a model. It keeps the definitions, renders each agent's tools
as specs, runs the tool calls a caller's agent loop sends (only the agent's own tools,
arguments checked against the tool's schema), and bounds delegation: every call carries
its chain depth, and a hand-over that would pass the delegating agent's
``max_chain_depth`` is refused, so delegation cycles end.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from toolvault import sandbox
from toolvault.server.config import Settings
from toolvault.server.db import agents, audit
from toolvault.server.db.engine import Database
from toolvault.server.db.tables import Agent
from toolvault.server.domain import names
from toolvault.server.domain.agents import (
    AgentDefinition,
    AgentInfo,
    Chain,
    ToolCallResult,
    ToolInfo,
)
from toolvault.server.domain.audit import Actor
from toolvault.server.domain.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    not_found,
)
from toolvault.server.domain.executions import CallContext, ExecutionStatus
from toolvault.server.domain.names import EVERYWHERE, Scope, parse_ref
from toolvault.server.domain.paging import decode_token, encode_token, page_size
from toolvault.server.domain.schemas import checked_schema, parse_json, problems
from toolvault.server.domain.toolspec import derived_schema_json
from toolvault.server.services.functions import FunctionStore
from toolvault.server.services.invocations import Invocations
from toolvault.server.services.plugins import Plugins

CAPABILITY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MAX_TEXT_CHARS = 64 * 1024
MAX_CONVERSATION_ID_CHARS = 128
STRATEGIES = ("round_robin", "least_loaded", "named")


class Agents:
    """Defines agents, lists their tools, runs their tool calls and routes tasks."""

    def __init__(
        self,
        db: Database,
        functions: FunctionStore,
        invocations: Invocations,
        settings: Settings,
        *,
        plugins: Plugins | None = None,
    ) -> None:
        self._db = db
        self._functions = functions
        self._invocations = invocations
        self._settings = settings
        self._plugins = plugins or Plugins()
        # Per server process: least_loaded and round_robin balance this replica's calls.
        self._in_flight: collections.Counter[str] = collections.Counter()
        # Turns are counted per capability and set of candidates: callers who see other
        # candidates (keys of other namespaces) take no turns from each other, so that
        # a pick reveals nothing of other namespaces' routing.
        self._turns: collections.Counter[tuple[str, ...]] = collections.Counter()

    def create(self, definition: AgentDefinition, *, actor: Actor) -> AgentInfo:
        """Store revision 1 of a new agent."""
        definition = self._validated(definition)
        exists = AlreadyExists(f"agent {definition.name!r} already exists")
        try:
            with self._db.write.begin() as session:
                if agents.find(session, definition.name) is not None:
                    raise exists
                info = agents.add_revision(session, None, definition)
                audit.record(session, actor, "agent.create", definition.name, revision=1)
        except IntegrityError as e:
            # A concurrent create (on this or another replica) inserted the name first.
            raise exists from e
        self._plugins.agent_changed(info, "created")
        return info

    def update(
        self, definition: AgentDefinition, *, allow_missing: bool, actor: Actor
    ) -> tuple[AgentInfo, bool]:
        """Store a new revision unless identical to the current one; True if one was."""
        definition = self._validated(definition)
        try:
            return self._update(definition, allow_missing=allow_missing, actor=actor)
        except IntegrityError:
            # A concurrent create inserted the name first: this time the row is there
            # to lock, and the update queues behind it.
            return self._update(definition, allow_missing=allow_missing, actor=actor)

    def _update(
        self, definition: AgentDefinition, *, allow_missing: bool, actor: Actor
    ) -> tuple[AgentInfo, bool]:
        with self._db.write.begin() as session:
            agent = agents.find(session, definition.name, lock=True)
            if agent is None and not allow_missing:
                raise not_found("agent", definition.name)
            if agent is not None:
                current = _revision(session, agent, agent.current_revision)
                if current.definition.canonical() == definition.canonical():
                    return current, False
            info = agents.add_revision(session, agent, definition)
            action = "agent.update" if agent is not None else "agent.create"
            audit.record(session, actor, action, definition.name, revision=info.revision)
        self._plugins.agent_changed(info, "updated" if agent is not None else "created")
        return info, True

    def get(self, name: str, revision: int = 0) -> AgentInfo:
        """The current revision of an agent, or the one numbered ``revision``."""
        with self._db.read.begin() as session:
            agent = self._agent(session, name)
            return _revision(session, agent, revision or agent.current_revision)

    def agents(
        self, *, capability: str, scope: Scope = EVERYWHERE, size: int, token: str
    ) -> tuple[list[AgentInfo], str]:
        """A page of the current agents in ``scope`` by name, optionally with a capability."""
        key = decode_token(token, str)
        limit = page_size(size)
        with self._db.read.begin() as session:
            rows = agents.page(
                session,
                scope=scope,
                capability=capability,
                after=key[0] if key else None,
                limit=limit + 1,
            )
            infos = [_revision(session, row, row.current_revision) for row in rows[:limit]]
        more = len(rows) > limit
        return infos, encode_token([infos[-1].definition.name]) if more else ""

    def revisions(self, name: str, *, size: int, token: str) -> tuple[list[AgentInfo], str]:
        """A page of an agent's revisions, newest first."""
        key = decode_token(token, int)
        limit = page_size(size)
        with self._db.read.begin() as session:
            agent = self._agent(session, name)
            before = key[0] if key else None
            rows = agents.revisions(session, agent, before=before, limit=limit + 1)
        more = len(rows) > limit
        return rows[:limit], encode_token([rows[limit - 1].revision]) if more else ""

    def delete(self, name: str, *, actor: Actor) -> int:
        """Delete an agent with its revisions; returns how many revisions."""
        with self._db.write.begin() as session:
            agent = self._agent(session, name, lock=True)
            current = _revision(session, agent, agent.current_revision)
            count = agents.delete(session, agent)
            audit.record(session, actor, "agent.delete", name, revisions=count)
        self._plugins.agent_changed(current, "deleted")
        return count

    def tools(self, name: str) -> list[ToolInfo]:
        """The agent's tools, resolved now, in the order of its definition."""
        definition = self.get(name).definition
        return [self._tool(definition, ref) for ref in definition.tools]

    async def call_tool(
        self,
        agent: str,
        tool: str,
        arguments_json: str,
        *,
        conversation_id: str,
        chain: Chain,
        caller: str,
        files: tuple[sandbox.File, ...] = (),
    ) -> ToolCallResult:
        """Run one of the agent's tools (with ``files``) and say what the model should read."""
        if len(conversation_id) > MAX_CONVERSATION_ID_CHARS:
            raise InvalidArgument(
                f"conversation_id is longer than {MAX_CONVERSATION_ID_CHARS} characters"
            )
        info = await asyncio.to_thread(self.get, agent)
        definition = info.definition
        if not definition.enabled:
            raise FailedPrecondition(f"agent {agent!r} is disabled")
        depth_limit = self._depth_limit(definition)
        if chain.depth > depth_limit:
            raise FailedPrecondition(
                f"chain depth {chain.depth} passes agent {agent!r}'s max_chain_depth "
                f"of {depth_limit}"
            )
        refs = {_tool_name(ref): ref for ref in definition.tools}
        if tool not in refs:
            allowed = ", ".join(refs) or "none"
            raise PermissionDenied(f"agent {agent!r} may not call {tool!r} (its tools: {allowed})")
        spec = await asyncio.to_thread(self._tool, definition, refs[tool])
        context = CallContext(
            caller=caller,
            agent=agent,
            agent_revision=info.revision,
            conversation_id=conversation_id,
            chain_depth=chain.depth,
        )
        self._in_flight[agent] += 1
        try:
            execution = await self._invocations.run(
                spec.version,
                arguments_json,
                context,
                spec.input_schema,
                args_field="arguments_json",
                files=files,
            )
        finally:
            self._in_flight[agent] -= 1
        if execution.status == ExecutionStatus.OK:
            return ToolCallResult(execution, False, execution.result_json)
        text = f"{execution.status}: {execution.error_type}: {execution.error_message}"
        if execution.traceback:
            text += "\n" + execution.traceback
        return ToolCallResult(execution, True, text)

    def route(
        self,
        capability: str,
        input_json: str,
        *,
        strategy: str,
        named: str,
        calling_agent: str,
        chain: Chain,
        scope: Scope = EVERYWHERE,
    ) -> tuple[AgentInfo, Chain]:
        """Pick an enabled agent in ``scope`` with ``capability``, and the chain it carries."""
        if not CAPABILITY.fullmatch(capability):
            raise InvalidArgument(f"capability {capability!r} is invalid")
        if strategy not in STRATEGIES:
            raise InvalidArgument(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        if calling_agent:
            if not scope.allows(calling_agent):
                raise not_found("agent", calling_agent)
            caller = self.get(calling_agent).definition
            depth = chain.depth + 1
            if depth > self._depth_limit(caller):
                raise FailedPrecondition(
                    f"agent {calling_agent!r} may delegate at most "
                    f"{self._depth_limit(caller)} level(s) deep; this hand-over would be "
                    f"level {depth}"
                )
            chain = Chain(depth, chain.root_agent or calling_agent)
        candidates = [
            info
            for info in self._all_with(capability, scope)
            if info.definition.enabled and (strategy != "named" or info.definition.name == named)
        ]
        if not candidates:
            which = f"agent {named!r} with" if strategy == "named" else "enabled agent with"
            raise NotFound(f"no {which} capability {capability!r}")
        if strategy == "least_loaded":
            picked = min(
                candidates, key=lambda i: (self._in_flight[i.definition.name], i.definition.name)
            )
        else:
            turn = (capability, *(i.definition.name for i in candidates))
            picked = candidates[self._turns[turn] % len(candidates)]
            self._turns[turn] += 1
        schema = picked.definition.input_schema
        if schema is not None and (
            found := problems(schema, parse_json(input_json or "null", "input_json"))
        ):
            raise InvalidArgument(
                f"input_json does not match the input schema of agent "
                f"{picked.definition.name!r}: {found}"
            )
        return picked, chain

    def _all_with(self, capability: str, scope: Scope) -> list[AgentInfo]:
        with self._db.read.begin() as session:
            rows = agents.with_capability(session, capability, scope)
            return [_revision(session, row, row.current_revision) for row in rows]

    def _depth_limit(self, definition: AgentDefinition) -> int:
        if definition.max_chain_depth is None:
            return self._settings.default_max_chain_depth
        return definition.max_chain_depth

    def _tool(self, definition: AgentDefinition, ref: str) -> ToolInfo:
        try:
            version = self._functions.resolve_cached(ref)
        except NotFound as e:
            raise FailedPrecondition(
                f"agent {definition.name!r}'s tool {ref!r} no longer resolves: {e}"
            ) from e
        content = version.content
        schema = content.input_schema or derived_schema_json(content.source, content.entrypoint)
        return ToolInfo(
            name=_tool_name(version.name),
            description=content.description,
            input_schema=schema,
            output_schema=content.output_schema,
            ref=ref,
            version=version,
        )

    def _validated(self, definition: AgentDefinition) -> AgentDefinition:
        name = definition.name
        names.check_agent_name(name)
        for field in ("description", "system_prompt"):
            if len(getattr(definition, field)) > MAX_TEXT_CHARS:
                raise InvalidArgument(f"{field} is longer than {MAX_TEXT_CHARS} characters")
        settings = parse_json(definition.model_settings or "{}", "model_settings_json")
        if not isinstance(settings, dict):
            raise InvalidArgument("model_settings_json must be a JSON object")
        seen: dict[str, str] = {}
        namespace = names.namespace_of(name)
        for index, ref in enumerate(definition.tools):
            # Keys are scoped to namespaces: a tool from another one would let this
            # agent's callers run code they cannot see.
            if names.namespace_of(ref) != namespace:
                raise InvalidArgument(
                    f"tools[{index}]: {ref!r} is not in the agent's namespace {namespace!r}"
                )
            try:
                function = parse_ref(ref)[0]
                self._functions.resolve(ref)
            except DomainError as e:
                raise InvalidArgument(f"tools[{index}]: ref {ref!r} does not resolve: {e}") from e
            if function in seen:
                raise InvalidArgument(
                    f"tools[{index}]: {ref!r} names function {function!r} again "
                    f"(already as {seen[function]!r})"
                )
            seen[function] = ref
        for capability in definition.capabilities:
            if not CAPABILITY.fullmatch(capability):
                raise InvalidArgument(
                    f"capability {capability!r} is invalid: use a-z, 0-9, _, . and -"
                )
        depth = definition.max_chain_depth
        maximum = self._settings.max_chain_depth
        if depth is not None and not 0 <= depth <= maximum:
            raise InvalidArgument(f"max_chain_depth is {depth}: it must be between 0 and {maximum}")
        return AgentDefinition(
            name=name,
            description=definition.description,
            system_prompt=definition.system_prompt,
            model_settings=json.dumps(settings, sort_keys=True, separators=(",", ":")),
            input_schema=checked_schema(definition.input_schema or "", "input_schema_json"),
            output_schema=checked_schema(definition.output_schema or "", "output_schema_json"),
            tools=definition.tools,
            capabilities=tuple(sorted(set(definition.capabilities))),
            max_chain_depth=depth,
            enabled=definition.enabled,
        )

    def _agent(self, session: Session, name: str, *, lock: bool = False) -> Agent:
        agent = agents.find(session, name, lock=lock)
        if agent is None:
            raise not_found("agent", name)
        return agent


def _revision(session: Session, agent: Agent, number: int) -> AgentInfo:
    info = agents.revision(session, agent, number)
    if info is None:
        raise NotFound(
            f"agent {agent.name!r} has no revision {number} (current is {agent.current_revision})"
        )
    return info


def _tool_name(ref: str) -> str:
    """The name a model calls a tool by: its function's name without the namespace.

    An agent's tools share its namespace, so these are unique within the agent; and
    models' tool names allow no slash.
    """
    return parse_ref(ref)[0].rpartition("/")[2]
