"""`toolvault mcp` driven by the `mcp` package's own client over stdio."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, MCPError
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import (
    INVALID_PARAMS,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    TextContent,
)

from toolvault.client import AgentSpec, Client

TOOLVAULT = str(Path(sys.executable).parent / "toolvault")

STATS = '''def main(numbers: list[float]) -> dict:
    """Summarizes numbers.

    Args:
        numbers: The numbers to summarize.
    """
    return {"count": len(numbers), "total": sum(numbers)}
'''
DIVIDE = '''def main(x: float) -> float:
    """Divides one by x."""
    return 1 / x
'''
OBJECT = {"type": "object", "properties": {"count": {"type": "integer"}}}


def text_of(result: CallToolResult) -> tuple[bool, str]:
    (content,) = result.content
    assert isinstance(content, TextContent)
    return result.is_error, content.text


def test_an_mcp_client_lists_and_calls_an_agents_tools(server: str) -> None:
    with Client(server) as client:
        client.publish("stats", STATS, output_schema=OBJECT)
        client.publish("divide", DIVIDE)
        client.publish("secret", DIVIDE)
        client.create_agent(
            AgentSpec(name="math", description="Does sums.", tools=("stats", "divide"))
        )

    async def session() -> None:
        params = StdioServerParameters(
            command=TOOLVAULT, args=["--server", server, "mcp", "--agent", "math"]
        )
        async with stdio_client(params) as streams, ClientSession(*streams) as mcp:
            assert (await mcp.initialize()).instructions == "Does sums."
            tools = (await mcp.list_tools()).tools
            assert [(t.name, t.description) for t in tools] == [
                ("stats", "Summarizes numbers.\n\nArgs:\n    numbers: The numbers to summarize."),
                ("divide", "Divides one by x."),
            ]
            assert tools[0].input_schema["required"] == ["numbers"]
            assert (tools[0].output_schema, tools[1].output_schema) == (OBJECT, None)

            result = await mcp.call_tool("stats", {"numbers": [1, 2.5]})
            assert text_of(result) == (False, '{"count": 2, "total": 3.5}')
            assert result.structured_content == {"count": 2, "total": 3.5}
            result = await mcp.call_tool("divide", {"x": 4})
            assert (text_of(result), result.structured_content) == ((False, "0.25"), None)

            failed, text = text_of(await mcp.call_tool("divide", {"x": 0}))
            assert failed and text.startswith("ERROR: ZeroDivisionError: division by zero\n")
            failed, text = text_of(await mcp.call_tool("divide", {"y": 0}))
            assert failed and text.startswith("error: ") and "'x' is a required property" in text
            assert text.startswith("error: arguments does not match the input schema: ")
            # A tool the agent does not offer is a protocol error, as the MCP spec says.
            with pytest.raises(MCPError) as unknown:
                await mcp.call_tool("secret", {"x": 1})
            assert (unknown.value.code, unknown.value.message) == (
                INVALID_PARAMS,
                "agent 'math' may not call 'secret' (its tools: stats, divide)",
            )

    anyio.run(session)
    with Client(server) as client:
        history = client.history(agent="math")
    assert sorted((e.function_name, e.status) for e in history) == [
        ("divide", "ERROR"),
        ("divide", "OK"),
        ("stats", "OK"),
    ]
    assert len({e.conversation_id for e in history}) == 1

    unknown = [TOOLVAULT, "--server", server, "mcp", "--agent", "nobody"]
    done = subprocess.run(
        unknown, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "error: agent 'nobody' not found\n",
    )


def test_an_mcp_tools_output_files_come_back_as_embedded_resources(server: str) -> None:
    chart = Path(__file__).parents[2] / "examples" / "functions" / "svg_chart.py"
    with Client(server) as client:
        client.publish("svg_chart", chart.read_text())
        client.create_agent(AgentSpec(name="charts", tools=("svg_chart",)))

    async def session() -> CallToolResult:
        params = StdioServerParameters(
            command=TOOLVAULT, args=["--server", server, "mcp", "--agent", "charts"]
        )
        async with stdio_client(params) as streams, ClientSession(*streams) as mcp:
            await mcp.initialize()
            return await mcp.call_tool("svg_chart", {"labels": ["a"], "values": [1]})

    result = anyio.run(session)
    text, resource = result.content
    assert isinstance(text, TextContent) and not result.is_error
    assert text.text == '{"file": "out/chart.svg", "bars": 1}'
    assert isinstance(resource, EmbeddedResource)
    blob = resource.resource
    assert isinstance(blob, BlobResourceContents)
    assert blob.mime_type == "image/svg+xml"
    assert re.fullmatch(r"toolvault://executions/[0-9a-f-]{36}/out/chart\.svg", blob.uri)
    assert base64.b64decode(blob.blob).startswith(b"<svg")
