"""The MCP bridge: serve one agent's tools over MCP on stdio (`toolvault mcp --agent NAME`).

An MCP client (Claude Desktop, an IDE, the `mcp` package's own client) starts this as a
subprocess. `tools/list` answers with the agent's tool specs and `tools/call` goes through
`Client.call_tool`, so toolvault enforces the agent's tool list and schemas, runs the tool
in a sandbox and records the call under the agent, like any other agent call. A failing
tool, and a call toolvault refuses, come back as results with isError set and the reason
as text, which is how MCP lets the model see what went wrong; only a tool the agent does
not offer is a JSON-RPC error (-32602, invalid params), as the MCP spec says. Files the
tool left in out/ follow the text as embedded resources (blobs); a tools/call passes
none in, its arguments being JSON.

Built on the low-level `mcp.server.lowlevel.Server` rather than `MCPServer`, whose tools
are Python functions with signatures: here the tools and their schemas are data known only
at run time. The handlers are async and `Client` is blocking, so each request runs in a
worker thread and the event loop keeps answering the protocol's own traffic.
"""

from __future__ import annotations

import base64
import importlib.metadata
import mimetypes
import uuid
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import mcp.types as types
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from toolvault.agent._loop import MODEL_READABLE
from toolvault.client import DEFAULT_MAX_ARGS_BYTES, TLS, Client, PermissionDenied, ToolResult

__all__ = ["serve_mcp"]


def serve_mcp(
    target: str,
    agent: str,
    *,
    api_key: str | None = None,
    tls: TLS | None = None,
    conversation_id: str | None = None,
    max_args_bytes: int | None = DEFAULT_MAX_ARGS_BYTES,
) -> int:
    """Serve an agent's tools over MCP on stdin/stdout until the client disconnects.

    Args:
        target: The toolvault server's address, "host:port".
        agent: The agent whose tools to serve.
        api_key: The key to call the server with (an agent key is enough).
        tls: How to reach the server over TLS; None for plaintext.
        conversation_id: Groups this session's tool calls in the history; None makes a
            new one.
        max_args_bytes: The server's TOOLVAULT_MAX_ARGS_BYTES, as for `Client`.

    Returns:
        The exit code: 0.

    Raises:
        NotFound: There is no such agent (checked before serving, so a misconfigured
            MCP client shows the reason instead of an empty tool list).
    """
    conversation_id = conversation_id or uuid.uuid4().hex
    with Client(target, api_key=api_key, tls=tls, max_args_bytes=max_args_bytes) as client:
        definition = client.agent(agent)
        server = _server(client, agent, conversation_id, definition.spec.description)
        anyio.run(_run, server)
    return 0


async def _run(server: Server[Any]) -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _server(client: Client, agent: str, conversation_id: str, description: str) -> Server[Any]:
    """Return an MCP server whose tool handlers go through `client` as `agent`."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        specs = await anyio.to_thread.run_sync(client.agent_tools, agent)
        return types.ListToolsResult(tools=[types.Tool.model_validate(s.to_mcp()) for s in specs])

    async def offered(tool: str) -> bool:
        specs = await anyio.to_thread.run_sync(client.agent_tools, agent)
        return any(spec.name == tool for spec in specs)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        def call() -> ToolResult:
            return client.call_tool(
                agent, params.name, params.arguments or {}, conversation_id=conversation_id
            )

        try:
            result = await anyio.to_thread.run_sync(call)
        except MODEL_READABLE as refusal:
            if isinstance(refusal, PermissionDenied) and not await offered(params.name):
                # MCP makes a tool that tools/list does not offer a protocol error.
                raise MCPError(types.INVALID_PARAMS, str(refusal)) from refusal
            # The MCP client sent the call's "arguments", whatever the field toolvault names.
            text = types.TextContent(text=f"error: {refusal.naming_arguments()}")
            return types.CallToolResult(content=[text], is_error=True)
        structured = result.execution.result
        return types.CallToolResult(
            content=[types.TextContent(text=result.text), *_output_files(result)],
            # MCP clients check the structured content of a tool with an output schema;
            # MCP before 2026-07-28 only allows an object there.
            structured_content=(
                structured if isinstance(structured, dict) and not result.is_error else None
            ),
            is_error=result.is_error,
        )

    return Server(
        f"toolvault-{agent}",
        version=importlib.metadata.version("toolvault"),
        instructions=description or None,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _output_files(result: ToolResult) -> list[types.EmbeddedResource]:
    """What the tool left in out/, as MCP's embedded resources with their bytes (blobs).

    MCP is the one tool format whose results carry files; the uri names the execution
    and the file, which `toolvault execution ID --save DIR` fetches again while kept.
    """
    execution = result.execution
    return [
        types.EmbeddedResource(
            type="resource",
            resource=types.BlobResourceContents(
                uri=f"toolvault://executions/{execution.execution_id}/out/{quote(name)}",
                mime_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
                blob=base64.b64encode(content).decode(),
            ),
        )
        for name, content in sorted(execution.output_files.items())
    ]
