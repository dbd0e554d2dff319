"""Egress through a call's door: real loopback HTTP servers, real sandboxes.

Every test runs a call in a fresh sandbox and in a warm worker. The servers listen on
loopback only, which the door reaches only because each test's policy allows 127.0.0.0/8
as the operator's private-address setting would; without it loopback is refused.
"""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolvault.sandbox import (
    EGRESS_IMPORTS,
    EGRESS_PRELOAD,
    Egress,
    EgressError,
    EgressRule,
    Job,
    Limits,
    RunResult,
    RunStatus,
    SandboxHost,
    parse_rules,
)
from toolvault.sandbox._door import is_public

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
IMPORTS = ("json", *EGRESS_IMPORTS)


class _Handler(http.server.BaseHTTPRequestHandler):
    """/json answers its path; /redirect?to=URL redirects; /big sends 100 kB; /slow waits."""

    def do_GET(self) -> None:
        server: Server = self.server.owner  # type: ignore[attr-defined]
        server.requests.append(self.path)
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.partition("=")[2])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/slow":
            time.sleep(2)
        body = b"x" * 100_000 if self.path == "/big" else json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Server:
    """A loopback HTTP server that lists the paths it was asked for."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        # Cut connections (the limits under test) are expected here.
        self.httpd.handle_error = lambda *_: None  # type: ignore[method-assign]
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def allowed() -> Iterator[Server]:
    server = Server()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="module")
def other() -> Iterator[Server]:
    """A server no policy lists."""
    server = Server()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def host(loop: asyncio.AbstractEventLoop) -> Iterator[SandboxHost]:
    host = SandboxHost(preload=("json", *EGRESS_PRELOAD))
    loop.run_until_complete(host.start())
    yield host
    loop.run_until_complete(host.close())


@pytest.fixture(params=["fresh", "warm"])
def call(request: pytest.FixtureRequest, host: SandboxHost, loop: asyncio.AbstractEventLoop) -> Any:
    """Run a function (``main``) in a fresh sandbox or a warm worker, with a policy."""
    counter = iter(range(1_000_000))

    def run(source: str, egress: Egress | None, **args: Any) -> RunResult:
        job = Job(source, "main", json.dumps(args), IMPORTS, Limits(5_000, 256, 1 << 20))
        key = None if request.param == "fresh" else f"egress-{next(counter)}"
        return loop.run_until_complete(host.run(job, worker_key=key, egress=egress))

    return run


def policy(*entries: str, private: bool = True, **limits: int) -> Egress:
    return Egress(rules=parse_rules(entries), private=LOOPBACK if private else (), **limits)


FETCH = """\
import json, urllib.request, urllib.error
def main(urls):
    out = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                out.append([response.status, response.read().decode()[:200]])
        except urllib.error.URLError as exc:
            out.append(["error", str(exc.reason)])
        except Exception as exc:
            out.append(["exception", str(exc)])
    return out
"""


def fetched(result: RunResult) -> list[list[Any]]:
    assert result.status is RunStatus.OK, (result.error_type, result.error_message, result.stderr)
    value: list[list[Any]] = json.loads(result.result_json)
    return value


def test_an_allowed_request_goes_through_and_is_recorded(call: Any, allowed: Server) -> None:
    result = call(FETCH, policy(f"127.0.0.1:{allowed.port}"), urls=[allowed.url("/json?a=1")])

    assert fetched(result) == [[200, json.dumps({"path": "/json?a=1"})]]
    (record,) = result.egress
    assert (record.host, record.port, record.address) == ("127.0.0.1", allowed.port, "127.0.0.1")
    assert (record.method, record.status, record.refused, record.reason) == ("GET", 200, False, "")
    assert record.bytes_sent > 0 and record.bytes_received > 0
    assert record.duration_ms > 0


def test_a_host_not_on_the_list_is_refused_inside_the_function(
    call: Any, allowed: Server, other: Server
) -> None:
    before = len(other.requests)
    result = call(FETCH, policy(f"127.0.0.1:{allowed.port}"), urls=[other.url("/json")])

    ((outcome, message),) = fetched(result)
    assert outcome == "error"
    assert f"egress to 127.0.0.1:{other.port}" in message
    assert "not on the function's egress allow-list" in message
    assert len(other.requests) == before
    (record,) = result.egress
    assert record.refused and record.address == "" and record.bytes_sent == 0
    assert "allow-list" in record.reason


def test_a_redirect_to_a_host_not_on_the_list_is_refused(
    call: Any, allowed: Server, other: Server
) -> None:
    before = len(other.requests)
    url = allowed.url("/redirect?to=" + other.url("/json"))
    result = call(FETCH, policy(f"127.0.0.1:{allowed.port}"), urls=[url])

    ((outcome, message),) = fetched(result)
    assert outcome == "error" and "allow-list" in message
    assert len(other.requests) == before
    first, second = result.egress
    assert (first.status, first.refused) == (302, False)
    assert (second.port, second.refused) == (other.port, True)


def test_a_name_that_resolves_to_a_private_address_is_refused(call: Any, allowed: Server) -> None:
    url = f"http://localhost:{allowed.port}/json"
    before = len(allowed.requests)

    refused = call(FETCH, policy(f"localhost:{allowed.port}", private=False), urls=[url])

    ((outcome, message),) = fetched(refused)
    assert outcome == "error" and "resolves only to addresses that are not public" in message
    assert len(allowed.requests) == before
    (record,) = refused.egress
    assert record.refused and record.host == "localhost"
    # The operator's setting lets the same name through.
    allowed_ = call(FETCH, policy(f"localhost:{allowed.port}"), urls=[url])
    assert fetched(allowed_)[0][0] == 200


def test_the_request_limit_holds(call: Any, allowed: Server) -> None:
    urls = [allowed.url(f"/json?n={n}") for n in range(3)]
    result = call(FETCH, policy(f"127.0.0.1:{allowed.port}", max_requests=2), urls=urls)

    outcomes = fetched(result)
    assert [o[0] for o in outcomes] == [200, 200, "error"]
    assert "limit of 2 egress requests" in outcomes[2][1]
    assert [r.refused for r in result.egress] == [False, False, True]


def test_the_byte_limits_hold(call: Any, allowed: Server) -> None:
    egress = policy(f"127.0.0.1:{allowed.port}", max_bytes_received=10_000)
    result = call(FETCH, egress, urls=[allowed.url("/big")])

    ((outcome, _),) = fetched(result)
    assert outcome != 200  # cut off: the function never sees the whole body
    (record,) = result.egress
    assert record.refused and "10000 bytes received" in record.reason
    assert record.bytes_received <= 10_000 + 64 * 1024

    sent = call(
        FETCH,
        policy(f"127.0.0.1:{allowed.port}", max_bytes_sent=100),
        urls=[allowed.url("/json?" + "a" * 500)],
    )
    assert fetched(sent)[0][0] != 200
    assert "100 bytes sent" in sent.egress[0].reason


def test_a_request_that_takes_too_long_is_cut(call: Any, allowed: Server) -> None:
    egress = policy(f"127.0.0.1:{allowed.port}", request_timeout_ms=300)
    result = call(FETCH, egress, urls=[allowed.url("/slow")])

    assert fetched(result)[0][0] != 200
    (record,) = result.egress
    assert "longer than 300 ms" in record.reason


def test_without_egress_there_is_no_network(call: Any, allowed: Server) -> None:
    before = len(allowed.requests)
    result = call(FETCH, None, urls=[allowed.url("/json")])

    ((outcome, message),) = fetched(result)
    assert outcome == "error" and "declares no egress" in message
    assert len(allowed.requests) == before
    assert result.egress == ()


def test_file_urls_are_refused(call: Any, allowed: Server) -> None:
    result = call(FETCH, policy(f"127.0.0.1:{allowed.port}"), urls=["file:///etc/hostname"])

    assert fetched(result) == [["error", "file: URLs are not allowed in a sandbox"]]


def test_tls_runs_end_to_end_through_the_door(call: Any, tmp_path: Path) -> None:
    """A TLS server of our own: the handshake crosses the door, and the sandbox checks it."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    handshakes: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True):
                handshakes.append("done")
        except (ssl.SSLError, OSError) as exc:
            handshakes.append(type(exc).__name__)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    result = call(FETCH, policy(f"127.0.0.1:{port}"), urls=[f"https://127.0.0.1:{port}/"])
    thread.join(5)
    listener.close()

    ((outcome, message),) = fetched(result)
    # Our certificate is in no trust store: the sandbox's TLS refused it, as it must.
    assert outcome == "error" and "CERTIFICATE_VERIFY_FAILED" in message
    assert handshakes and handshakes[0] != "done"
    (record,) = result.egress
    assert record.method == "" and record.status == 0  # opaque: TLS
    assert record.bytes_sent > 0 and record.bytes_received > 0


@pytest.mark.parametrize(
    ("text", "host", "ports"),
    [
        ("api.Example.com:443", "api.example.com", (443,)),
        ("*.example.com", "*.example.com", (80, 443)),
        ("bücher.example", "xn--bcher-kva.example", (80, 443)),
        ("203.0.113.7:8080", "203.0.113.7", (8080,)),
        ("[2001:db8::1]:443", "2001:db8::1", (443,)),
        ("example.com.", "example.com", (80, 443)),
    ],
)
def test_rules_are_normalized(text: str, host: str, ports: tuple[int, ...]) -> None:
    rule = EgressRule.parse(text)
    assert (rule.host, rule.ports) == (host, ports)
    assert EgressRule.parse(str(rule)) == rule


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no host"),
        ("exa mple.com", "not a valid host name"),
        ("example.com:0", "port must be 1 to 65535"),
        ("example.com:http", "port must be 1 to 65535"),
        ("*.com", "a wildcard needs a domain with a dot"),
        ("*.10.0.0.1", "needs a domain, not an address"),
        ("2001:db8::1", "IPv6 address goes in [brackets]"),
        ("-bad-.example", "not a valid host name"),
        ("a.*.example", "not a valid host name"),
    ],
)
def test_bad_rules_are_refused_by_name(text: str, problem: str) -> None:
    with pytest.raises(EgressError, match="egress entry") as raised:
        EgressRule.parse(text)
    assert problem in str(raised.value)


def test_rules_match_and_cover() -> None:
    wildcard = EgressRule.parse("*.example.com")
    assert wildcard.matches("api.example.com", 443)
    assert wildcard.matches("a.b.example.com", 80)
    assert not wildcard.matches("example.com", 443)
    assert not wildcard.matches("evilexample.com", 443)
    assert not wildcard.matches("api.example.com", 8443)
    assert wildcard.covers(EgressRule.parse("api.example.com:443"))
    assert wildcard.covers(EgressRule.parse("*.api.example.com"))
    assert not wildcard.covers(EgressRule.parse("example.com"))
    assert not wildcard.covers(EgressRule.parse("api.example.com:8443"))
    assert not EgressRule.parse("api.example.com:443").covers(wildcard)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fd00:ec2::254",  # cloud metadata over IPv6
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",  # NAT64 of loopback
        "2002:7f00:1::",  # 6to4 of loopback
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo of 127.0.0.1
        "ff02::1",
    ],
)
def test_addresses_that_are_not_public_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "1.1.1.1"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))
