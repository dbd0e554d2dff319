"""Agents in the domain layer: definitions, tool specs, tool calls, routing and chains."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from tests.server import ACTOR
from toolvault.server.config import Settings
from toolvault.server.db.engine import Database
from toolvault.server.domain.agents import AgentDefinition, Chain
from toolvault.server.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from toolvault.server.domain.executions import ExecutionFilter
from toolvault.server.services.agents import Agents
from toolvault.server.services.functions import FunctionStore, PublishRequest
from toolvault.server.services.history import History
from toolvault.server.services.invocations import Invocations

WORDS = '''def main(text: str, top: int = 3) -> list:
    """Count words.

    Args:
        text: The text to count.
        top: How many of the most common to return.
    """
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:top]
'''


@pytest.fixture
def agents(database: Database, functions: FunctionStore, settings: Settings) -> Agents:
    functions.publish(PublishRequest(name="words", source=WORDS), actor=ACTOR)
    functions.publish(
        PublishRequest(name="fail", source="def main():\n    return 1 / 0\n"), actor=ACTOR
    )
    functions.publish(
        PublishRequest(
            name="liar",
            source="def main():\n    return 'not a number'\n",
            output_schema='{"type": "number"}',
        ),
        actor=ACTOR,
    )
    return Agents(database, functions, Invocations(database, functions, settings), settings)


def test_definitions_get_revisions_and_identical_updates_change_nothing(agents: Agents) -> None:
    first = agents.create(
        AgentDefinition(name="writer", tools=("words",), capabilities=("text",)), actor=ACTOR
    )
    assert first.revision == 1
    with pytest.raises(AlreadyExists, match="agent 'writer' already exists"):
        agents.create(AgentDefinition(name="writer"), actor=ACTOR)
    same, changed = agents.update(
        AgentDefinition(name="writer", tools=("words",), capabilities=("text", "text")),
        allow_missing=False,
        actor=ACTOR,
    )
    assert (same.revision, changed) == (1, False)
    second, changed = agents.update(
        AgentDefinition(name="writer", system_prompt="Be brief.", tools=("words@1",)),
        allow_missing=False,
        actor=ACTOR,
    )
    assert (second.revision, changed) == (2, True)
    assert agents.get("writer", 1).definition.system_prompt == ""
    assert [r.revision for r in agents.revisions("writer", size=0, token="")[0]] == [2, 1]
    with pytest.raises(NotFound, match="agent 'ghost' not found"):
        agents.update(AgentDefinition(name="ghost"), allow_missing=False, actor=ACTOR)
    created, changed = agents.update(AgentDefinition(name="ghost"), allow_missing=True, actor=ACTOR)
    assert (created.revision, changed) == (1, True)
    assert agents.delete("writer", actor=ACTOR) == 2
    with pytest.raises(NotFound):
        agents.get("writer")


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (AgentDefinition(name="Bad"), "name 'Bad' is invalid"),
        (AgentDefinition(name="a", tools=("nope",)), "tools[0]: ref 'nope' does not resolve"),
        (AgentDefinition(name="a", tools=("words@9",)), "has no version 9"),
        (AgentDefinition(name="a", tools=("words", "words@1")), "names function 'words' again"),
        (AgentDefinition(name="a", capabilities=("Bad Cap",)), "capability 'Bad Cap'"),
        (AgentDefinition(name="a", max_chain_depth=99), "max_chain_depth is 99"),
        (AgentDefinition(name="a", model_settings="[1]"), "must be a JSON object"),
        (AgentDefinition(name="a", input_schema='{"type": 1}'), "not a valid JSON Schema"),
    ],
)
def test_bad_definitions_are_rejected_naming_the_problem(
    agents: Agents, definition: AgentDefinition, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[")):
        agents.create(definition, actor=ACTOR)
    with pytest.raises(NotFound):
        agents.get(definition.name)


def test_tool_specs_derive_the_schema_from_the_signature(agents: Agents) -> None:
    agents.create(AgentDefinition(name="writer", tools=("words", "fail")), actor=ACTOR)
    words, fail = agents.tools("writer")
    assert (words.name, words.ref) == ("words", "words")
    assert words.description.startswith("Count words.\n\nArgs:\n")  # the whole docstring
    assert json.loads(words.input_schema) == {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "The text to count."},
            "top": {
                "type": "integer",
                "description": "How many of the most common to return.",
                "default": 3,
            },
        },
        "required": ["text"],
        "additionalProperties": False,
    }
    assert json.loads(fail.input_schema)["properties"] == {}


def call(agents: Agents, tool: str, args: object, **kwargs: object) -> object:
    options: dict[str, object] = {"conversation_id": "c1", "chain": Chain(), "caller": "test"}
    return asyncio.run(
        agents.call_tool("writer", tool, json.dumps(args), **{**options, **kwargs})  # type: ignore[arg-type]
    )


def test_tool_calls_run_only_the_agents_tools_with_valid_arguments(
    agents: Agents, database: Database
) -> None:
    agents.create(AgentDefinition(name="writer", tools=("words", "fail", "liar")), actor=ACTOR)
    ok = call(agents, "words", {"text": "a b a"})
    assert (ok.is_error, json.loads(ok.text)) == (False, [["a", 2], ["b", 1]])  # type: ignore[attr-defined]
    failed = call(agents, "fail", {})
    assert failed.is_error and failed.text.startswith("ERROR: ZeroDivisionError")  # type: ignore[attr-defined]
    lied = call(agents, "liar", {})
    assert lied.is_error and lied.execution.status == "OUTPUT_SCHEMA_MISMATCH"  # type: ignore[attr-defined]
    assert "$: 'not a number' is not of type 'number'" in lied.text  # type: ignore[attr-defined]
    with pytest.raises(PermissionDenied, match="agent 'writer' may not call 'probe'"):
        call(agents, "probe", {})
    with pytest.raises(InvalidArgument, match=r"\$.top: 'x' is not of type 'integer'"):
        call(agents, "words", {"text": "a", "top": "x"})
    with pytest.raises(InvalidArgument, match="Additional properties are not allowed"):
        call(agents, "words", {"text": "a", "extra": 1})
    recorded, _ = History(database).executions(
        ExecutionFilter(agent="writer", conversation_id="c1"), size=0, token=""
    )
    assert sorted(e.status for e in recorded) == ["ERROR", "OK", "OUTPUT_SCHEMA_MISMATCH"]
    assert {(e.context.agent, e.context.agent_revision) for e in recorded} == {("writer", 1)}


def test_disabled_agents_neither_call_tools_nor_get_routed(agents: Agents) -> None:
    agents.create(
        AgentDefinition(name="writer", tools=("words",), capabilities=("text",), enabled=False),
        actor=ACTOR,
    )
    with pytest.raises(FailedPrecondition, match="agent 'writer' is disabled"):
        call(agents, "words", {"text": "a"})
    with pytest.raises(NotFound, match="no enabled agent with capability 'text'"):
        agents.route("text", "", strategy="round_robin", named="", calling_agent="", chain=Chain())


def test_routing_takes_turns_or_picks_by_name(agents: Agents) -> None:
    for name in ("b-agent", "a-agent", "c-other"):
        capability = "other" if name == "c-other" else "text"
        agents.create(AgentDefinition(name=name, capabilities=(capability,)), actor=ACTOR)
    picks = [
        agents.route("text", "", strategy="round_robin", named="", calling_agent="", chain=Chain())
        for _ in range(3)
    ]
    assert [p[0].definition.name for p in picks] == ["a-agent", "b-agent", "a-agent"]
    named, chain = agents.route(
        "text", "", strategy="named", named="b-agent", calling_agent="", chain=Chain()
    )
    assert (named.definition.name, chain) == ("b-agent", Chain())
    least, _ = agents.route(
        "text", "", strategy="least_loaded", named="", calling_agent="", chain=Chain()
    )
    assert least.definition.name == "a-agent"
    with pytest.raises(NotFound, match="no agent 'c-other' with capability 'text'"):
        agents.route("text", "", strategy="named", named="c-other", calling_agent="", chain=Chain())


def test_a_delegation_cycle_stops_at_max_chain_depth(agents: Agents) -> None:
    agents.create(
        AgentDefinition(name="ping", capabilities=("pong",), max_chain_depth=2), actor=ACTOR
    )
    agents.create(
        AgentDefinition(name="pong", capabilities=("ping",), max_chain_depth=2), actor=ACTOR
    )
    caller, chain, hops = "ping", Chain(), 0
    with pytest.raises(FailedPrecondition, match="may delegate at most 2 level"):
        while True:
            capability = "pong" if caller == "ping" else "ping"
            picked, chain = agents.route(
                capability, "", strategy="round_robin", named="", calling_agent=caller, chain=chain
            )
            caller, hops = picked.definition.name, hops + 1
    assert (hops, chain) == (2, Chain(depth=2, root_agent="ping"))
    agents.create(AgentDefinition(name="writer", tools=("words",), max_chain_depth=1), actor=ACTOR)
    with pytest.raises(FailedPrecondition, match="chain depth 2 passes agent 'writer'"):
        call(agents, "words", {"text": "a"}, chain=Chain(depth=2, root_agent="ping"))


def test_concurrent_applies_and_creates_of_a_new_agent_make_one_revision(agents: Agents) -> None:
    # As on replicas: each call its own transaction, all finding the name free at first.
    definition = AgentDefinition(name="", tools=("words",))

    def apply(name: str, start: threading.Barrier) -> str:
        start.wait()
        info, changed = agents.update(
            replace(definition, name=name), allow_missing=True, actor=ACTOR
        )
        return f"{info.revision}:{changed}"

    def create(name: str, start: threading.Barrier) -> str:
        start.wait()
        try:
            return f"{agents.create(replace(definition, name=name), actor=ACTOR).revision}:True"
        except AlreadyExists:
            return "exists"

    for round_ in range(10):
        start = threading.Barrier(4)
        name = f"agent-{round_}"
        with ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(call, name, start) for call in (apply, apply, create, create)]
            outcomes = sorted(call.result() for call in calls)
        assert outcomes.count("1:True") == 1, outcomes
        assert set(outcomes) <= {"1:True", "1:False", "exists"}, outcomes
        assert agents.get(name).revision == 1
