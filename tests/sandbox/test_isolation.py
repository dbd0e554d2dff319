"""The process and kernel layers, checked from inside, without the language layer's help.

RestrictedPython refuses ``import os`` at publish time, so attacks on the lower layers
cannot be expressed through the API. Here trusted probe code runs with full Python in a
process confined exactly as a sandbox process confines itself (``enter_host``,
``confine`` and ``set_limits``), inside a throw-away PID namespace so that a failing
layer can at worst hit that namespace. Other tests look at a real sandbox process from
outside, through /proc, while ``run`` runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from textwrap import dedent, indent
from typing import Any

import pytest

from tests.sandbox import test_run
from tests.sandbox.test_run import BUSY, job
from toolvault.sandbox import Plan, SandboxHost, detect, isolation_layers
from toolvault.sandbox._isolation import (
    PRIVATE_WORKDIR,
    WORKDIR_BYTES,
    runtime_paths,
    trust_store,
)

SECRET = "tv-isolation-secret-7c1d"
UNSHARE = shutil.which("unshare")
NAMESPACES = ("net", "pid", "mnt", "ipc", "uts")

# Trusted part, before the layers: note what a layer must hide, then confine this process.
_PROBE = """\
import ctypes, errno, json, os, resource, signal, socket, sys, threading
from toolvault.sandbox._isolation import Plan, confine, enter_host, set_limits
from toolvault.sandbox._models import Limits

plan, workdir, listener_port, secret_file, hidden = sys.argv[1:]
# A root process holding the secret in its environment, like the server.
holder = os.fork()
if holder == 0:
    os.execve("/bin/sleep", ["sleep", "30"], {"TOOLVAULT_TEST_SECRET": "%s"})
outside = {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in %r}
extra_fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(3)]
for fd in extra_fds:
    os.set_inheritable(fd, True)
plan = Plan.from_json(plan)
confine(plan, enter_host(plan, workdir, [hidden]), 0)
set_limits(Limits(timeout_ms=2000, memory_mb=256, max_output_bytes=1024))
result = {}

def attempt(key, action):
    try:
        result[key] = ["ok", action()]
    except BaseException as exc:
        result[key] = [type(exc).__name__, getattr(exc, "errno", None)]

%s
os.write(1, json.dumps(result).encode())
os._exit(0)
"""


@pytest.fixture(scope="module")
def plan() -> Plan:
    return detect().plan


def confined(plan: Plan, probe: str, tmp_path: Path) -> dict[str, Any]:
    """Run ``probe`` in a process confined by ``plan``; return its ``result`` dict."""
    if UNSHARE is None:
        pytest.skip("util-linux unshare is needed to contain the probes")
    # World-searchable, unlike tmp_path: only the layers under test stand in the way.
    base = Path(tempfile.mkdtemp(prefix="toolvault-secrets-"))
    base.chmod(0o755)
    secret_file = base / "secret.txt"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    hidden = base / "data"
    hidden.mkdir()
    (hidden / "toolvault.db").write_text(SECRET)
    hidden.chmod(0o755)
    workdir = tempfile.mkdtemp(prefix="toolvault-test-")
    code = _PROBE % (SECRET, NAMESPACES, indent(dedent(probe), ""))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = str(listener.getsockname()[1])
        try:
            done = subprocess.run(
                [UNSHARE, "--pid", "--fork", "--mount-proc", "--kill-child"]
                + [sys.executable, "-I", "-c", code, plan.to_json(), workdir, port]
                + [str(secret_file), str(hidden)],
                env={},
                capture_output=True,
                timeout=20,
                start_new_session=True,
            )
        finally:
            shutil.rmtree(workdir)
            shutil.rmtree(base)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    assert done.stdout, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def needs(plan: Plan, *, namespaces: bool = False, read_only: bool = False) -> None:
    if namespaces and not plan.namespaces or read_only and not plan.read_only:
        pytest.skip("this host does not allow the layer (toolvault doctor says why)")


def test_cant_read_the_servers_secret_file_its_hidden_data_or_its_environment(
    plan: Plan, tmp_path: Path
) -> None:
    result = confined(
        plan,
        """\
        attempt("secret_file", lambda: open(secret_file).read())
        attempt("hidden", lambda: open(hidden + "/toolvault.db").read())
        attempt("environ", lambda: open(f"/proc/{holder}/environ").read())
        attempt("own_environ", lambda: dict(os.environ))
        """,
        tmp_path,
    )

    # With a private root the host's files are not there at all; without, not readable.
    if plan.private_root:
        assert result["secret_file"] == ["FileNotFoundError", 2]
    else:
        assert result["secret_file"] == ["PermissionError", 13]
    if plan.namespaces:
        assert result["hidden"] == ["FileNotFoundError", 2]
        assert result["environ"] == ["FileNotFoundError", 2]  # not in this PID namespace
    else:
        assert result["environ"][0] in ("PermissionError", "FileNotFoundError")
    # Spawned with none; only what the interpreter sets itself (PEP 538's locale coercion).
    assert result["own_environ"][1] in ({}, {"LC_CTYPE": "C.UTF-8"})
    assert SECRET not in json.dumps(result)


def test_cant_connect_even_to_loopback(plan: Plan, tmp_path: Path) -> None:
    needs(plan, namespaces=True)
    result = confined(
        plan,
        """\
        def connect(host):
            with socket.socket() as sock:
                sock.settimeout(1)
                sock.connect((host, int(listener_port)))
        attempt("loopback", lambda: connect("127.0.0.1"))
        attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
            b"x", ("127.0.0.1", int(listener_port))))
        attempt("interfaces", lambda: sorted(n for _, n in socket.if_nameindex()))
        """,
        tmp_path,
    )

    assert result["loopback"] == ["OSError", 101]  # ENETUNREACH; the listener saw nothing
    assert result["udp"] == ["OSError", 101]
    assert result["interfaces"] == ["ok", ["lo"]]


def test_sees_no_other_process_and_cant_signal_any(plan: Plan, tmp_path: Path) -> None:
    needs(plan, namespaces=True)
    result = confined(
        plan,
        f"""\
        attempt("pids", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        attempt("kill_all", lambda: os.kill(-1, signal.SIGKILL))
        attempt("kill_holder", lambda: os.kill(holder, signal.SIGKILL))
        attempt("kill_server", lambda: os.kill({os.getpid()}, signal.SIGKILL))
        attempt("parent", lambda: os.getppid())
        """,
        tmp_path,
    )

    assert result["pids"] == ["ok", [1]]
    assert result["kill_all"] == ["ProcessLookupError", 3]
    assert result["kill_holder"] == ["ProcessLookupError", 3]
    assert result["kill_server"] == ["ProcessLookupError", 3]
    assert result["parent"] == ["ok", 0]  # the parent is outside, out of reach


def test_runs_unprivileged_with_no_capabilities_and_no_new_privileges(
    plan: Plan, tmp_path: Path
) -> None:
    result = confined(
        plan,
        """\
        lines = open("/proc/self/status").read().splitlines()
        status = dict(line.split(":\\t", 1) for line in lines)
        result["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()]
        result["caps"] = [status["CapEff"], status["CapPrm"], status["NoNewPrivs"]]
        attempt("setuid", lambda: os.setuid(0))
        attempt("dumpable", lambda: ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))
        """,
        tmp_path,
    )

    if plan.uid is not None:
        assert result["ids"] == [plan.uid, plan.uid, plan.uid, []]
    assert result["caps"] == ["0000000000000000", "0000000000000000", "1"]
    assert result["setuid"] == ["PermissionError", 1]
    assert result["dumpable"] == ["ok", 0]


def test_cant_write_outside_the_working_directory(plan: Plan, tmp_path: Path) -> None:
    needs(plan, read_only=True)
    result = confined(
        plan,
        """\
        attempt("tmp", lambda: open("/tmp/toolvault-escape", "w"))
        attempt("shm", lambda: open("/dev/shm/toolvault-escape", "w"))
        attempt("beside_the_secret", lambda: open(os.path.dirname(secret_file) + "/escape", "w"))
        attempt("root", lambda: os.statvfs("/").f_flag & os.ST_RDONLY)
        attempt("workdir", lambda: open("written", "w").write("fine"))
        attempt("hostname", lambda: socket.gethostname())
        """,
        tmp_path,
    )

    # ENOENT in a private root, which has no /tmp; else EROFS, though /tmp is world-writable.
    missing = ["FileNotFoundError", 2] if plan.private_root else ["OSError", 30]
    assert result["tmp"] == missing
    assert result["shm"] == missing
    assert result["beside_the_secret"][0] in ("OSError", "PermissionError", "FileNotFoundError")
    assert result["root"] == ["ok", os.ST_RDONLY]
    assert result["workdir"] == ["ok", 4]
    assert result["hostname"] == ["ok", "sandbox"]
    assert not Path("/tmp/toolvault-escape").exists()


def test_cant_fill_the_disk(plan: Plan, tmp_path: Path) -> None:
    needs(plan, namespaces=True)
    result = confined(
        plan,
        """\
        attempt("big_file", lambda: open("big", "wb").write(b"x" * (8 << 20)))
        written = 0
        def fill():
            global written
            for i in range(1000):
                with open(f"part{i}", "wb") as part:
                    written += part.write(b"x" * (1 << 20))
        attempt("fill", fill)
        result["written"] = written
        """,
        tmp_path,
    )

    assert result["big_file"] == ["OSError", 27]  # EFBIG: the file size limit
    assert result["fill"] == ["OSError", 28]  # ENOSPC: the working directory is full
    assert result["written"] <= WORKDIR_BYTES


def test_cant_fork_start_threads_or_keep_extra_fds_and_dumps_no_core(
    plan: Plan, tmp_path: Path
) -> None:
    result = confined(
        plan,
        """\
        attempt("fork", lambda: os.fork())
        attempt("thread", lambda: threading.Thread(target=print).start())
        def open_fds():
            return [fd for fd in range(64) if not _closed(fd)]
        def _closed(fd):
            try:
                os.fstat(fd)
            except OSError:
                return True
            return False
        attempt("fds", open_fds)
        attempt("core", lambda: resource.getrlimit(resource.RLIMIT_CORE))
        attempt("memory", lambda: len(bytearray(300 << 20)))
        """,
        tmp_path,
    )

    assert result["fork"] == ["BlockingIOError", 11]  # EAGAIN: RLIMIT_NPROC is 0
    assert result["thread"] == ["RuntimeError", None]
    assert result["fds"] == ["ok", [0, 1, 2, 3]]
    assert result["core"] == ["ok", [0, 0]]
    assert result["memory"] == ["MemoryError", None]


def running_sandbox(hidden: list[str], check: Any) -> tuple[Any, int]:
    """Run BUSY in a host hiding ``hidden``; call ``check(pid)`` on the sandbox running it."""

    async def scenario() -> tuple[Any, int]:
        host = SandboxHost(hidden_paths=hidden)
        await host.start()
        try:
            task = asyncio.create_task(host.run(job(BUSY, timeout_ms=3000)))
            pid = await test_run.running_sandbox(lambda: host.pid)
            await asyncio.sleep(0.1)  # past the confinement, into the busy loop
            seen = check(pid)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return seen, pid
        finally:
            await host.close()

    return asyncio.run(scenario())


def test_a_running_sandbox_is_confined_as_doctor_claims(plan: Plan, tmp_path: Path) -> None:
    def look(pid: int) -> dict[str, Any]:
        proc = Path(f"/proc/{pid}")
        status = dict(line.split(":\t", 1) for line in (proc / "status").read_text().splitlines())
        mounts = [line.split() for line in (proc / "mountinfo").read_text().splitlines()]
        return {
            "new": [
                n
                for n in NAMESPACES
                if os.readlink(proc / "ns" / n) != os.readlink(f"/proc/self/ns/{n}")
            ],
            "uid": status["Uid"].split(),
            "caps": status["CapEff"],
            "no_new_privs": status["NoNewPrivs"],
            "environ": (proc / "environ").read_bytes(),
            "writable": [m[4] for m in mounts if "rw" in m[5].split(",")],
            "hidden": [m[8] for m in mounts if m[4] == str(tmp_path)],
            "mount_points": [m[4] for m in mounts],
        }

    seen, pid = running_sandbox([str(tmp_path)], look)
    active = {layer.name for layer in isolation_layers() if layer.active}

    assert seen["environ"] == b""
    assert seen["caps"] == "0000000000000000"
    assert seen["no_new_privs"] == "1"
    if "unprivileged-user" in active and plan.uid is not None:
        assert seen["uid"] == [str(plan.uid)] * 4
    if plan.namespaces:
        assert {"network-namespace", "pid-namespace", "ipc-namespace"} <= active
        assert seen["new"] == list(NAMESPACES)
    if "private-root" in active:
        # The hidden directory is not covered but absent: nothing of the host is mounted
        # but the standard library, /proc, the four devices and the CA bundle.
        assert seen["hidden"] == []
        kept, covered = runtime_paths()
        devices = [f"/dev/{name}" for name in ("null", "zero", "random", "urandom")]
        certificates = [path for _, path in trust_store()]
        expected = {
            "/",
            "/proc",
            "/proc/cmdline",
            PRIVATE_WORKDIR,
            *kept,
            *covered,
            *devices,
            *certificates,
        }
        assert set(seen["mount_points"]) == expected
    elif plan.namespaces:
        assert seen["hidden"] == ["tmpfs"]
    if "read-only-filesystem" in active:
        (workdir,) = seen["writable"]
        if "private-root" in active:
            assert workdir == PRIVATE_WORKDIR
        else:
            assert workdir.startswith(os.path.join(tempfile.gettempdir(), "toolvault-"))
    assert not Path(f"/proc/{pid}").exists()  # cancelled: killed and reaped


def test_every_layer_doctor_reports_is_named_with_a_detail() -> None:
    layers = isolation_layers()

    names = [layer.name for layer in layers]
    assert names[:3] == ["process", "rlimits", "unprivileged-user"]
    expected = {"network-namespace", "pid-namespace", "read-only-filesystem", "private-root"}
    assert expected | {"seccomp", "cgroup-memory"} <= set(names)
    assert all(layer.detail for layer in layers)
    # Not implemented, so never claimed.
    assert [layer.active for layer in layers if layer.name == "cgroup-memory"] == [False]
