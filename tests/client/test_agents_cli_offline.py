"""`toolvault agents apply` checks its file before talking to a server; `toolvault mcp`
hands over to the MCP bridge, or says how to install it."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

# The `cli` fixture (conftest.py): runs the CLI in-process, returns (exit code, out, err).
RunCli = Callable[..., tuple[int, str, str]]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("agents:\n  - name: calc\n    tool: [add]\n", "agents[0]: unknown key(s) 'tool'"),
        (
            "- name: calc\n- name: misc\n  tools: add\n",
            "agents[1]: 'tools' must be a list of strings, not 'add'",
        ),
        ("- name: calc\n- calc\n", "agents[1]: expected a mapping, not str"),
        ("- name: calc\n- name: calc\n", "agents[1]: the name 'calc' appears twice"),
        ("- description: nameless\n", "agents[0]: missing key 'name'"),
        ("name: calc\n", 'expected a list of agents or a mapping {"agents": [...]}'),
        ("agents: 3\n", 'expected a list of agents or a mapping {"agents": [...]}'),
    ],
)
def test_a_bad_agents_document_exits_2_naming_the_file_the_agent_and_the_problem(
    cli: RunCli, closed_address: str, tmp_path: Path, document: str, problem: str
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(document)
    # The server address is closed: the file is rejected before any request.
    code, out, err = cli("--server", closed_address, "agents", "apply", "-f", str(path))
    assert (code, out, err) == (2, "", f"error: {path}: {problem}\n")


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("agents.yaml", "agents: [\n", "is not valid YAML or JSON: while parsing"),
        ("agents.json", '{"agents": [}', "is not valid YAML or JSON: while parsing"),
    ],
)
def test_an_agents_file_that_does_not_parse_exits_2_naming_it(
    cli: RunCli, closed_address: str, tmp_path: Path, name: str, text: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    code, out, err = cli("--server", closed_address, "agents", "apply", "-f", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {path} {problem}")


def test_an_unknown_routing_strategy_is_a_usage_error(cli: RunCli) -> None:
    code, _, err = cli("agents", "route", "math", "--strategy", "random")
    assert code == 2
    assert "argument --strategy: invalid choice: 'random'" in err


def test_mcp_hands_the_server_address_key_agent_and_size_limit_to_the_bridge(
    cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, str | None, int | None]] = []
    bridge = types.ModuleType("toolvault.agent.mcp")

    def serve_mcp(
        target: str, agent: str, *, api_key: str | None, tls: object, max_args_bytes: int | None
    ) -> int:
        assert tls is None
        calls.append((target, agent, api_key, max_args_bytes))
        return 0

    bridge.serve_mcp = serve_mcp  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "toolvault.agent.mcp", bridge)
    assert cli("--server", "10.0.0.1:7", "--api-key", "k", "mcp", "--agent", "calc") == (0, "", "")
    monkeypatch.setenv("TOOLVAULT_MAX_ARGS_BYTES", "5000000")
    assert cli("--server", "10.0.0.1:7", "mcp", "--agent", "calc") == (0, "", "")
    assert calls == [
        ("10.0.0.1:7", "calc", "k", 1024 * 1024),
        ("10.0.0.1:7", "calc", None, 5_000_000),
    ]


def test_mcp_without_the_mcp_package_exits_2_saying_how_to_install_it(
    cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "mcp", None)
    monkeypatch.delitem(sys.modules, "toolvault.agent.mcp", raising=False)
    code, out, err = cli("mcp", "--agent", "calc")
    assert (code, out) == (2, "")
    assert err.startswith(
        "error: the MCP bridge is not installed: pip install '.[mcp]' from a checkout, "
        "or 'toolvault[mcp]' from a package index ("
    )
