"""Agent models offline: specs from documents and messages, tool specs in each SDK's shape."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import mcp.types
import pydantic
import pytest
from anthropic.types import ToolParam
from google.protobuf.timestamp_pb2 import Timestamp
from openai.types.chat import ChatCompletionToolParam
from openai.types.responses import FunctionToolParam

from toolvault.client import (
    Agent,
    AgentSpec,
    ChainContext,
    Execution,
    ExecutionStatus,
    RoutedTask,
    RoutingStrategy,
    ToolResult,
    ToolSpec,
)
from toolvault.v1 import agent_pb2, execution_pb2

WHEN = datetime(2025, 3, 1, 12, 30, 15, tzinfo=UTC)
ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 2}},
    "required": ["a"],
}
FULL_SPEC = AgentSpec(
    name="calc",
    description="Does arithmetic.",
    system_prompt="You add.\nCarefully.",
    model_settings={"model": "gpt-4o-mini", "temperature": 0.1},
    input_schema={"type": "object"},
    output_schema={"type": "number"},
    tools=("add@prod", "div"),
    capabilities=("math",),
    max_chain_depth=0,
    enabled=False,
)


def tool(**fields: Any) -> ToolSpec:
    defaults: dict[str, Any] = {
        "name": "add",
        "description": "Adds two numbers.",
        "input_schema": ADD_SCHEMA,
        "output_schema": None,
        "ref": "add@prod",
        "version": 3,
        "sha256": "ab" * 32,
    }
    return ToolSpec(**{**defaults, **fields})


def timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def test_a_spec_from_a_document_turns_lists_into_tuples_and_fills_defaults() -> None:
    spec = AgentSpec.from_dict({"name": "calc", "tools": ["add", "div@2"], "capabilities": []})
    assert spec == AgentSpec(name="calc", tools=("add", "div@2"))
    assert (spec.model_settings, spec.max_chain_depth, spec.enabled) == ({}, None, True)


def test_a_document_with_every_key_gives_the_full_spec() -> None:
    document = {
        field.name: getattr(FULL_SPEC, field.name) for field in dataclasses.fields(FULL_SPEC)
    }
    document.update(tools=list(FULL_SPEC.tools), capabilities=list(FULL_SPEC.capabilities))
    assert AgentSpec.from_dict(document) == FULL_SPEC


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"name": "a", "tool": ["x"], "prompt": ""}, "unknown key(s) 'prompt', 'tool'"),
        ({"name": "a", 1: "x"}, "unknown key(s) 1"),
        ({"description": "no name"}, "missing key 'name'"),
        ({"name": "a", "tools": "add"}, "'tools' must be a list of strings, not 'add'"),
        ({"name": "a", "tools": ["add", 3]}, "'tools' must be a list of strings, not ['add', 3]"),
        ({"name": "a", "model_settings": "gpt"}, "'model_settings' must be a mapping, not 'gpt'"),
        ({"name": 7}, "'name' must be a string, not 7"),
        ({"name": "a", "enabled": "yes"}, "'enabled' must be true or false, not 'yes'"),
        (
            {"name": "a", "max_chain_depth": True},
            "'max_chain_depth' must be a non-negative integer or null, not True",
        ),
        (
            {"name": "a", "max_chain_depth": -1},
            "'max_chain_depth' must be a non-negative integer or null, not -1",
        ),
    ],
)
def test_a_bad_document_raises_value_error_naming_the_key(
    document: dict[Any, Any], message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        AgentSpec.from_dict(document)
    assert str(raised.value) == message


def test_a_spec_becomes_a_message_with_json_text_and_back() -> None:
    message = FULL_SPEC.to_proto()
    assert message.model_settings_json == '{"model": "gpt-4o-mini", "temperature": 0.1}'
    assert (message.input_schema_json, message.output_schema_json) == (
        '{"type": "object"}',
        '{"type": "number"}',
    )
    assert (message.HasField("max_chain_depth"), message.max_chain_depth) == (True, 0)
    assert (message.HasField("enabled"), message.enabled) == (True, False)
    assert AgentSpec.from_proto(message) == FULL_SPEC


def test_defaults_travel_as_empty_fields_and_an_unset_depth() -> None:
    message = AgentSpec("calc").to_proto()
    assert (message.model_settings_json, message.input_schema_json) == ("", "")
    assert not message.HasField("max_chain_depth")
    assert AgentSpec.from_proto(message) == AgentSpec("calc")
    # An older server that leaves `enabled` unset means enabled.
    assert AgentSpec.from_proto(agent_pb2.AgentSpec(name="calc")).enabled is True


def test_an_agent_message_becomes_an_agent_with_a_utc_creation_time() -> None:
    message = agent_pb2.Agent(spec=FULL_SPEC.to_proto(), revision=4, create_time=timestamp(WHEN))
    assert Agent.from_proto(message) == Agent(spec=FULL_SPEC, revision=4, created_at=WHEN)


def test_a_tool_spec_message_has_parsed_schemas() -> None:
    message = agent_pb2.ToolSpec(
        name="add",
        description="Adds two numbers.",
        input_schema_json='{"type": "object", "properties": {"a": {"type": "integer"}, '
        '"b": {"type": "integer", "default": 2}}, "required": ["a"]}',
        ref="add@prod",
        version=3,
        sha256="ab" * 32,
    )
    assert ToolSpec.from_proto(message) == tool()
    message.output_schema_json = '{"type": "number"}'
    assert ToolSpec.from_proto(message).output_schema == {"type": "number"}


def test_tool_specs_render_in_the_exact_shape_of_each_target() -> None:
    spec = tool(output_schema={"type": "object", "properties": {"sum": {"type": "integer"}}})
    assert spec.to_openai_chat() == {
        "type": "function",
        "function": {"name": "add", "description": "Adds two numbers.", "parameters": ADD_SCHEMA},
    }
    assert spec.to_openai_responses() == {
        "type": "function",
        "name": "add",
        "description": "Adds two numbers.",
        "parameters": ADD_SCHEMA,
        "strict": False,
    }
    assert spec.to_anthropic() == {
        "name": "add",
        "description": "Adds two numbers.",
        "input_schema": ADD_SCHEMA,
    }
    assert spec.to_mcp() == {
        "name": "add",
        "description": "Adds two numbers.",
        "inputSchema": ADD_SCHEMA,
        "annotations": {"openWorldHint": False},
        "outputSchema": {"type": "object", "properties": {"sum": {"type": "integer"}}},
    }


@pytest.mark.parametrize("output_schema", [None, {"type": "number"}, {"type": "array"}])
def test_mcp_gets_an_output_schema_only_for_object_results(
    output_schema: dict[str, Any] | None,
) -> None:
    assert "outputSchema" not in tool(output_schema=output_schema).to_mcp()


def test_mcp_says_which_tools_reach_the_network() -> None:
    # MCP's default is to assume a tool reaches the world: each says so, either way.
    assert tool().to_mcp()["annotations"] == {"openWorldHint": False}
    assert tool(open_world=True).to_mcp()["annotations"] == {"openWorldHint": True}


def test_changing_a_rendered_tool_leaves_the_spec_alone() -> None:
    spec = tool()
    spec.to_openai_chat()["function"]["parameters"]["additionalProperties"] = False
    spec.to_anthropic()["input_schema"]["required"].append("b")
    assert spec.input_schema == ADD_SCHEMA


# Each SDK's request type, and how to validate a rendered dict against it. The TypedDicts
# ignore unknown keys, so the validated value must also equal the input: nothing dropped.
def validated_openai_chat(value: dict[str, Any]) -> object:
    return pydantic.TypeAdapter(ChatCompletionToolParam).validate_python(value)


def validated_openai_responses(value: dict[str, Any]) -> object:
    return pydantic.TypeAdapter(FunctionToolParam).validate_python(value)


def validated_anthropic(value: dict[str, Any]) -> object:
    return pydantic.TypeAdapter(ToolParam).validate_python(value)


def validated_mcp(value: dict[str, Any]) -> object:
    return mcp.types.Tool.model_validate(value).model_dump(by_alias=True, exclude_none=True)


@pytest.mark.parametrize(
    ("render", "validate"),
    [
        (ToolSpec.to_openai_chat, validated_openai_chat),
        (ToolSpec.to_openai_responses, validated_openai_responses),
        (ToolSpec.to_anthropic, validated_anthropic),
        (ToolSpec.to_mcp, validated_mcp),
    ],
    ids=["openai-chat", "openai-responses", "anthropic", "mcp"],
)
@pytest.mark.parametrize(
    "spec",
    [
        tool(),
        tool(description="", input_schema={"type": "object", "properties": {}}),
        tool(output_schema={"type": "object", "properties": {"sum": {"type": "integer"}}}),
    ],
    ids=["plain", "empty", "object-result"],
)
def test_rendered_tools_validate_against_the_target_sdks_own_types(
    spec: ToolSpec, render: Any, validate: Any
) -> None:
    rendered = render(spec)
    assert validate(rendered) == rendered


def test_a_validator_notices_a_misplaced_key() -> None:
    # The check above would be empty if the validators accepted anything.
    misplaced = {**tool().to_openai_chat(), "name": "add"}
    assert validated_openai_chat(misplaced) != misplaced
    with pytest.raises(pydantic.ValidationError):
        validated_anthropic({"name": "add", "parameters": ADD_SCHEMA})


def test_a_chain_context_round_trips_and_defaults_to_the_top() -> None:
    chain = ChainContext(depth=2, root_agent="planner")
    assert ChainContext.from_proto(chain.to_proto()) == chain
    assert ChainContext() == ChainContext.from_proto(agent_pb2.ChainContext())


def test_a_call_tool_response_becomes_a_tool_result_with_the_agent_fields() -> None:
    response = agent_pb2.CallToolResponse(
        execution=execution_pb2.Execution(
            id="e1",
            function_name="div",
            version=1,
            status=execution_pb2.EXECUTION_STATUS_OUTPUT_SCHEMA_MISMATCH,
            args_json='{"x": 2}',
            result_json="0.5",
            agent="calc",
            agent_revision=2,
            conversation_id="c1",
            chain_depth=1,
        ),
        is_error=True,
        text="the result does not match the output schema",
    )
    result = ToolResult.from_proto(response)
    assert (result.is_error, result.text) == (True, "the result does not match the output schema")
    execution = result.execution
    assert isinstance(execution, Execution)
    assert execution.status is ExecutionStatus.OUTPUT_SCHEMA_MISMATCH
    # The function did return; its result is kept even though it is not `ok`.
    assert (execution.result, execution.ok) == (0.5, False)
    assert (execution.agent, execution.agent_revision) == ("calc", 2)
    assert (execution.conversation_id, execution.chain_depth) == ("c1", 1)


def test_a_route_task_response_becomes_a_routed_task() -> None:
    response = agent_pb2.RouteTaskResponse(
        agent=agent_pb2.Agent(spec=agent_pb2.AgentSpec(name="calc"), revision=1),
        chain=agent_pb2.ChainContext(depth=1, root_agent="planner"),
    )
    routed = RoutedTask.from_proto(response)
    assert (routed.agent.spec.name, routed.agent.revision) == ("calc", 1)
    assert routed.chain == ChainContext(depth=1, root_agent="planner")


@pytest.mark.parametrize("strategy", list(RoutingStrategy))
def test_every_routing_strategy_maps_to_its_proto_value(strategy: RoutingStrategy) -> None:
    name = agent_pb2.RoutingStrategy.Name(strategy.to_proto())
    assert name == f"ROUTING_STRATEGY_{strategy.value.upper()}"


def test_strategy_names_are_accepted_in_any_case_and_unknown_ones_are_listed() -> None:
    assert RoutingStrategy("LEAST_LOADED") is RoutingStrategy.LEAST_LOADED
    assert RoutingStrategy("named") is RoutingStrategy.NAMED
    with pytest.raises(ValueError) as raised:
        RoutingStrategy("random")
    assert str(raised.value) == (
        "unknown routing strategy 'random'; valid values: round_robin, least_loaded, named"
    )
