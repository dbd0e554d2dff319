"""Egress: the one way out of a sandbox, a door the server holds for each call.

A sandbox has no network interface, and its system-call filter refuses ``socket`` and
``connect``: with the language layer gone, it still reaches nothing it was not handed.
A call of a version that declares egress is handed one more fd, its door: an AF_UNIX
stream socket whose other end the server holds (``Door``). Through it the sandbox can
only ask for a connection to a host and port by name; the door

- checks the host and port against the version's allow-list (``EgressRule``),
- resolves the name itself and drops every address that is not public (private,
  loopback, link-local, metadata, multicast, reserved, and those embedded in IPv6
  transition addresses), unless the operator allowed its network, then connects to an
  address it kept, so a name that changes its answer cannot lead anywhere else (no
  DNS rebinding),
- hands the sandbox one end of a new socket pair and relays bytes between the other end
  and the connection, counting them against the call's limits (requests, bytes each
  way, time per request),
- and records every request: host, port, address, bytes, duration, refused or not and
  why, and for plain HTTP the method of the first request and the status of the first
  response on the connection (TLS is end to end between the sandbox and the host, so
  an HTTPS request shows neither).

Inside the sandbox, ``install`` (run before user code) replaces ``socket.create_connection``
with ``connect``, which asks the door: ``http.client`` and ``urllib.request`` use it, so
plain stdlib clients go through the door without knowing. A redirect is a new
connection, checked like the first.

The door's wire protocol: the sandbox sends frames (a 4-byte big-endian length, then a
JSON object ``{"host": str, "port": int}``); the door answers each with a frame
``{"ok": true}`` that carries the connection's fd, or ``{"error": str, "refused": bool}``.
What the sandbox sends is hostile input.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

# What a version that declares egress may import besides the server's allow-list.
EGRESS_IMPORTS: tuple[str, ...] = ("email", "http", "ssl", "urllib")
# Imported ahead of the confinement where egress is on: the clients and their helpers.
EGRESS_PRELOAD: tuple[str, ...] = ("http.client", "urllib.error", "urllib.parse", "urllib.request")
# The ports a rule without one allows.
DEFAULT_PORTS: tuple[int, ...] = (80, 443)

_LENGTH_BYTES = 4
_MAX_FRAME_BYTES = 1024
_MAX_HOST_CHARS = 253
_CHUNK = 64 * 1024
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_HTTP_REQUEST = re.compile(rb"([A-Z]{1,16}) \S+ HTTP/1\.[01]\r?\n")
_HTTP_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])[ \r\n]")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EgressError(ValueError):
    """An allow-list entry that is not a host pattern."""


@dataclass(frozen=True)
class EgressRule:
    """One allow-list entry: a host, or every subdomain of a domain, and its ports.

    Written ``host[:port]``: ``api.example.com:443``, ``*.example.com`` (any depth of
    subdomain, not the domain itself), ``203.0.113.7:8080``, ``[2001:db8::1]:443``.
    Without a port, 80 and 443.
    """

    host: str  # normalized; a wildcard keeps its "*." prefix
    ports: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> EgressRule:
        """The rule ``text`` writes, normalized (lower case, IDNA).

        Raises:
            EgressError: Naming what is wrong with ``text``.
        """
        host, port = _split_host_port(text.strip())
        wildcard = host.startswith("*.")
        name = host[2:] if wildcard else host
        try:
            normal = normal_host(name)
        except EgressError as exc:
            raise EgressError(f"egress entry {text!r}: {exc}") from None
        if wildcard and _is_ip(normal):
            raise EgressError(f"egress entry {text!r}: a wildcard needs a domain, not an address")
        if wildcard and "." not in normal:
            raise EgressError(f"egress entry {text!r}: a wildcard needs a domain with a dot")
        if port is None:
            ports = DEFAULT_PORTS
        elif port.isdigit() and 1 <= int(port) <= 65535:
            ports = (int(port),)
        else:
            raise EgressError(f"egress entry {text!r}: the port must be 1 to 65535")
        return cls(("*." if wildcard else "") + normal, ports)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.ports == DEFAULT_PORTS else f"{host}:{self.ports[0]}"

    def matches(self, host: str, port: int) -> bool:
        """Whether the rule allows ``host`` (normalized) on ``port``."""
        if port not in self.ports:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def covers(self, other: EgressRule) -> bool:
        """Whether everything ``other`` allows, this rule allows too."""
        if not set(other.ports) <= set(self.ports):
            return False
        if not self.host.startswith("*."):
            return other.host == self.host
        suffix = self.host[1:]
        return other.host.endswith(suffix) or other.host == self.host


def parse_rules(entries: Sequence[str]) -> tuple[EgressRule, ...]:
    """The rules of ``entries``, in order, without repeats.

    Raises:
        EgressError: For the first entry that is not a host pattern.
    """
    rules: dict[EgressRule, None] = {}
    for entry in entries:
        rules[EgressRule.parse(entry)] = None
    return tuple(rules)


def normal_host(host: str) -> str:
    """``host`` as the door compares it: lower case, IDNA-encoded, no trailing dot.

    Raises:
        EgressError: When it is neither an IP address nor a valid DNS name.
    """
    host = host.strip().lower().removesuffix(".")
    if _is_ip(host):
        return str(ipaddress.ip_address(host))
    try:
        encoded = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise EgressError(f"{host!r} is not a valid host name") from None
    labels = encoded.split(".")
    if len(encoded) > _MAX_HOST_CHARS or not all(_LABEL.fullmatch(label) for label in labels):
        raise EgressError(f"{host!r} is not a valid host name")
    return encoded


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is a public unicast address, and so is any IPv4 one it embeds."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if address.teredo is not None:
            embedded = address.teredo[1]
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


@dataclass(frozen=True)
class Egress:
    """What one call may reach through its door, and how much.

    Attributes:
        rules: The hosts and ports it may connect to.
        private: Networks it may reach although they are not public (the operator's).
        max_requests: Connections it may ask for, refused ones included.
        max_bytes_sent: Bytes it may send, over all its connections.
        max_bytes_received: Bytes it may receive, over all its connections.
        request_timeout_ms: How long a connection may take, from the request to its end.
    """

    rules: tuple[EgressRule, ...]
    private: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_requests: int = 16
    max_bytes_sent: int = 8 << 20
    max_bytes_received: int = 8 << 20
    request_timeout_ms: int = 10_000


@dataclass(frozen=True)
class EgressRecord:
    """One request through a call's door.

    Attributes:
        host: The host it asked for (normalized when valid).
        port: The port it asked for.
        address: The address the door connected to; "" when it did not.
        method: The HTTP method of the connection's first request, when plain HTTP.
        status: The status of its first response, when plain HTTP; else 0.
        bytes_sent: Bytes from the sandbox to the host.
        bytes_received: Bytes from the host to the sandbox.
        duration_ms: From the request to the connection's end.
        refused: Whether the door refused it (a limit or the allow-list) rather than
            the host or the network failing it.
        reason: Why it was refused, failed or cut; "" for a connection that ended
            normally.
    """

    host: str
    port: int
    address: str = ""
    method: str = ""
    status: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    duration_ms: float = 0.0
    refused: bool = False
    reason: str = ""


class _Request:
    """A request's record while its connection lives."""

    def __init__(self, host: str, port: int) -> None:
        self.fields: dict[str, object] = {"host": host, "port": port}
        self.started = time.monotonic()
        self.ended: float | None = None
        # The relay's end towards the sandbox, while the connection lives.
        self.sandbox_side: socket.socket | None = None

    def closed_by_sandbox(self) -> bool:
        """Whether the sandbox has closed its end: the connection is over for it."""
        sock = self.sandbox_side
        if sock is None:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def end(self, reason: str = "", *, refused: bool = False) -> None:
        self.sandbox_side = None
        if self.ended is None:
            self.ended = time.monotonic()
            if reason:
                self.fields.update(reason=reason, refused=refused)

    def record(self, now: float) -> EgressRecord:
        ended = now if self.ended is None else self.ended
        return EgressRecord(**self.fields, duration_ms=(ended - self.started) * 1000)  # type: ignore[arg-type]


class Door:
    """One call's way out (see the module's docstring); lives on the server's event loop.

    ``give_away`` hands over the sandbox's end, to be sent with the call's other fds;
    ``close`` ends every connection and returns the records. Requests are answered one at
    a time: the door stops reading while it connects.
    """

    def __init__(self, egress: Egress) -> None:
        self._egress = egress
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        self._sock = ours
        self._theirs: int | None = theirs.detach()
        self._buffer = bytearray()
        self._requests: list[_Request] = []
        self._sent = 0
        self._received = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading = False
        self._resume()

    def give_away(self) -> int:
        """The sandbox's end of the door, which the caller now owns."""
        fd, self._theirs = self._theirs, None
        assert fd is not None, "given away twice"
        return fd

    def close(self) -> tuple[EgressRecord, ...]:
        """End every connection now; the records of the call's requests."""
        now = time.monotonic()
        if self._theirs is not None:
            os.close(self._theirs)
            self._theirs = None
        self._hang_up()
        for task in self._tasks:
            task.cancel()
        for request in self._requests:
            # A worker says it is done as soon as its call returns: the door may not have
            # read the end of a connection the function closed.
            request.end("" if request.closed_by_sandbox() else "the call ended")
        return tuple(request.record(now) for request in self._requests)

    def _hang_up(self) -> None:
        self._pause()
        self._sock.close()

    def _pause(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._sock.fileno())

    def _resume(self) -> None:
        """Answer the next request in the buffer, or read on."""
        if self._sock.fileno() < 0 or self._take_request():
            return
        if not self._reading:
            self._reading = True
            self._loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self._sock.recv(_MAX_FRAME_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._hang_up()  # the sandbox is gone; its connections end with it
            return
        self._buffer += data
        self._take_request()

    def _take_request(self) -> bool:
        """Start answering the buffer's first complete request; whether there was one."""
        buffer = self._buffer
        if len(buffer) < _LENGTH_BYTES:
            return False
        size = int.from_bytes(buffer[:_LENGTH_BYTES], "big")
        if size > _MAX_FRAME_BYTES:
            self._refuse_garbage("a request frame is too long")
            return True
        if len(buffer) < _LENGTH_BYTES + size:
            return False
        frame = bytes(buffer[_LENGTH_BYTES : _LENGTH_BYTES + size])
        del buffer[: _LENGTH_BYTES + size]
        self._pause()
        task = self._loop.create_task(self._request(frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _refuse_garbage(self, why: str) -> None:
        """Record a request that was not one, and hang up: the sandbox broke the protocol."""
        request = _Request("", 0)
        request.end(why, refused=True)
        self._requests.append(request)
        self._hang_up()

    async def _request(self, frame: bytes) -> None:
        """Answer one request, and carry its connection's bytes until it ends."""
        try:
            message = json.loads(frame)
            host, port = message["host"], message["port"]
        except (ValueError, TypeError, KeyError, RecursionError):
            self._refuse_garbage("a request is not a JSON object with a host and a port")
            return
        if not isinstance(host, str) or type(port) is not int or not 0 < port < 65536:
            self._refuse_garbage("a request's host must be a string and its port 1 to 65535")
            return
        request = _Request(host[:_MAX_HOST_CHARS], port)
        limit = self._egress.max_requests
        if len(self._requests) >= limit:
            # Past the limit only the first refusal is recorded: the list stays bounded.
            if len(self._requests) == limit:
                self._requests.append(request)
            why = f"the call's limit of {limit} egress requests is reached"
            request.end(why, refused=True)
            self._answer({"error": why, "refused": True})
            return
        self._requests.append(request)
        timeout_ms = self._egress.request_timeout_ms
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                await self._connect_and_relay(request, host, port)
        except TimeoutError:
            if request.fields.get("address"):
                request.end(f"the request took longer than {timeout_ms} ms")
            else:
                request.end(f"no connection within {timeout_ms} ms")
                self._answer({"error": request.fields["reason"], "refused": False})

    async def _connect_and_relay(self, request: _Request, host: str, port: int) -> None:
        upstream = await self._connect(request, host, port)
        if upstream is None:
            self._answer({"error": request.fields["reason"], "refused": request.fields["refused"]})
            return
        up_reader, up_writer = upstream
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        request.sandbox_side = ours
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours, limit=_CHUNK)
        except BaseException:
            ours.close()
            theirs.close()
            up_writer.close()
            raise
        try:
            with theirs:
                self._answer({"ok": True}, theirs.fileno())
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(request, reader, up_writer, sending=True))
                group.create_task(self._pump(request, up_reader, writer, sending=False))
            request.end()
        except* _LimitHit as group_error:
            request.end(str(group_error.exceptions[0]), refused=True)
        except* OSError as group_error:
            request.end(f"the connection failed: {group_error.exceptions[0]}")
        finally:
            writer.close()
            up_writer.close()

    async def _connect(
        self, request: _Request, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The connection ``request`` asks for, or None with the request ended and why."""
        try:
            name = normal_host(host)
        except EgressError as exc:
            request.end(str(exc), refused=True)
            return None
        request.fields["host"] = name
        if not any(rule.matches(name, port) for rule in self._egress.rules):
            request.end(f"{name}:{port} is not on the function's egress allow-list", refused=True)
            return None
        try:
            # An address needs no resolver (whose thread hop costs a request ~0.1 ms).
            found = [name] if _is_ip(name) else await self._resolve(name, port)
        except OSError as exc:
            request.end(f"cannot resolve {name}: {exc}")
            return None
        kept: list[str] = []
        dropped: list[str] = []
        for text in found:
            address = ipaddress.ip_address(text)
            allowed = is_public(address) or any(address in net for net in self._egress.private)
            (kept if allowed else dropped).append(str(address))
        if not kept:
            why = f"{name} resolves only to addresses that are not public ({', '.join(dropped)})"
            request.end(why, refused=True)
            return None
        failures = []
        for ip in dict.fromkeys(kept):
            try:
                connection = await asyncio.open_connection(ip, port, limit=_CHUNK)
            except OSError as exc:
                failures.append(f"{ip}: {exc.strerror or exc}")
                continue
            request.fields["address"] = ip
            return connection
        request.end(f"cannot connect to {name}:{port} ({'; '.join(failures)})")
        return None

    async def _resolve(self, name: str, port: int) -> list[str]:
        infos = await self._loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos]

    def _answer(self, message: dict[str, object], fd: int | None = None) -> None:
        """Send one answer and read on; hang up when the sandbox does not take it."""
        if self._sock.fileno() < 0:
            return
        data = json.dumps(message).encode()
        frame = len(data).to_bytes(_LENGTH_BYTES, "big") + data
        try:
            # A small frame into a buffer the sandbox empties before it asks again: it
            # goes whole, or the sandbox is not reading its answers.
            sent = socket.send_fds(self._sock, [frame], [] if fd is None else [fd])
        except OSError:
            sent = 0
        if sent != len(frame):
            self._hang_up()
            return
        self._resume()

    async def _pump(
        self,
        request: _Request,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *,
        sending: bool,
    ) -> None:
        """Carry one direction's bytes, counting them, until its end of file."""
        egress = self._egress
        count = "bytes_sent" if sending else "bytes_received"
        first = True
        while chunk := await source.read(_CHUNK):
            if first:
                first = False
                _sniff(request, chunk, sending=sending)
            request.fields[count] = int(request.fields.get(count, 0)) + len(chunk)  # type: ignore[call-overload]
            if sending:
                self._sent += len(chunk)
                if self._sent > egress.max_bytes_sent:
                    raise _LimitHit(f"the call's limit of {egress.max_bytes_sent} bytes sent")
            else:
                self._received += len(chunk)
                if self._received > egress.max_bytes_received:
                    raise _LimitHit(
                        f"the call's limit of {egress.max_bytes_received} bytes received"
                    )
            sink.write(chunk)
            await sink.drain()
        with contextlib.suppress(OSError):
            if sink.can_write_eof():
                sink.write_eof()


def _sniff(request: _Request, chunk: bytes, *, sending: bool) -> None:
    """Note the method and status of a plain HTTP connection's first request and response."""
    if sending and (match := _HTTP_REQUEST.match(chunk)):
        request.fields["method"] = match[1].decode()
    elif not sending and (match := _HTTP_STATUS.match(chunk)):
        request.fields["status"] = int(match[1])


class _LimitHit(Exception):
    """A call's byte limit, hit while relaying."""


def _split_host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise EgressError(f"egress entry {text!r}: an IPv6 address goes in [brackets]")
        return host, rest[1:] if rest else None
    if text.count(":") > 1:
        raise EgressError(f"egress entry {text!r}: an IPv6 address goes in [brackets]")
    host, colon, port = text.partition(":")
    if not host:
        raise EgressError(f"egress entry {text!r}: no host")
    return host, port if colon else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# The sandbox's side. The door of the call in progress, or None: set by the sandbox
# process per call (a warm worker's calls each bring their own).
_door: socket.socket | None = None


def install() -> None:
    """Route the stdlib's connections through the door; in a sandbox, before user code.

    ``urllib.request``'s ``file:`` scheme is closed as well: a version that may reach
    hosts has no business reading the sandbox's files through a URL.
    """
    socket.create_connection = connect  # type: ignore[assignment]
    with contextlib.suppress(ImportError):
        import urllib.request

        urllib.request.FileHandler.file_open = _no_file_urls  # type: ignore[assignment]


def enter(fd: int | None) -> None:
    """Make ``fd`` (None: no egress) the door of the call that starts now."""
    global _door
    _door = None if fd is None else socket.socket(fileno=fd)


def leave() -> None:
    """Close the door of the call that ended."""
    global _door
    if _door is not None:
        _door.close()
        _door = None


def connect(
    address: tuple[str, int],
    timeout: float | None | object = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
    source_address: object = None,
    *,
    all_errors: bool = False,
) -> socket.socket:
    """``socket.create_connection`` through the call's door.

    Raises:
        PermissionError: When the version declares no egress, or the door refused.
        ConnectionError: When the host or the network failed the connection.
    """
    host, port = str(address[0]), int(address[1])
    door = _door
    if door is None:
        raise PermissionError(
            errno.EACCES, f"no network for {host}:{port}: the function declares no egress"
        )
    data = json.dumps({"host": host, "port": port}).encode()
    door.sendall(len(data).to_bytes(_LENGTH_BYTES, "big") + data)
    received, fds = bytearray(), []
    while len(received) < _LENGTH_BYTES or len(received) < _LENGTH_BYTES + int.from_bytes(
        received[:_LENGTH_BYTES], "big"
    ):
        chunk, new_fds, _, _ = socket.recv_fds(door, _MAX_FRAME_BYTES, 1)
        if not chunk:
            raise ConnectionAbortedError(errno.ECONNABORTED, "the door to the network closed")
        received += chunk
        fds += new_fds
    reply = json.loads(received[_LENGTH_BYTES:])
    if "error" in reply:
        for fd in fds:
            socket.close(fd)
        code = errno.EACCES if reply.get("refused") else errno.ECONNREFUSED
        kind = PermissionError if reply.get("refused") else ConnectionRefusedError
        raise kind(code, f"egress to {host}:{port}: {reply['error']}")
    connection = _Connection(fileno=fds[0])
    if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
        connection.settimeout(timeout)  # type: ignore[arg-type]
    return connection


class _Connection(socket.socket):
    """A connection through the door: a Unix socket that takes TCP options as a no-op."""

    def setsockopt(self, level: int, option: int, value: object, *rest: object) -> None:
        if level != socket.IPPROTO_TCP:
            super().setsockopt(level, option, value, *rest)  # type: ignore[call-overload]


def _no_file_urls(*_: object) -> None:
    import urllib.error

    raise urllib.error.URLError("file: URLs are not allowed in a sandbox")
