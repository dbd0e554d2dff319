"""The agent loop against a real server, a real chat-completions HTTP server, and the example."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from toolvault.agent import (
    AgentRun,
    ChatModelError,
    ChatReply,
    OpenAIChatModel,
    ScriptedModel,
    Step,
    ToolCall,
    iter_agent,
    run_agent,
)
from toolvault.client import AgentSpec, Client

EXAMPLES = Path(__file__).parents[2] / "examples"

ADD = '''def main(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b
'''
DIVIDE = '''def main(x: float) -> float:
    """Divides one by x."""
    return 1 / x
'''
SECRET = '''def main() -> str:
    """Not on the agent's list."""
    return "secret"
'''
PROMPT = "You add numbers with the add tool."


def completion(content: str | None = None, *calls: tuple[str, str, Any]) -> dict[str, Any]:
    """A chat completion whose message has `content` and tool calls (id, name, arguments)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}
            for id_, name, args in calls
        ]
    return {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"message": message}]}


@dataclass
class ChatServer:
    """A chat-completions server answering each POST with the next scripted (status, body)."""

    url: str = ""
    replies: list[tuple[int, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    state = ChatServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(
                {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "body": json.loads(body),
                }
            )
            status, reply = state.replies.pop(0)
            data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_port}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def set_up(server: str, model_settings: dict[str, Any] | None = None) -> Client:
    """A client to a server with add, divide and secret published and a "calc" agent."""
    client = Client(server)
    for name, source in (("add", ADD), ("divide", DIVIDE), ("secret", SECRET)):
        client.publish(name, source)
    client.create_agent(
        AgentSpec(
            name="calc",
            system_prompt=PROMPT,
            model_settings=model_settings or {},
            tools=("add", "divide"),
        )
    )
    return client


def test_the_loop_runs_a_chat_completions_servers_tool_calls_on_toolvault(
    server: str, chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat_server.replies = [
        (200, completion(None, ("call_1", "add", '{"a": 2, "b": 3}'))),
        (200, completion("2 + 3 = 5")),
    ]
    monkeypatch.setenv("CALC_KEY", "sk-test")
    settings = {
        "base_url": chat_server.url,
        "model": "tiny",
        "api_key_env": "CALC_KEY",
        "temperature": 0,
    }
    seen: list[Step] = []
    # No model given: the loop builds one from the agent's model_settings.
    with set_up(server, settings) as client:
        run = run_agent(
            client, "calc", "What is 2 + 3?", conversation_id="c-1", on_step=seen.append
        )
        tools = [spec.to_openai_chat() for spec in client.agent_tools("calc")]
        history = client.history(agent="calc", conversation_id="c-1")

    assert (run.final, run.stopped, run.conversation_id) == ("2 + 3 = 5", "answer", "c-1")
    assert [(s.index, s.kind) for s in run.steps] == [(0, "model"), (1, "tool"), (2, "model")]
    assert seen == run.steps
    tool_step = run.steps[1]
    assert tool_step.result is not None and tool_step.result.execution.result == 5
    assert (tool_step.output, tool_step.error) == ("5", None)

    first, second = (request["body"] for request in chat_server.requests)
    assert [r["path"] for r in chat_server.requests] == ["/v1/chat/completions"] * 2
    assert [r["authorization"] for r in chat_server.requests] == ["Bearer sk-test"] * 2
    assert first == {
        "model": "tiny",
        "temperature": 0,
        "messages": [
            {"role": "system", "content": PROMPT},
            {"role": "user", "content": "What is 2 + 3?"},
        ],
        "tools": tools,
    }
    assert [t["function"]["name"] for t in tools] == ["add", "divide"]
    assert second["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    ]
    assert [(e.function_name, e.args, e.result, e.agent) for e in history] == [
        ("add", {"a": 2, "b": 3}, 5, "calc")
    ]


def drain(steps: Generator[Step, None, AgentRun]) -> tuple[list[Step], AgentRun]:
    """Iterate a run to its end; return the steps it yielded and its AgentRun."""
    seen = []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as done:
            return seen, done.value


def test_refusals_reach_the_model_as_tool_messages_and_the_step_limit_ends_a_run(
    server: str,
) -> None:
    calls = [
        ToolCall("ok", "add", '{"a": 1, "b": 2}'),
        ToolCall("fails", "divide", '{"x": 0}'),
        ToolCall("not_listed", "secret", "{}"),
        ToolCall("bad_args", "add", '{"a": "one", "b": 2}'),
        ToolCall("broken_json", "add", '{"a": 1,'),
    ]
    model = ScriptedModel([ChatReply("Let me see.", tuple(calls)), "Done."])
    again = ChatReply(None, (ToolCall("again", "add", '{"a": 1, "b": 1}'),))
    looping = ScriptedModel([again, again, again])
    with set_up(server) as client:
        run = run_agent(client, "calc", "Try everything.", model=model)
        history = client.history(agent="calc", conversation_id=run.conversation_id)
        seen, stopped = drain(iter_agent(client, "calc", "Loop.", model=looping, max_steps=2))
        with pytest.raises(ValueError, match="agent 'calc' has no base_url or model"):
            run_agent(client, "calc", "Hi.")
        with pytest.raises(ValueError, match="max_steps must be at least 1"):
            run_agent(client, "calc", "Hi.", model=model, max_steps=0)

    assert (run.final, run.stopped, len(run.conversation_id)) == ("Done.", "answer", 32)
    results = {m["tool_call_id"]: m["content"] for m in model.calls[1][0] if m["role"] == "tool"}
    assert list(results) == ["ok", "fails", "not_listed", "bad_args", "broken_json"]
    assert results["ok"] == "3"
    assert results["fails"].startswith("ERROR: ZeroDivisionError: division by zero\n")
    assert results["not_listed"] == (
        "error: agent 'calc' may not call 'secret' (its tools: add, divide)"
    )
    assert results["bad_args"].startswith("error: ") and "$.a" in results["bad_args"]
    # The model wrote the call's "arguments": the refusal names them so, not by the wire's field.
    assert results["bad_args"].startswith("error: arguments does not match the input schema: ")
    assert results["broken_json"] == "error: the arguments are not a JSON object: '{\"a\": 1,'"
    # (tool failed, call refused) for each call: refusals carry no result, only an error.
    assert [
        (s.result is not None and s.result.is_error, s.error is not None) for s in run.steps[1:-1]
    ] == [
        (False, False),
        (True, False),
        (False, True),
        (False, True),
        (False, True),
    ]
    # Only the calls toolvault ran are in the history, under the agent and conversation.
    assert sorted((e.function_name, e.status, e.agent) for e in history) == [
        ("add", "OK", "calc"),
        ("divide", "ERROR", "calc"),
    ]

    assert (stopped.final, stopped.stopped, stopped.steps) == (None, "max_steps", seen)
    assert [s.kind for s in seen] == ["model", "tool", "model", "tool"]
    assert len(looping.calls) == 2


def test_the_scripted_model_replays_its_script_and_records_what_it_got() -> None:
    call = ToolCall("c1", "add", "{}")
    model = ScriptedModel([ChatReply(None, (call,)), "done"])
    messages = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "add"}}]
    assert model.complete(messages, tools) == ChatReply(None, (call,))
    messages.append({"role": "tool", "tool_call_id": "c1", "content": "3"})
    assert model.complete(messages, tools) == ChatReply("done")
    assert model.calls == [(messages[:1], tools), (messages, tools)]
    with pytest.raises(ChatModelError, match="has 2 replies and was asked for another"):
        model.complete(messages, tools)


def test_the_openai_model_reports_http_errors_and_malformed_replies(
    chat_server: ChatServer, closed_address: str
) -> None:
    chat_server.replies = [
        (503, '{"error": "model is loading"}'),
        (200, {"choices": []}),
        (200, completion("hi", ("c1", "add", {"a": 1}))),
    ]
    with OpenAIChatModel(chat_server.url, "tiny", api_key="") as model:
        with pytest.raises(
            ChatModelError, match=r'answered HTTP 503: \{"error": "model is loading"\}'
        ):
            model.complete([], [])
        with pytest.raises(ChatModelError, match=r"sent a malformed reply \(IndexError"):
            model.complete([], [])
        # Arguments sent as an object instead of JSON text are turned into text.
        assert model.complete([], []) == ChatReply("hi", (ToolCall("c1", "add", '{"a": 1}'),))
    assert [r["authorization"] for r in chat_server.requests] == [None] * 3
    assert "tools" not in chat_server.requests[0]["body"]
    with (
        pytest.raises(ChatModelError, match="cannot reach the model at http://127.0.0.1"),
        OpenAIChatModel(f"http://{closed_address}", "tiny") as unreachable,
    ):
        unreachable.complete([], [])


def test_the_example_runs_its_agent_with_the_scripted_model(server: str) -> None:
    example = [sys.executable, str(EXAMPLES / "run_agent.py"), "--server", server]
    out = subprocess.run(example, capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.splitlines() == [
        "function csv_summary: version 1",
        "function stats: version 1",
        "function svg_chart: version 1",
        "function unit_convert: version 1",
        "function word_count: version 1",
        "agent calculator: revision 1 (stored)",
        "agent text: revision 1 (stored)",
        "user: How many miles is a 5 km run, and what are the mean and median of 3, 1, 4, 1, 5?",
        '[0] model calls unit_convert({"value": 5, "from_unit": "km", "to_unit": "mi"})',
        '[0] model calls stats({"numbers": [3, 1, 4, 1, 5]})',
        "[1] unit_convert -> 3.106856",
        '[2] stats -> {"count": 5, "mean": 2.8, "median": 3, "stdev": 1.7888543819998317, '
        '"min": 1, "max": 5}',
        "[3] model answers: A 5 km run is 3.106856 miles; the numbers have a mean of 2.8 "
        "and a median of 3.",
        "stopped: answer; 2 tool call(s) recorded in the history",
    ]
