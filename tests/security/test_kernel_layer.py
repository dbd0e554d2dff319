"""Assume the language layer falls: OS-level attacks with full Python against the layers below.

Every job here runs as plain Python with the real builtins (``SandboxHost`` with
``language_layer=False``, reachable only from tests), in sandboxes confined exactly as
the server's: the private root, the namespaces, the uid, the rlimits, the system-call
filter. The host runs in a throw-away PID namespace (``unshare``), so an attack that
signals every process can at worst end that namespace. Each test asserts that the attack
had no effect: the planted secrets are in no result, the planted listeners saw no
connection, the host files are untouched, other calls ran correctly; and, where an attack
looks for something, that it does find what it may see (its own secret), so that a
search which cannot find anything does not pass for a wall.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import Listener
from toolvault.sandbox import _seccomp
from toolvault.sandbox._isolation import PRIVATE_WORKDIR, runtime_paths, trust_store

SECRET = f"tv-kernel-secret-{secrets.token_hex(16)}"
UNSHARE = shutil.which("unshare")
REPO = Path(__file__).parents[2]
PG_SOCKET = "/var/run/postgresql/.s.PGSQL.5432"


def hidden(text: str) -> str:
    """``text`` in a form that contains no substring of it: jobs get secrets this way."""
    return text[::-1]


# Ends a function that wrote a report of its own: the runtime's goes nowhere after it.
# (Exiting instead would do in a sandbox forked for the call, but a warm worker that ends
# during a call leaves no result at all; and one that succeeds keeps serving, with what
# the call left behind.)
ONLY_MY_REPORT = """\
    null = os.open("/dev/null", os.O_WRONLY)
    os.dup2(null, 3)
    os.close(null)
"""


# The helper every attack starts with: the secret it must not find, from its hidden form.
PRELUDE = """\
import ctypes, errno, json, os, resource, signal, socket, sys
def attempt(action):
    try:
        return ["ok", action()]
    except OSError as exc:
        return [type(exc).__name__, exc.errno]
    except Exception as exc:
        return [type(exc).__name__, None]
"""


def root_entries() -> list[str]:
    """What a private root's top directory holds, sorted."""
    kept = [*runtime_paths()[0], *(path for _, path in trust_store())]
    return sorted({"dev", "proc", PRIVATE_WORKDIR.strip("/"), *(p.split("/")[1] for p in kept)})


@dataclass
class Host:
    """The unrestricted sandbox host, the secrets planted around it and the listeners."""

    process: subprocess.Popen[str]
    layers: dict[str, bool]
    base: Path
    planted: list[Path]
    listeners: dict[str, Listener]
    unix_path: str
    abstract_name: str
    tcp_ports: dict[str, int] = field(default_factory=dict)

    def run(self, *jobs: dict[str, Any]) -> list[dict[str, Any]]:
        """Run ``jobs`` at once; check no secret came back and no listener was reached."""
        assert self.process.stdin is not None and self.process.stdout is not None
        for job in jobs:
            job["source"] = PRELUDE + job["source"]
        self.process.stdin.write(json.dumps(list(jobs)) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the unrestricted host died"
        results: list[dict[str, Any]] = json.loads(line)
        assert SECRET not in line, f"a secret came back: {line[:3000]}"
        for name, listener in self.listeners.items():
            assert listener.connections == 0, f"the {name} listener was reached"
        for path in self.planted:
            assert path.read_text() == SECRET, f"{path} was changed"
        return results

    def result(self, source: str, **args: Any) -> Any:
        """Run one job that must end OK; its value."""
        (outcome,) = self.run({"source": source, "args": args})
        assert outcome["status"] == "ok", (outcome["error_type"], outcome["error_message"])
        return json.loads(outcome["result_json"])

    def needs(self, *layers: str) -> None:
        missing = [name for name in layers if not self.layers.get(name)]
        if missing:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI's machine must have these layers: {missing}")
            pytest.skip(f"this host does not allow {missing} (toolvault doctor says why)")


@pytest.fixture(scope="module", params=["fresh", "spares", "warm"])
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    """An unrestricted sandbox host in a new PID namespace, with secrets planted around it.

    The secret is in the host's environment, in a 0600 file in the directory it is told to
    hide, in a 0644 file beside it, and behind a pathname Unix socket, an abstract one and
    TCP listeners on loopback. Every attack runs three times: in a sandbox forked for the
    call, in a spare made ahead of it (but for the first call of each kind of limits),
    and in warm workers (keyed by the job's filename) that serve call after call.
    """
    options = {"fresh": (), "spares": ("--spares",), "warm": ("--warm",)}[request.param]
    with unrestricted_host(*options) as started:
        yield started


@contextlib.contextmanager
def unrestricted_host(*options: str) -> Iterator[Host]:
    """The ``host`` fixture's host; ``options`` go to tests.security.unrestricted_host."""
    if UNSHARE is None:
        pytest.skip("util-linux unshare is needed to contain signalling attacks")
    base = Path(tempfile.mkdtemp(prefix="toolvault-kernel-"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir(mode=0o700)
    private, public = data / "secret.txt", base / "canary.txt"
    for path, mode in ((private, 0o600), (public, 0o644)):
        path.write_text(SECRET)
        path.chmod(mode)
    listeners: dict[str, Listener] = {}
    unix_path = str(base / "listener.sock")
    abstract_name = f"\0toolvault-kernel-{secrets.token_hex(8)}"
    sockets = {
        "unix": (socket.AF_UNIX, unix_path),
        "abstract": (socket.AF_UNIX, abstract_name),
        "tcp4": (socket.AF_INET, ("127.0.0.1", 0)),
        "tcp6": (socket.AF_INET6, ("::1", 0)),
    }
    ports = {}
    for name, (family, address) in sockets.items():
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind(address)
        sock.listen()
        if family != socket.AF_UNIX:
            ports[name] = sock.getsockname()[1]
        listeners[name] = Listener(sock)
        threading.Thread(target=listeners[name].serve, daemon=True).start()
    os.chmod(unix_path, 0o777)
    command = [UNSHARE, "--pid", "--fork", "--mount-proc", "--kill-child"]
    command += [sys.executable, "-m", "tests.security.unrestricted_host", str(data), *options]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={"TOOLVAULT_TEST_SECRET": SECRET, "PATH": os.environ.get("PATH", "")},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    started = json.loads(process.stdout.readline())
    host = Host(
        process, started["layers"], base, [private, public], listeners, unix_path, abstract_name
    )
    host.tcp_ports = ports
    try:
        yield host
        assert process.poll() is None, "the unrestricted host died"
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()
        for listener in listeners.values():
            listener.sock.close()
        shutil.rmtree(base)


def test_cant_find_a_host_file_anywhere_in_its_root(host: Host) -> None:
    host.needs("private-root")
    found = host.result(
        """\
def main(secret, paths):
    secret = secret[::-1].encode()
    found, files = [], []
    for directory, subdirectories, names in os.walk("/"):
        if directory == "/proc":
            subdirectories[:] = []
            continue
        for name in names:
            path = os.path.join(directory, name)
            files.append(path)
            try:
                with open(path, "rb") as file:
                    if secret in file.read(1 << 22):
                        found.append(path)
            except OSError:
                pass
    opened = {path: attempt(lambda: open(path).read()) for path in paths}
    return {"found": found, "opened": opened, "top": sorted(os.listdir("/")), "files": files}
""",
        secret=hidden(SECRET),
        paths=[
            *(str(path) for path in host.planted),
            "/etc/passwd",
            "/proc/1/environ",
            "/proc/self/environ",
            PG_SOCKET,
            f"/proc/{os.getpid()}/environ",
        ],
    )

    assert found["found"] == []
    kept, _ = runtime_paths()
    certificates = [path for _, path in trust_store()]
    assert found["top"] == root_entries()
    assert {p for p in found["files"] if not any(p.startswith(k + "/") for k in kept)} == {
        "/dev/null",
        "/dev/zero",
        "/dev/random",
        "/dev/urandom",
        *certificates,
    }
    # Gone, not refused: nothing of the host's tree is in the sandbox's root.
    for path in (*map(str, host.planted), "/etc/passwd", PG_SOCKET, f"/proc/{os.getpid()}/environ"):
        assert found["opened"][path] == ["FileNotFoundError", errno.ENOENT], path
    # It is PID 1 of its own namespace: its own environment, empty, and not dumpable.
    for own in ("/proc/1/environ", "/proc/self/environ"):
        assert found["opened"][own] in (["ok", ""], ["PermissionError", errno.EACCES])


def test_cant_reach_a_unix_socket_bound_to_a_path_or_an_abstract_name(host: Host) -> None:
    host.needs("private-root", "network-namespace")
    seen = host.result(
        """\
def main(paths):
    def connect(address):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(address)
    out = {path: attempt(lambda: connect(path)) for path in paths}
    for path in paths:
        # Through the magic links of /proc, which lead to the host's files for some paths.
        out["/proc/self/root" + path] = attempt(lambda: connect("/proc/self/root" + path))
        out["/proc/1/cwd/../.." + path] = attempt(lambda: connect("/proc/1/cwd/../.." + path))
    return out
""",
        paths=[host.unix_path, PG_SOCKET, host.abstract_name],
    )

    for path, outcome in seen.items():
        assert outcome[0] != "ok", path
        assert outcome[1] in (errno.ENOENT, errno.EPERM, errno.ECONNREFUSED, errno.EACCES), path


def test_cant_connect_over_tcp_or_udp_even_to_loopback(host: Host) -> None:
    host.needs("network-namespace")
    seen = host.result(
        """\
def main(port4, port6):
    def tcp(family, address):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(address)
    def udp(family, address):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x", address)
    return {
        "tcp4": attempt(lambda: tcp(socket.AF_INET, ("127.0.0.1", port4))),
        "tcp6": attempt(lambda: tcp(socket.AF_INET6, ("::1", port6))),
        "udp4": attempt(lambda: udp(socket.AF_INET, ("127.0.0.1", port4))),
        "interfaces": attempt(lambda: [name for _, name in socket.if_nameindex()]),
    }
""",
        port4=host.tcp_ports["tcp4"],
        port6=host.tcp_ports["tcp6"],
    )

    for key in ("tcp4", "tcp6", "udp4"):
        assert seen[key][0] != "ok", key
        assert seen[key][1] in (errno.ENETUNREACH, errno.EPERM, errno.EADDRNOTAVAIL), key


# Reads every readable page of the process three ways and says which markers it saw. It
# gets each marker reversed and searches with a regular expression of one-character
# classes, so that the plain marker is nowhere in its own memory: compiled, a pattern is a
# list of character codes, not the text.
MEMORY_SCAN = """\
import gc, re
def regions(anonymous=False):
    for line in open("/proc/self/maps"):
        span, perms, *rest = line.split()
        path = rest[3] if len(rest) > 3 else ""
        if anonymous and path and not path.startswith("["):
            continue  # a file's mapping past its end raises SIGBUS when touched
        if perms.startswith("r") and not path.startswith(("[vvar", "[vsyscall")):
            start, end = (int(x, 16) for x in span.split("-"))
            yield start, end
def through_proc(patterns):
    seen = set()
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # dumpable again, so that /proc/self/mem opens
    with open("/proc/self/mem", "rb", buffering=0) as mem:
        for start, end in regions():
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except OSError:
                continue
            seen.update(name for name, pattern in patterns.items() if pattern.search(data))
    return seen
def through_ctypes(patterns):
    seen = set()
    for start, end in regions(anonymous=True):
        data = ctypes.string_at(start, end - start)
        seen.update(name for name, pattern in patterns.items() if pattern.search(data))
    return seen
def through_objects(patterns):
    seen = set()
    for obj in gc.get_objects():
        for text in (obj if isinstance(obj, (list, tuple)) else [obj]):
            if isinstance(text, (str, bytes)):
                raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
                seen.update(name for name, pattern in patterns.items() if pattern.search(raw))
    return seen
def main(markers):
    patterns = {
        name: re.compile("".join(f"[{c}]" for c in reversed(marker)).encode())
        for name, marker in markers.items()
    }
    return {
        way.__name__: sorted(way(patterns))
        for way in (through_proc, through_ctypes, through_objects)
    }
"""


@pytest.fixture
def answering() -> Iterator[Listener]:
    """A loopback server that answers one line to every connection: what a door may reach."""
    sock = socket.create_server(("127.0.0.1", 0))
    listener = Listener(sock)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            listener.connections += 1
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    threading.Thread(target=serve, daemon=True).start()
    yield listener
    sock.close()


def test_with_a_door_it_still_reaches_only_what_the_door_allows(
    host: Host, answering: Listener
) -> None:
    """Full Python holding its door: raw requests, names, fds and garbage get nothing else."""
    host.needs("network-namespace", "seccomp")
    (outcome,) = host.run(
        {
            "source": """\
def main(allowed, port4, port6, unix_path):
    from toolvault.sandbox import _door
    door = _door._door
    def ask(message, fds=()):
        data = json.dumps(message).encode()
        socket.send_fds(door, [len(data).to_bytes(4, "big") + data], list(fds))
        reply, got, _, _ = socket.recv_fds(door, 1024, 4)
        return json.loads(reply[4:]), got
    out = {"socket": attempt(lambda: socket.socket(socket.AF_INET).close())}
    out["tcp4"] = ask({"host": "127.0.0.1", "port": port4})[0]
    out["tcp6"] = ask({"host": "::1", "port": port6})[0]
    out["name"] = ask({"host": "localhost", "port": allowed})[0]
    out["path"] = ask({"host": unix_path, "port": 1})[0]
    read_end, write_end = os.pipe()
    out["fds"] = ask({"host": "127.0.0.1", "port": port4}, [read_end, write_end])[0]
    reply, got = ask({"host": "127.0.0.1", "port": allowed})
    with socket.socket(fileno=got[0]) as connection:
        connection.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        out["allowed"] = [reply, connection.recv(100).decode()]
    door.sendall(b"\\x00\\x00\\x00\\x05hello")
    out["garbage"] = attempt(lambda: door.recv(10).decode())
    return out
""",
            "args": {
                "allowed": answering.port,
                "port4": host.tcp_ports["tcp4"],
                "port6": host.tcp_ports["tcp6"],
                "unix_path": host.unix_path,
            },
            "egress": [f"127.0.0.1:{answering.port}"],
        }
    )

    assert outcome["status"] == "ok", (outcome["error_type"], outcome["error_message"])
    seen = json.loads(outcome["result_json"])
    assert seen["socket"] == ["PermissionError", errno.EPERM]
    for name in ("tcp4", "tcp6", "name", "path", "fds"):
        assert seen[name]["refused"] is True, (name, seen[name])
    assert seen["allowed"][0] == {"ok": True}
    assert seen["allowed"][1].startswith("HTTP/1.0 200 OK")
    assert seen["garbage"] == ["ok", ""]  # the door hung up
    assert answering.connections == 1
    records = outcome["egress"]
    assert [r["refused"] for r in records] == [True] * 5 + [False, True]
    assert records[5]["address"] == "127.0.0.1" and records[5]["status"] == 200
    assert "not a JSON object" in records[6]["reason"]


def test_cant_find_another_calls_source_arguments_or_secrets_in_its_memory(host: Host) -> None:
    in_source, in_arguments, in_secrets = (
        f"{SECRET}-{part}" for part in ("source", "args", "secrets")
    )
    # The values of its declared secrets travel in its job, as the server sends them.
    declared = {"API_KEY": in_secrets}
    own = f"tv-own-{secrets.token_hex(8)}"  # no secret: the hunter reports finding it
    victim = f"def main(token):\n    kept = {in_source!r}\n    return len(token) + len(kept)\n"
    # A call that ran before, with another name, as another function of another namespace.
    (done,) = host.run(
        {
            "source": victim,
            "args": {"token": in_arguments},
            "filename": "victim@1",
            "secrets": declared,
        }
    )
    assert done["status"] == "ok", done

    markers = {
        "source": hidden(in_source),
        "arguments": hidden(in_arguments),
        "secrets": hidden(in_secrets),
        "own": hidden(own),
    }
    hunter = {"source": MEMORY_SCAN + f"MINE = {own!r}\n", "args": {"markers": markers}}
    # One victim running alongside, holding its secrets while the hunter searches.
    slow = victim.replace("return", "import time; time.sleep(1.5); return")
    running = {
        "source": slow,
        "args": {"token": in_arguments},
        "filename": "victim@2",
        "secrets": declared,
    }
    for outcome in host.run(hunter, running) + host.run(hunter):
        assert outcome["status"] == "ok", (outcome["error_type"], outcome["error_message"])
        if "through_proc" not in outcome["result_json"]:
            continue
        seen = json.loads(outcome["result_json"])
        # Each way finds the hunter's own marker (so it can search), and only that.
        assert seen == {
            way: ["own"] for way in ("through_proc", "through_ctypes", "through_objects")
        }


def test_cant_signal_the_host_or_another_call(host: Host) -> None:
    host.needs("pid-namespace")
    bystander = {"source": "import time\ndef main():\n    time.sleep(1)\n    return 42\n"}
    attacker = {
        "source": """\
def main():
    import time
    time.sleep(0.2)
    out = {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
    out["all"] = attempt(lambda: os.kill(-1, signal.SIGKILL))
    hit = []
    for pid in range(2, 4096):
        try:
            os.kill(pid, signal.SIGKILL)
            hit.append(pid)
        except OSError:
            pass
    out["hit"] = hit
    out["parent"] = os.getppid()
    return out
"""
    }
    before = host.result("def main():\n    return 1\n")
    calm, seen = host.run(bystander, attacker)

    assert before == 1
    assert calm["status"] == "ok" and calm["result_json"] == "42", calm
    assert seen["status"] == "ok", seen
    result = json.loads(seen["result_json"])
    assert result["pids"] == [1]
    assert result["all"] == ["ProcessLookupError", errno.ESRCH]
    assert result["hit"] == []
    assert result["parent"] == 0
    assert host.result("def main():\n    return 2\n") == 2  # the host survived


def test_cant_write_anywhere_but_its_working_directory(host: Host) -> None:
    host.needs("private-root", "read-only-filesystem")
    written = host.result(
        """\
def main(workdir):
    wrote = []
    for directory, subdirectories, _ in os.walk("/"):
        if directory.startswith("/proc"):
            subdirectories[:] = []
        for make in (
            lambda: open(os.path.join(directory, "escape"), "w").close(),
            lambda: os.mkdir(os.path.join(directory, "escape.d")),
            lambda: os.symlink("/", os.path.join(directory, "escape.l")),
            lambda: os.chmod(directory, 0o777),
            lambda: os.utime(directory),
        ):
            if attempt(make)[0] == "ok" and not directory.startswith(workdir):
                wrote.append(directory)
    mine = attempt(lambda: open(os.path.join(workdir, "fine"), "w").write("fine"))
    # What it made in out/ would come back (and a symlink there make the run fail).
    out = os.path.join(workdir, "out")
    for name in os.listdir(out):
        path = os.path.join(out, name)
        (os.rmdir if os.path.isdir(path) and not os.path.islink(path) else os.unlink)(path)
    return {"wrote": sorted(set(wrote)), "mine": mine}
""",
        workdir=PRIVATE_WORKDIR,
    )

    assert written == {"wrote": [], "mine": ["ok", 4]}
    assert sorted(p.name for p in host.base.iterdir()) == ["canary.txt", "data", "listener.sock"]


def test_cant_raise_its_limits(host: Host) -> None:
    (outcome,) = host.run(
        {
            "source": """\
def main():
    raised = {}
    for name in ("RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE"):
        limit = getattr(resource, name)
        raised[name] = attempt(lambda: resource.setrlimit(limit, (-1, -1)))
    print(json.dumps(raised), flush=True)
    print(json.dumps({"fork": attempt(os.fork)}), flush=True)
    hog = bytearray(512 << 20)
    return len(hog)
""",
            "limits": {"memory_mb": 128},
        }
    )

    raised, forked = (json.loads(line) for line in outcome["stdout"].splitlines())
    assert raised == {name: ["ValueError", None] for name in raised}  # above the hard limit
    assert forked == {"fork": ["BlockingIOError", errno.EAGAIN]}
    assert outcome["status"] == "memory_limit"


# Reports that code which escaped the language layer could write instead of its own.
_GOOD = {"status": "ok", "error_type": "", "error_message": "", "traceback": ""}
FORGED_REPORTS = {
    "a lone surrogate in the result": json.dumps({**_GOOD, "result_json": '"\\ud800"'}),
    "a peak memory of 2**80": json.dumps({**_GOOD, "result_json": "1", "peak_memory_bytes": 2**80}),
    "a negative peak memory": json.dumps({**_GOOD, "result_json": "1", "peak_memory_bytes": -5}),
    "a peak memory that is a bool": json.dumps(
        {**_GOOD, "result_json": "1", "peak_memory_bytes": True}
    ),
    "a result that is not JSON": json.dumps({**_GOOD, "result_json": "not json"}),
    "a result of NaN": json.dumps({**_GOOD, "result_json": "NaN"}),
    "a result nested 100000 deep": json.dumps({**_GOOD, "result_json": "[" * 100_000}),
    "a result with a 5000-digit integer": json.dumps({**_GOOD, "result_json": "9" * 5000}),
    "an unknown status": json.dumps({**_GOOD, "status": "fine", "result_json": "1"}),
    "a report that is a list": "[1, 2]",
    "bytes that are not UTF-8": "\udcff\udcfe",
    "a result of 1e999": json.dumps({**_GOOD, "result_json": "[1e999]"}),
    "a result_json that is a number": json.dumps({**_GOOD, "result_json": 1}),
}


@pytest.mark.parametrize("report", FORGED_REPORTS.values(), ids=FORGED_REPORTS.keys())
def test_a_forged_report_ends_the_run_as_crashed(host: Host, report: str) -> None:
    source = f"""\
def main():
    os.write(3, {report!r}.encode("utf-8", "surrogateescape"))
    os._exit(0)
"""
    (outcome,) = host.run({"source": source})

    assert outcome["status"] == "crashed", outcome
    assert outcome["error_type"] == "Crashed"
    assert outcome["error_message"].startswith("the sandbox process sent a malformed report"), (
        outcome
    )
    assert outcome["result_json"] == ""
    assert 0 <= outcome["peak_memory_bytes"] < 2**63


def test_the_texts_of_a_report_come_back_valid_and_within_their_caps(host: Host) -> None:
    report = {
        "status": "error",
        "result_json": "[1, 2]",
        "error_type": "E" * 10_000,
        "error_message": "\ud800" + "m" * 10_000,
        "traceback": "t" * 20_000 + "\udfff",
        "peak_memory_bytes": 1 << 20,
    }
    source = f"def main():\n    os.write(3, {json.dumps(report).encode()!r})\n{ONLY_MY_REPORT}"
    (outcome,) = host.run({"source": source})

    assert outcome["status"] == "error"
    assert outcome["result_json"] == ""  # only an OK run has a result
    assert outcome["error_type"] == "E" * 200
    assert outcome["error_message"] == "\ufffd" + "m" * 1_999
    assert outcome["traceback"] == "t" * 7_999 + "\ufffd"
    assert outcome["peak_memory_bytes"] >= 1 << 20  # never less than the kernel measured


# Raw system calls through libc, with arguments that do no harm even if they went through.
RAW_CALLS = """\
libc = ctypes.CDLL(None, use_errno=True)
def raw(name, *args):
    result = libc.syscall(ctypes.c_long(NUMBERS[name]), *(ctypes.c_long(a) for a in args))
    return ["ok", result] if result != -1 else ["OSError", ctypes.get_errno()]
buf = ctypes.create_string_buffer(256)
where = ctypes.addressof(buf)
def main():
    return {
        "unshare user": raw("unshare", 0x10000000),
        "unshare mount": raw("unshare", 0x00020000),
        "clone user": raw("clone", 0x10000000 | 17, 0, 0, 0, 0),
        "clone3": raw("clone3", where, 88),
        "setns": raw("setns", 0, 0),
        "mount": raw("mount", where, where, where, 0, 0),
        "chroot": raw("chroot", where),
        "ptrace": raw("ptrace", 0, 0, 0, 0),
        "process_vm_readv": raw("process_vm_readv", 1, where, 1, where, 1, 0),
        "execve": raw("execve", where, 0, 0),
        "io_uring_setup": raw("io_uring_setup", 1, where),
        "bpf": raw("bpf", 0, where, 0),
        "perf_event_open": raw("perf_event_open", where, 0, -1, -1, 0),
        "userfaultfd": raw("userfaultfd", 0),
        "keyctl": raw("keyctl", 0, 0, 0, 0, 0),
        "open_by_handle_at": raw("open_by_handle_at", -100, where, 0),
        "personality": raw("personality", 0x0040000),
        "netlink": raw("socket", 16, 3, 0),
        "unix": raw("socket", 1, 1, 0),
        "fork": attempt(os.fork),
    }
"""


def test_cant_regain_privileges_or_reach_the_kernels_attack_surface(host: Host) -> None:
    host.needs("seccomp")
    arch = _seccomp._this_arch()
    assert arch is not None
    source = f"NUMBERS = {dict(arch.numbers)!r}\n" + RAW_CALLS
    seen = host.result(source)

    enosys = {"clone3"}
    for name, outcome in seen.items():
        if name == "fork":
            assert outcome == ["BlockingIOError", errno.EAGAIN]
        elif name in enosys:
            assert outcome == ["OSError", errno.ENOSYS], name
        else:
            assert outcome == ["OSError", errno.EPERM], (name, outcome)
