"""Fifth red-team pass: an outsider in a warm worker or a spare, language layer fallen.

Every attack runs as full Python (``SandboxHost(language_layer=False)``) in a worker
confined exactly as the server's, and looks for anything of the host, of another call
or of another key: the fds it holds, the parent's /proc and memory (process_vm_readv),
the job memfds of concurrent calls, files left in /sandbox, SysV IPC, POSIX queues,
keyrings, abstract sockets and memory mapped shared with the host as a rendezvous between
two keys at once, signals to other workers, the names of the hidden data dir and the
server's environment, and a report forging ``warm``. Each test asserts that the attack
had no effect.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.test_host import in_a_pid_namespace
from tests.sandbox.test_warm import plain
from tests.security.test_warm_redteam3 import OWN_REPORT
from toolvault.sandbox import RunResult, RunStatus, SandboxHost


@pytest.fixture
def spare_host() -> Iterator[SandboxHost]:
    sandbox_host = SandboxHost(preload=(), language_layer=False, spares=2)
    yield sandbox_host
    asyncio.run(sandbox_host.close())


def value(result: RunResult) -> Any:
    assert result.status is RunStatus.OK, (result.error_type, result.error_message)
    return json.loads(result.result_json)


# Every fd the process holds, what it points to, and every secret found in any of them
# (a memfd or file of another call would hold that call's args).
SCAN_FDS = """\
import os
def main(secret="", wait=0.0, **_):
    import time
    time.sleep(wait)
    held, found = {}, []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            held[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the fd of listdir itself, closed by now
        if held[fd].startswith(("/memfd:", "/")):
            try:
                data = os.pread(fd, 1 << 20, 0)
            except OSError:
                data = b""
            found.append(data.decode("latin1"))
    return {"held": held, "found": found}
"""


def kinds(held: dict[str, str]) -> dict[int, str]:
    return {int(fd): target.split(":")[0] for fd, target in held.items()}


def test_a_worker_and_a_spare_hold_only_their_channel_and_their_calls_pipes(
    spare_host: SandboxHost,
) -> None:
    async def steps() -> list[dict[str, Any]]:
        await spare_host.start()
        warm = await spare_host.run(plain(SCAN_FDS), worker_key="a@1")
        spare = await spare_host.run(plain(SCAN_FDS))
        return [value(warm), value(spare)]

    warm, spare = asyncio.run(steps())
    # 0 the channel to the runner (a warm worker's only), 1-3 stdout, stderr, report.
    assert kinds(warm["held"]) == {0: "socket", 1: "pipe", 2: "pipe", 3: "pipe"}
    assert kinds(spare["held"]) == {1: "pipe", 2: "pipe", 3: "pipe"}
    assert warm["found"] == spare["found"] == []


def test_no_fd_of_a_concurrent_call_reaches_another_key_or_a_spare(
    spare_host: SandboxHost,
) -> None:
    secret = secrets.token_hex(16)

    async def steps() -> list[Any]:
        await spare_host.start()
        victims = [
            spare_host.run(plain(SCAN_FDS, {"secret": secret, "wait": 0.5}), worker_key="v@1"),
            spare_host.run(plain(SCAN_FDS, {"secret": secret, "wait": 0.5})),
        ]
        attackers = [
            spare_host.run(plain(SCAN_FDS, {"wait": 0.1 * n}), worker_key=f"x{n}@1")
            for n in range(3)
        ] + [spare_host.run(plain(SCAN_FDS, {"wait": 0.1 * n})) for n in range(3)]
        return [value(result) for result in await asyncio.gather(*victims, *attackers)]

    seen = asyncio.run(steps())
    warm = {0: "socket", 1: "pipe", 2: "pipe", 3: "pipe"}
    spare = {1: "pipe", 2: "pipe", 3: "pipe"}
    # No other worker's channel, no other call's pipes or memfd, at the same fd or any.
    assert [kinds(found["held"]) for found in seen] == [warm, spare] + [warm] * 3 + [spare] * 3
    assert not any(secret in data for found in seen for data in found["found"])


PARENT = """\
import ctypes, os
def main(**_):
    libc = ctypes.CDLL(None, use_errno=True)

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    buf = ctypes.create_string_buffer(64)
    local = Iovec(ctypes.addressof(buf), 64)
    read = {}
    for pid in [os.getppid(), 1, 2, 3, 4, 5, 100, 1000]:
        remote = Iovec(0x400000, 64)
        got = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        wrote = libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        read[pid] = [got, wrote]
    opened = []
    for pid in [os.getppid(), 0, 2]:
        for name in ["environ", "maps", "mem", "cmdline", "fd"]:
            try:
                os.listdir(f"/proc/{pid}/{name}") if name == "fd" else open(
                    f"/proc/{pid}/{name}", "rb").read(1)
                opened.append(f"{pid}/{name}")
            except OSError:
                pass
    pids = sorted(int(n) for n in os.listdir("/proc") if n.isdigit())
    peer = None
    if os.path.exists("/proc/self/fd/0"):
        import socket, struct
        channel = socket.socket(fileno=os.dup(0))
        creds = channel.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        peer = struct.unpack("3i", creds)[0]
        os.close(channel.detach())
    return {"peer": peer, "pid": os.getpid(), "ppid": os.getppid(), "pids": pids, "read": read,
            "opened": opened}
"""


def test_neither_the_host_nor_another_process_is_reachable_by_proc_or_process_vm(
    spare_host: SandboxHost,
) -> None:
    async def steps() -> list[Any]:
        await spare_host.start()
        busy = "import time\ndef main(**_):\n    time.sleep(0.6)\n"
        return [
            value(result)
            for result in await asyncio.gather(
                spare_host.run(plain(PARENT), worker_key="a@1"),
                spare_host.run(plain(PARENT)),
                spare_host.run(plain(busy), worker_key="b@1"),
            )
        ][:2]

    for found in asyncio.run(steps()):
        # Alone in a PID namespace: no parent, no host, no other worker to name.
        assert (found["pid"], found["ppid"], found["pids"]) == (1, 0, [1])
        assert all(got == [-1, -1] for pid, got in found["read"].items() if pid != "1")
        assert found["opened"] == []
        assert found["peer"] in (None, 0)  # the runner's pid is not named either


LEAVE = """\
import os
def main(secret="", **_):
    with open("/sandbox/left", "w") as out:
        out.write(secret)
    os.mkfifo("/sandbox/fifo")
    return os.getuid()
"""

LOOK = """\
import os
def main(**_):
    found = []
    for root in ["/sandbox", "/tmp", "/dev/shm", "/var/tmp", "/run"]:
        for place, _dirs, files in os.walk(root):
            found += [os.path.join(place, name) for name in files]
    return [os.getuid(), found]
"""


def test_nothing_written_in_sandbox_is_left_for_the_next_holder_of_its_uid() -> None:
    secret = secrets.token_hex(16)
    # Idle workers retire fast, so a reader of another key takes the writer's slot (uid).
    host = SandboxHost(preload=(), language_layer=False, worker_idle_s=0.3)

    async def steps() -> tuple[list[int], list[Any]]:
        await host.start()
        wrote = [value(await host.run(plain(LEAVE, {"secret": secret}), worker_key="w@1"))]
        await asyncio.sleep(1.0)
        wrote.append(value(await host.run(plain(LEAVE, {"secret": secret}))))
        await asyncio.sleep(0.3)
        looked = [value(await host.run(plain(LOOK), worker_key="r@1"))]
        looked += [value(await host.run(plain(LOOK))) for _ in range(3)]
        await host.close()
        return wrote, looked

    wrote, looked = asyncio.run(steps())
    assert set(wrote) <= {uid for uid, _found in looked}, (wrote, looked)  # uids reused
    assert all(found == [] for _uid, found in looked), looked


RENDEZVOUS = """\
import ctypes, os, socket, time
def main(role="", secret="", **_):
    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x7ed5
    got = []
    if role == "a":
        shm = libc.shmget(key, 4096, 0o1666)
        msg = libc.msgget(key, 0o1666)
        listener = None
        try:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind("\\0toolvault-red5")
            listener.listen(1)
        except OSError:
            pass
        libc.syscall(248, b"user", b"red5", secret.encode(), len(secret), -3)  # add_key
        libc.syscall(240, b"/red5", 0o100 | 2, 0o666, None)  # mq_open O_CREAT
        time.sleep(1.0)
        return got
    time.sleep(0.4)
    if libc.shmget(key, 0, 0o666) >= 0 or libc.msgget(key, 0o666) >= 0:
        got.append("sysv")
    if libc.syscall(240, b"/red5", 2, 0, None) >= 0:
        got.append("mqueue")
    if libc.syscall(250, 11, 0, 0, 0) >= 0 or libc.syscall(
        249, b"user", b"red5", None, 0) >= 0:  # keyctl, request_key
        got.append("keyring")
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect("\\0toolvault-red5")
        got.append("abstract")
    except OSError:
        pass
    return got
"""


def test_two_keys_running_at_once_find_no_rendezvous(spare_host: SandboxHost) -> None:
    secret = secrets.token_hex(8)

    async def steps() -> list[Any]:
        await spare_host.start()
        return [
            value(result)
            for result in await asyncio.gather(
                spare_host.run(
                    plain(RENDEZVOUS, {"role": "a", "secret": secret}), worker_key="a@1"
                ),
                spare_host.run(plain(RENDEZVOUS, {"role": "b"}), worker_key="b@1"),
                spare_host.run(plain(RENDEZVOUS, {"role": "b"})),
            )
        ]

    assert asyncio.run(steps()) == [[], [], []]


SIGNALS = r"""
import asyncio, json, signal, sys
from toolvault.sandbox import Job, Limits, RunStatus, SandboxHost

KILLER = '''
import ctypes, os, signal
def main(**_):
    libc = ctypes.CDLL(None, use_errno=True)
    hit = []
    for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):
        if libc.kill(-1, sig) == 0:
            hit.append(("all", int(sig)))
        for pid in range(2, 400):
            if libc.kill(pid, sig) == 0 or libc.syscall(434, pid, 0) >= 0:
                hit.append((pid, int(sig)))
    return hit
'''
VICTIM = "import time\ndef main(**_):\n    time.sleep(1.0)\n    return 'alive'\n"

def job(source):
    return Job(source, "main", "{}", (), Limits(timeout_ms=8000, memory_mb=256,
               max_output_bytes=1 << 16), filename="k@1")

async def run():
    host = SandboxHost(preload=(), language_layer=False, spares=1)
    await host.start()
    warm = await host.run(job(VICTIM), worker_key="victim@1")
    results = await asyncio.gather(
        host.run(job(VICTIM), worker_key="victim@1"), host.run(job(VICTIM)),
        asyncio.sleep(0.2),
    )
    killers = await asyncio.gather(
        host.run(job(KILLER), worker_key="killer@1"), host.run(job(KILLER)),
        host.run(job(VICTIM), worker_key="victim@1"), host.run(job(VICTIM)),
    )
    after = await host.run(job(VICTIM), worker_key="victim@1")
    await host.close()
    out = [r.result_json for r in [warm, *results[:2], *killers, after]]
    print(json.dumps({"results": out}))

asyncio.run(run())
"""


def test_signals_from_a_worker_reach_no_other_worker_nor_the_host() -> None:
    found = in_a_pid_namespace(SIGNALS)["results"]
    alive = json.dumps("alive")
    assert found[0:3] == [alive] * 3
    assert json.loads(found[3]) == json.loads(found[4]) == []
    assert found[5:] == [alive] * 3


FORGE = (
    "import json, os\n"
    + OWN_REPORT
    + """\
def main(**_):
    report = json.loads(own_report("forged"))
    report.update(warm=WARM, isolation="ISOLATION_FORGED", duration_ms=0, cpu_time_ms=0)
    os.write(3, json.dumps(report).encode())
    null = os.open("/dev/null", os.O_WRONLY)
    os.dup2(null, 3)  # the runtime's report goes nowhere
    os.close(null)
"""
)


def test_warm_comes_from_the_runner_never_from_the_report(spare_host: SandboxHost) -> None:
    async def steps() -> list[RunResult]:
        await spare_host.start()
        return [
            await spare_host.run(plain(FORGE.replace("WARM", "False")), worker_key="a@1"),
            await spare_host.run(plain(FORGE.replace("WARM", "True"))),
        ]

    in_warm, in_spare = asyncio.run(steps())
    assert in_warm.warm is True
    assert in_spare.warm is False
    for result in (in_warm, in_spare):
        assert value(result) == "forged"  # the forged report was taken
        assert result.duration_ms > 0


# A mapping shared with the host (hence with every sandbox it forks) would be a
# rendezvous between keys: none may be writable, or become so.
SHARED_MAPS = """\
import ctypes
def main(**_):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    shared, made_writable = [], []
    for line in open("/proc/self/maps").read().splitlines():
        span, perms = line.split()[:2]
        if perms[3] != "s" and "memfd:" not in line and "(deleted)" not in line:
            continue
        shared.append(line)
        start, end = (int(part, 16) for part in span.split("-"))
        if libc.mprotect(start, end - start, 3) == 0:  # PROT_READ | PROT_WRITE
            made_writable.append(line)
    return [shared, made_writable]
"""


def test_no_memory_is_shared_writably_with_the_host_or_another_sandbox(
    spare_host: SandboxHost,
) -> None:
    async def steps() -> list[Any]:
        await spare_host.start()
        return [
            value(await spare_host.run(plain(SHARED_MAPS), worker_key="a@1")),
            value(await spare_host.run(plain(SHARED_MAPS))),
        ]

    for shared, made_writable in asyncio.run(steps()):
        assert all(line.split()[1] == "r--s" for line in shared), shared
        assert made_writable == []


NAMES = """\
import os, sys
def main(**_):
    seen = [open(f"/proc/self/{name}").read() for name in ("mountinfo", "mounts")]
    seen += [repr(sys.path), repr(sys.modules), repr(dict(os.environ))]
    for name in ("/proc/self/environ", "/proc/1/environ"):
        try:
            seen.append(open(name).read())
        except OSError:
            pass
    return [seen, sorted(os.environ)]
"""


def test_a_worker_learns_neither_the_hidden_data_dir_nor_the_servers_environment(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / f"data-{secrets.token_hex(6)}"
    data_dir.mkdir()
    host = SandboxHost(preload=(), language_layer=False, hidden_paths=[str(data_dir)], spares=1)

    async def steps() -> list[Any]:
        await host.start()
        try:
            return [
                value(await host.run(plain(NAMES), worker_key="a@1")),
                value(await host.run(plain(NAMES))),
            ]
        finally:
            await host.close()

    for seen, environment in asyncio.run(steps()):
        assert not any(data_dir.name in text for text in seen)
        assert set(environment) <= {"LC_CTYPE"}  # PEP 538 coercion, not the server's
