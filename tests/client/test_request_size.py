"""Arguments and sources larger than the server takes are refused before they are sent,
with the message the server gives, however large they are (issue 19, item 3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from toolvault.client import AgentSpec, Client, InvalidArgument, ResourceExhausted

RunCli = Callable[..., tuple[int, str, str]]
IDENTITY = "def main(x=0):\n    return x\n"
LARGE = {"x": "y" * 1_100_000}  # past the server's default limit, within its transport's
HUGE = {"x": "y" * 20_000_000}  # past what the server's transport reads (files included)


def test_arguments_over_the_limit_are_refused_with_the_servers_own_message(server: str) -> None:
    with (
        Client(server, retries=False) as checked,
        Client(server, retries=False, max_args_bytes=None) as unchecked,
    ):
        checked.publish("f", IDENTITY)
        checked.create_agent(AgentSpec(name="a", tools=("f",)))
        for call, field in (
            (lambda c: c.invoke("f", LARGE), "args_json"),
            (lambda c: c.call_tool("a", "f", LARGE), "arguments_json"),
        ):
            with pytest.raises(InvalidArgument) as ours:
                call(checked)
            with pytest.raises(InvalidArgument) as servers:
                call(unchecked)
            assert str(ours.value) == str(servers.value)
            assert str(ours.value) == f"{field} is 1100009 bytes, more than the limit of 1048576"

        with pytest.raises(InvalidArgument, match="^args_json is 20000009 bytes, more than"):
            checked.invoke("f", HUGE)
        # What the check spares the caller: the transport's refusal.
        with pytest.raises(ResourceExhausted, match="larger than max"):
            unchecked.invoke("f", HUGE)
        assert len(checked.history()) == 0


def test_the_check_happens_before_anything_is_sent(closed_address: str) -> None:
    with Client(closed_address, retries=False) as client:
        with pytest.raises(InvalidArgument, match="more than the limit of 1048576"):
            client.invoke("f", HUGE)
    with Client(closed_address, retries=False, max_args_bytes=2048) as client:
        with pytest.raises(InvalidArgument, match="^arguments_json is 3009 bytes, more than"):
            client.call_tool("a", "f", {"x": "y" * 3000})


def test_the_cli_refuses_large_arguments_from_a_file_before_sending(
    cli: RunCli, closed_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arguments = tmp_path / "args.json"
    arguments.write_text(json.dumps(HUGE))
    command = ("--server", closed_address, "invoke", "f", "--args", f"@{arguments}")
    assert cli(*command) == (
        2,
        "",
        "error: --args is 20000009 bytes, more than the limit of 1048576\n",
    )
    # A server with a larger limit: the client is told the same limit.
    monkeypatch.setenv("TOOLVAULT_MAX_ARGS_BYTES", str(30_000_000))
    code, _, err = cli(*command)
    assert code == 3 and err.startswith("error: cannot reach the server at ")


def test_sources_over_the_limit_are_refused_with_the_servers_own_message(server: str) -> None:
    source = IDENTITY + "#" * 300_000
    with (
        Client(server, retries=False) as checked,
        Client(server, retries=False, max_source_bytes=None) as unchecked,
    ):
        with pytest.raises(InvalidArgument) as ours:
            checked.publish("f", source)
        with pytest.raises(InvalidArgument) as servers:
            unchecked.publish("f", source)
        assert str(ours.value) == str(servers.value)
        assert str(ours.value) == "source is 300028 bytes, more than the limit of 262144"
        assert checked.functions() == []


def test_the_cli_refuses_a_huge_source_before_sending(
    cli: RunCli, closed_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "big.py"
    source.write_text(IDENTITY + "#" * 10_000_000)
    command = ("--server", closed_address, "publish", "big", str(source))
    assert cli(*command) == (
        2,
        "",
        "error: source is 10000028 bytes, more than the limit of 262144\n",
    )
    monkeypatch.setenv("TOOLVAULT_MAX_SOURCE_BYTES", str(20_000_000))
    code, _, err = cli(*command)
    assert code == 3 and err.startswith("error: cannot reach the server at ")
