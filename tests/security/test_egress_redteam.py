"""Red team 6: egress through the real server, and what its modules hand restricted code.

A version that declares egress may import ``email``, ``http``, ``ssl`` and ``urllib``:
far more than HTTP clients. Through the API each attack here tries what those modules
offer besides a request through the door: reading a file by name (file: URLs through a
handler of its own, the deprecated openers, cookie files, http.server's handlers, which
also list directories and run CGI programs), writing one (urlretrieve), making a socket
of an fd the sandbox holds (its door, a warm worker's channel) with ``ssl``, and reaching
the loopback listener that the namespace lists but the operator allows no private
network for, and asking for a host that no reply can encode or a terminal should show.
The harness checks that no secret leaked, nothing survived, the listener
saw no connection and the server still answers.
"""

from __future__ import annotations

import pytest

from tests.security.conftest import EGRESS_ALLOWED, Attack
from toolvault.client import ExecutionStatus
from toolvault.client.errors import InvalidArgument

EGRESS = [EGRESS_ALLOWED[0]]

# Turns what a payload got hold of into text, if it got anything.
DRAIN = """\
import email, http.cookiejar, ssl, urllib.request
class FakeSocket:
    family = 1
    type = 1
    proto = 0
    def getsockopt(self, *args):
        return 1
    def fileno(self):
        return 0
    def gettimeout(self):
        return None
    def detach(self):
        return 0
def main(path):
    got = PAYLOAD
    return email.message_from_binary_file(got).as_string()
"""


def test_cant_import_http_server(egress_attack: Attack) -> None:
    with pytest.raises(InvalidArgument) as refused:
        egress_attack.run("import http.server\ndef main():\n    return 1\n", egress=EGRESS)

    assert "line 1, column 8: import of 'http.server' is not allowed" in str(refused.value)


@pytest.mark.parametrize(
    ("payload", "denied"),
    [
        (
            "urllib.request.FileHandler().open_local_file("
            "urllib.request.Request('file://' + path))",
            "urllib.request.FileHandler",
        ),
        ("urllib.request.URLopener().open('file://' + path)", "urllib.request.URLopener"),
        (
            "urllib.request.FancyURLopener().open('file://' + path)",
            "urllib.request.FancyURLopener",
        ),
        ("urllib.request.urlretrieve('data:,x', 'written')", "urllib.request.urlretrieve"),
        ("http.cookiejar.MozillaCookieJar(path).load()", "http.cookiejar.MozillaCookieJar"),
        ("http.cookiejar.LWPCookieJar(path).load()", "http.cookiejar.LWPCookieJar"),
        ("http.cookiejar.FileCookieJar(path)", "http.cookiejar.FileCookieJar"),
        (
            "ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_socket("
            "FakeSocket(), do_handshake_on_connect=False, server_hostname='x')",
            "ssl.SSLContext.wrap_socket",
        ),
    ],
)
def test_egress_modules_touch_no_file_and_adopt_no_fd(
    egress_attack: Attack, payload: str, denied: str
) -> None:
    execution = egress_attack.run(
        DRAIN.replace("PAYLOAD", payload),
        {"path": str(egress_attack.secret_file)},
        egress=EGRESS,
    )

    assert execution.status is ExecutionStatus.ERROR
    assert execution.error is not None
    assert (execution.error.type, execution.error.message) == (
        "ImportError",
        f"{denied} is not allowed in the sandbox",
    )


def test_a_listed_loopback_address_is_refused_without_the_operators_private_setting(
    egress_attack: Attack,
) -> None:
    """The namespace lists the listener's address, the version declares it: still loopback."""
    port = egress_attack.listener.port
    target = f"127.0.0.1:{port}"
    source = """\
import ssl, urllib.error, urllib.request
def main(urls, port):
    out = []
    for url in urls:
        try:
            urllib.request.urlopen(url, timeout=5)
            out.append("reached")
        except urllib.error.URLError as exc:
            out.append(str(exc.reason))
    try:
        ssl.get_server_certificate(("127.0.0.1", port))
        out.append("reached")
    except OSError as exc:
        out.append(str(exc))
    return out
"""
    urls = [f"http://{target}/", f"https://{target}/", f"http://localhost:{port}/"]
    execution = egress_attack.run(source, {"urls": urls, "port": port}, egress=[target])

    assert execution.status is ExecutionStatus.OK, execution.error
    not_public = "127.0.0.1 resolves only to addresses that are not public (127.0.0.1)"
    first, second, third, fourth = execution.result
    assert not_public in first and not_public in second and not_public in fourth
    assert "not on the function's egress allow-list" in third
    assert [(r.host, r.refused, r.address) for r in execution.egress] == [
        ("127.0.0.1", True, ""),
        ("127.0.0.1", True, ""),
        ("localhost", True, ""),
        ("127.0.0.1", True, ""),
    ]


def test_a_host_no_record_can_hold_neither_fails_the_call_nor_reaches_the_terminal(
    egress_attack: Attack,
) -> None:
    """A lone surrogate failed the reply's encoding (INTERNAL, the result lost)."""
    source = """\
import ssl
def main(hosts):
    out = []
    for host in hosts:
        try:
            ssl.get_server_certificate((host + chr(0xD800), 443))
        except OSError as exc:
            out.append("is not a valid host name" in str(exc))
    return out
"""
    hosts = ["api.example.com", "\x1b[2J\x1b]0;owned\x07"]
    execution = egress_attack.run(source, {"hosts": hosts}, egress=EGRESS)

    assert execution.status is ExecutionStatus.OK, execution.error
    assert execution.result == [True, True]
    recorded = egress_attack.client.execution(execution.execution_id).egress
    assert [r.host for r in recorded] == [r.host for r in execution.egress]
    for record in recorded:
        assert record.refused and "not a valid host name" in record.reason
        assert record.host.isascii() and record.host.isprintable()
