"""Run an agent: its model talks, its tool calls run on toolvault, until it answers.

    from toolvault.agent import OpenAIChatModel, run_agent
    from toolvault.client import Client

    with Client("127.0.0.1:50051") as client:
        model = OpenAIChatModel("http://127.0.0.1:11434/v1", "qwen2.5:7b")
        run = run_agent(client, "calculator", "What is 2 ** 10?", model=model)
        print(run.final)

The loop (`run_agent`, `iter_agent`) and the chat models it talks to (`OpenAIChatModel`,
`ScriptedModel`) are re-exported here; `toolvault.agent.mcp` serves an agent's tools over
MCP and needs the `mcp` extra, so it is imported only by those who use it. Everything here
stands on the SDK's public API (`toolvault.client`) and nothing else of ours.
"""

from toolvault.agent._chat import (
    ChatModel,
    ChatModelError,
    ChatReply,
    OpenAIChatModel,
    ScriptedModel,
    ToolCall,
)
from toolvault.agent._loop import AgentRun, Step, iter_agent, run_agent

__all__ = [
    "AgentRun",
    "ChatModel",
    "ChatModelError",
    "ChatReply",
    "OpenAIChatModel",
    "ScriptedModel",
    "Step",
    "ToolCall",
    "iter_agent",
    "run_agent",
]
