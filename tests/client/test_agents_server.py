"""Agents against a real server (SQLite and PostgreSQL): definitions and revisions, tool
specs, tool calls with their failures, routing, the history, and the `agents` commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mcp.types
import pydantic
import pytest
from openai.types.chat import ChatCompletionToolParam

from toolvault.client import (
    AgentSpec,
    AlreadyExists,
    ChainContext,
    Client,
    ExecutionStatus,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

# The `cli` fixture (conftest.py): runs the CLI in-process, returns (exit code, out, err).
RunCli = Callable[..., tuple[int, str, str]]

# Published without an input schema: the server derives one from the signature.
ADD = '''def main(a: int, b: int = 2) -> int:
    """Adds two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b
'''
DIVIDE = '''def main(x):
    """Divides one by x."""
    return 1 / x
'''
DIVIDE_SCHEMA = {
    "type": "object",
    "properties": {"x": {"type": "number"}},
    "required": ["x"],
}
ADD_DERIVED_SCHEMA = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "description": "The first number."},
        "b": {"type": "integer", "description": "The second number.", "default": 2},
    },
    "required": ["a"],
    "additionalProperties": False,
}
AGENTS_YAML = """\
agents:
  - name: calc
    description: Does arithmetic.
    system_prompt: |
      You are a careful calculator.
    model_settings: {model: gpt-4o-mini, temperature: 0}
    tools: [add, divide]
    capabilities: [math]
  - name: greeter
    tools: [add@1]
    capabilities: [chat]
    max_chain_depth: 0
"""


def publish_tools(client: Client) -> None:
    client.publish("add", ADD)
    # The string output schema makes every result a mismatch.
    client.publish("divide", DIVIDE, input_schema=DIVIDE_SCHEMA, output_schema={"type": "string"})


def test_agents_are_created_revised_listed_and_deleted_with_their_tool_specs(
    server: str,
) -> None:
    with Client(server, timeout=30) as client:
        publish_tools(client)
        spec = AgentSpec("calc", tools=("add", "divide"), capabilities=("math",))
        first = client.create_agent(spec)
        assert (first.spec.name, first.revision, first.spec.tools) == ("calc", 1, spec.tools)
        # The server fills in its default depth; sending the spec again changes nothing.
        assert first.spec.max_chain_depth == 3
        assert client.update_agent(spec) == (first, False)
        assert client.apply_agent(spec) == (first, False)

        with pytest.raises(AlreadyExists):
            client.create_agent(spec)
        with pytest.raises(InvalidArgument, match="'nope@2'"):
            client.create_agent(AgentSpec("other", tools=("add", "nope@2")))
        with pytest.raises(NotFound):
            client.update_agent(AgentSpec("other"))

        second, changed = client.update_agent(
            AgentSpec("calc", description="Does math.", tools=("add",))
        )
        assert (second.revision, changed, second.spec.tools) == (2, True, ("add",))
        assert second.created_at >= first.created_at
        assert client.agent("calc") == second
        assert client.agent("calc", revision=1) == first
        assert client.agent_revisions("calc") == [second, first]

        created, changed = client.apply_agent(AgentSpec("solo", capabilities=("chat",)))
        assert (created.revision, changed) == (1, True)
        assert [a.spec.name for a in client.agents()] == ["calc", "solo"]
        assert [a.spec.name for a in client.agents(capability="chat")] == ["solo"]
        assert client.agents(capability="cooking") == []

        client.update_agent(spec)
        add, divide = client.agent_tools("calc")
        assert (add.name, add.ref, add.version) == ("add", "add", 1)
        assert add.description.startswith("Adds two numbers.")
        assert add.input_schema == ADD_DERIVED_SCHEMA
        assert add.output_schema is None
        assert (divide.input_schema, divide.output_schema) == (DIVIDE_SCHEMA, {"type": "string"})
        assert divide.sha256 == client.get("divide").sha256
        for tool in (add, divide):
            pydantic.TypeAdapter(ChatCompletionToolParam).validate_python(tool.to_openai_chat())
            mcp.types.Tool.model_validate(tool.to_mcp())

        assert client.delete_agent("calc") == 3
        with pytest.raises(NotFound):
            client.agent("calc")
        with pytest.raises(NotFound):
            client.agent_tools("calc")


def test_tool_calls_run_their_tools_report_failures_as_results_and_are_recorded(
    server: str,
) -> None:
    with Client(server, timeout=30) as client:
        publish_tools(client)
        client.create_agent(AgentSpec("calc", tools=("add", "divide"), capabilities=("math",)))
        client.create_agent(AgentSpec("leaf", capabilities=("math",), max_chain_depth=0))

        ok = client.call_tool("calc", "add", {"a": 40}, conversation_id="conv-1")
        assert (ok.is_error, json.loads(ok.text)) == (False, 42)
        execution = ok.execution
        assert (execution.status, execution.result, execution.function_name) == (
            ExecutionStatus.OK,
            42,
            "add",
        )
        assert (execution.agent, execution.agent_revision) == ("calc", 1)
        assert (execution.conversation_id, execution.chain_depth) == ("conv-1", 0)

        failed = client.call_tool("calc", "divide", {"x": 0}, conversation_id="conv-1")
        assert failed.is_error
        assert failed.execution.status is ExecutionStatus.ERROR
        assert "ZeroDivisionError: division by zero" in failed.text

        mismatch = client.call_tool("calc", "divide", {"x": 4}, conversation_id="conv-2")
        assert mismatch.is_error
        assert mismatch.execution.status is ExecutionStatus.OUTPUT_SCHEMA_MISMATCH
        assert mismatch.execution.result == 0.25
        assert "output schema" in mismatch.text

        with pytest.raises(PermissionDenied, match="'invoke'"):
            client.call_tool("calc", "invoke", {})
        with pytest.raises(InvalidArgument, match=r"\$\.x: 'zero' is not of type 'number'"):
            client.call_tool("calc", "divide", {"x": "zero"})

        by_agent = client.history(agent="calc")
        assert [e.execution_id for e in by_agent] == [
            r.execution.execution_id for r in (mismatch, failed, ok)
        ]
        assert [e.status for e in client.history(conversation_id="conv-1")] == [
            ExecutionStatus.ERROR,
            ExecutionStatus.OK,
        ]
        assert client.history("divide", agent="calc", conversation_id="conv-2")[0] == (
            client.execution(mismatch.execution.execution_id)
        )
        assert client.history(agent="leaf") == []

        named = client.route_task("math", strategy="named", agent="leaf")
        assert (named.agent.spec.name, named.chain) == ("leaf", ChainContext())
        picked = {client.route_task("math").agent.spec.name for _ in range(2)}
        assert picked == {"calc", "leaf"}
        delegated = client.route_task("math", strategy="named", agent="leaf", calling_agent="calc")
        assert delegated.chain == ChainContext(depth=1, root_agent="calc")
        # leaf allows no delegation below itself.
        with pytest.raises(FailedPrecondition):
            client.route_task("math", calling_agent="leaf", chain=delegated.chain)
        with pytest.raises(NotFound):
            client.route_task("cooking")


def test_the_agents_commands_apply_yaml_idempotently_and_call_tools_with_exit_codes(
    server: str, cli: RunCli, tmp_path: Path
) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        return cli("--server", server, *args)

    with Client(server, timeout=30) as client:
        publish_tools(client)
    agents_yaml = tmp_path / "agents.yaml"
    agents_yaml.write_text(AGENTS_YAML)

    assert run("agents", "apply", "-f", str(agents_yaml)) == (
        0,
        "calc: created (revision 1)\ngreeter: created (revision 1)\n",
        "",
    )
    assert run("agents", "apply", "-f", str(agents_yaml)) == (
        0,
        "calc: unchanged (revision 1)\ngreeter: unchanged (revision 1)\n",
        "",
    )
    agents_json = tmp_path / "agents.json"
    agents_json.write_text(json.dumps([{"name": "calc", "tools": ["add", "divide"]}]))
    assert run("agents", "apply", "-f", str(agents_json)) == (
        0,
        "calc: updated (revision 2)\n",
        "",
    )
    code, out, err = run("--json", "agents", "apply", "-f", str(agents_json))
    assert (code, err) == (0, "")
    [applied] = json.loads(out)
    assert (applied["state"], applied["agent"]["revision"]) == ("unchanged", 2)
    assert applied["agent"]["spec"]["tools"] == ["add", "divide"]

    code, out, _ = run("agents", "list")
    assert code == 0
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["NAME", "REVISION", "ENABLED"],
        ["calc", "2", "yes"],
        ["greeter", "1", "yes"],
    ]
    code, out, _ = run("agents", "list", "--capability", "chat")
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "greeter"]

    code, out, _ = run("agents", "show", "calc", "--revision", "1")
    assert code == 0
    assert "spec.description:     Does arithmetic.\n" in out
    assert 'spec.model_settings:  {"model": "gpt-4o-mini", "temperature": 0}\n' in out
    assert "spec.system_prompt:\n    You are a careful calculator.\n" in out
    code, out, _ = run("--json", "agents", "show", "calc")
    assert (code, json.loads(out)["spec"]["description"]) == (0, "")
    code, out, _ = run("agents", "revisions", "calc")
    assert [line.split()[0] for line in out.splitlines()] == ["REVISION", "2", "1"]

    code, out, _ = run("agents", "tools", "calc")
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["NAME", "REF", "VERSION"],
        ["add", "add", "1"],
        ["divide", "divide", "1"],
    ]
    code, out, _ = run("agents", "tools", "calc", "--format", "anthropic")
    assert json.loads(out)[1] == {
        "name": "divide",
        "description": "Divides one by x.",
        "input_schema": DIVIDE_SCHEMA,
    }
    code, out, _ = run("agents", "tools", "greeter", "--format", "openai")
    assert json.loads(out)[0]["function"]["parameters"] == ADD_DERIVED_SCHEMA

    call = ("agents", "call", "calc")
    assert run(*call, "add", "--args", '{"a": 1, "b": 2}', "--conversation", "c9") == (
        0,
        "3\n",
        "",
    )
    code, out, err = run(*call, "divide", "--args", '{"x": 0}', "--conversation", "c9")
    assert (code, err) == (1, "")
    assert "ZeroDivisionError" in out
    code, out, err = run("--json", *call, "divide", "--args", '{"x": 2}')
    assert code == 1
    assert json.loads(out)["execution"]["status"] == "OUTPUT_SCHEMA_MISMATCH"
    code, out, err = run(*call, "greet")
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and "'greet'" in err

    code, out, _ = run("history", "--agent", "calc", "--conversation", "c9")
    assert [line.split()[1] for line in out.splitlines()] == ["STATUS", "ERROR", "OK"]
    code, out, _ = run("agents", "route", "chat")
    assert (code, out.splitlines()[0]) == (0, "agent:       greeter")
    code, out, err = run("agents", "route", "math", "--agent", "greeter")
    assert code == 2
    assert "greeter" in err

    assert run("agents", "delete", "calc") == (0, "deleted agent calc (revisions: 2)\n", "")
    code, _, err = run("agents", "show", "calc")
    assert (code, err.startswith("error: ")) == (2, True)
