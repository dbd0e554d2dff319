"""Egress end to end: a server that lets versions reach named hosts, driven by SDK and CLI.

The server allows its ``default`` namespace one loopback HTTP server of the test's (and
127.0.0.1 as a private address, as an operator would for a service on its LAN), and its
``team`` namespace only ``*.example.com``, which no test ever reaches.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess
from toolvault.client import (
    AgentSpec,
    Client,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)

FETCH = """\
import urllib.request, urllib.error
def main(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return {"status": response.status, "body": response.read().decode()}
    except urllib.error.URLError as exc:
        return {"error": str(exc.reason)}
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[int]:
    """A loopback HTTP server's port."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def egress_server(db_url: str, tmp_path: Path, web: int) -> Iterator[ServerProcess]:
    lists = {"default": [f"127.0.0.1:{web}", f"127.0.0.2:{web}"], "team": ["*.example.com"]}
    server = ServerProcess(
        db=db_url,
        data_dir=tmp_path / "data",
        env={
            "TOOLVAULT_EGRESS": "allowlist",
            "TOOLVAULT_EGRESS_NAMESPACES": json.dumps(lists),
            "TOOLVAULT_EGRESS_ALLOW_PRIVATE": "127.0.0.1",
            "TOOLVAULT_METRICS_PORT": "0",
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(egress_server: ServerProcess) -> Iterator[Client]:
    with Client(egress_server.address) as client:
        yield client


def test_a_version_reaches_its_hosts_and_every_request_is_recorded(
    client: Client, egress_server: ServerProcess, web: int, cli: Callable[..., Any]
) -> None:
    version = client.publish("fetch", FETCH, egress=[f"127.0.0.1:{web}"])
    assert version.egress == (f"127.0.0.1:{web}",)
    assert {"urllib", "http"} <= set(version.allowed_imports)
    assert client.publish("fetch", FETCH, egress=[f"127.0.0.1:{web}"]).created is False

    done = client.invoke("fetch", {"url": f"http://127.0.0.1:{web}/x"})
    assert done.result == {"status": 200, "body": '{"ok": true}'}
    (request,) = done.egress
    assert (request.host, request.port, request.method, request.status) == (
        "127.0.0.1",
        web,
        "GET",
        200,
    )
    assert not request.refused and request.bytes_received > 0

    # Listed for the namespace, but not declared by the version: refused, recorded.
    refused = client.invoke("fetch", {"url": f"http://127.0.0.2:{web}/x"})
    assert "not on the function's egress allow-list" in refused.result["error"]
    (request,) = refused.egress
    assert request.refused and request.address == ""

    recorded = client.execution(done.execution_id)
    assert recorded.egress == done.egress
    code, out, _ = cli("--server", egress_server.address, "execution", refused.execution_id)
    assert code == 0
    row = rf"^127\.0\.0\.2\s+{web}\s+-.*refused: 127\.0\.0\.2:{web} is not"
    assert re.search(row, out, re.M), out

    log = "".join(egress_server.log)
    port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log)
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics") as response:
        metrics = response.read().decode()
    assert 'toolvault_egress_requests_total{function="fetch",outcome="ok"} 1.0' in metrics
    assert 'toolvault_egress_requests_total{function="fetch",outcome="refused"} 1.0' in metrics


def test_publish_refuses_what_the_namespace_may_not_reach(client: Client, web: int) -> None:
    with pytest.raises(PermissionDenied, match=r"egress to 127\.0\.0\.3:80 is beyond"):
        client.publish("fetch", FETCH, egress=[f"127.0.0.1:{web}", "127.0.0.3:80"])
    with pytest.raises(PermissionDenied, match="team.*allows it \\*\\.example\\.com"):
        client.publish("team/fetch", FETCH, egress=["example.com"])
    with pytest.raises(PermissionDenied, match="'other' may reach .*allows it nothing"):
        client.publish("other/fetch", FETCH, egress=["api.example.com"])
    with pytest.raises(InvalidArgument, match="egress entry 'a b:1'"):
        client.publish("fetch", FETCH, egress=["a b:1"])
    # Narrower than the namespace's list is fine; the CLI sends the same.
    version = client.publish("team/fetch", FETCH, egress=["API.example.com:443"])
    assert version.egress == ("api.example.com:443",)


def test_a_version_without_egress_cannot_import_the_clients(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="import of 'urllib.request' is not allowed"):
        client.publish("fetch", FETCH)


def test_tool_specs_say_which_tools_reach_the_network(client: Client, web: int) -> None:
    client.publish("fetch", FETCH, egress=[f"127.0.0.1:{web}"])
    client.publish("add", "def main(a: int, b: int) -> int:\n    return a + b\n")
    client.create_agent(AgentSpec(name="bot", tools=("fetch", "add")))

    tools = {tool.name: tool for tool in client.agent_tools("bot")}

    assert tools["fetch"].open_world and not tools["add"].open_world
    assert tools["fetch"].to_mcp()["annotations"] == {"openWorldHint": True}


def test_with_egress_off_a_version_cannot_declare_hosts(server: str) -> None:
    with Client(server) as client, pytest.raises(FailedPrecondition, match="egress is off"):
        client.publish("fetch", FETCH, egress=["api.example.com"])


def test_the_cli_publishes_egress(
    egress_server: ServerProcess, web: int, cli: Callable[..., Any], tmp_path: Path
) -> None:
    source = tmp_path / "fetch.py"
    source.write_text(FETCH)
    address = egress_server.address
    code, out, err = cli(
        "--server",
        address,
        "--json",
        "publish",
        "fetch",
        str(source),
        "--egress",
        f"127.0.0.1:{web}",
    )
    assert code == 0, err
    assert json.loads(out)["egress"] == [f"127.0.0.1:{web}"]
    code, out, _ = cli(
        "--server",
        address,
        "invoke",
        "fetch",
        "--args",
        json.dumps({"url": f"http://127.0.0.1:{web}/"}),
    )
    assert code == 0 and '"status": 200' in out


def test_a_cached_result_made_no_request(client: Client, web: int) -> None:
    client.publish("fetch", FETCH, egress=[f"127.0.0.1:{web}"], deterministic=True)
    args = {"url": f"http://127.0.0.1:{web}/x"}

    first, second = client.invoke("fetch", args), client.invoke("fetch", args)

    assert len(first.egress) == 1 and not first.cached
    assert second.cached and second.egress == ()
    assert client.execution(second.execution_id).egress == ()
