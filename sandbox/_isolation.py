"""The process and kernel layers: what a sandbox process does to itself before user code.

isolate() confines the calling process (single-threaded, still privileged, about to run
untrusted code): new network, PID, mount, IPC, UTS and cgroup namespaces (inside a new
user namespace when the server is not root), a read-only filesystem with a private tmpfs
as working directory, a fresh /proc, an unprivileged uid without capabilities, and
no_new_privs. set_limits() then sets the rlimits and closes inherited fds. Both work the
same in a process spawned per call and in a child forked from a warm sandbox host.

The first process in a new PID namespace is its init: signals it has no handler for are
ignored when sent from inside, and its death kills everything in the namespace. So the
calling process forks: the child, PID 1 of the new namespace, runs the user's code; the
parent stays outside as a relay that turns SIGTERM into a SIGKILL for the child, reaps
it and exits the way it did. Whoever kills a sandbox signals the relay, never the
child, so that nothing is ever orphaned.

detect() finds, once per process, the strongest plan the host allows: a probe process
applies each candidate plan and checks from inside that every layer it claims holds.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import functools
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ._models import Limits, cpu_limit_seconds

log = logging.getLogger("toolvault.sandbox")

UNPRIVILEGED_UID = 65534  # nobody / nogroup
WORKDIR_BYTES = 16 * 1024 * 1024
_WORKDIR_INODES = 1024
_MIB = 1024 * 1024
# Above the four inherited fds plus what asyncio.run opens (epoll and a socket pair).
_MAX_OPEN_FILES = 32
_FILE_SIZE_BYTES = _MIB

_CLONE_NEWNS = 0x00020000
_CLONE_NEWCGROUP = 0x02000000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_NAMESPACES = (
    _CLONE_NEWNET | _CLONE_NEWPID | _CLONE_NEWNS | _CLONE_NEWIPC | _CLONE_NEWUTS | _CLONE_NEWCGROUP
)
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REC, _MS_PRIVATE = 0x4000, 0x40000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 1, 4, 38
# mount_setattr(2), Linux 5.12+; new system calls have the same number on every arch.
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = -100, 0x8000, 1
_CAPABILITY_VERSION_3 = 0x20080522
_HOSTNAME = b"sandbox"

_libc = ctypes.CDLL(None, use_errno=True)


class IsolationError(OSError):
    """A step of a plan failed; the process must not run user code."""


@dataclass(frozen=True)
class Plan:
    """Which layers a sandbox process applies to itself.

    Attributes:
        namespaces: Enter new network, PID, mount, IPC, UTS and cgroup namespaces.
        user_namespace: Enter them inside a new user namespace that maps the server's
            uid to root (for a server that is not root), then drop every capability.
        read_only: Make every mount read-only but the private working directory.
        uid: The unprivileged uid and gid to switch to (for a server that is root).
    """

    namespaces: bool = False
    user_namespace: bool = False
    read_only: bool = False
    uid: int | None = None

    def to_json(self) -> str:
        """The plan as the sandbox process gets it on its command line."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan from its command-line form."""
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Layer:
    """One layer of the sandbox as found on this host.

    Attributes:
        name: A short name, e.g. ``"network-namespace"``.
        active: Whether sandboxes get it; checked from inside a probe sandbox.
        detail: What it does here, or why it is missing.
    """

    name: str
    active: bool
    detail: str


@dataclass(frozen=True)
class Isolation:
    """What detect() found: the plan every sandbox process applies, and the layers."""

    plan: Plan
    layers: tuple[Layer, ...]


def isolate(plan: Plan, workdir: str, hidden: Sequence[str] = ()) -> None:
    """Apply ``plan`` to this process, leaving it in ``workdir``; trusted bootstrap only.

    With namespaces this process forks, and only the child returns (see the module's
    docstring). Modules not imported before may be unreadable afterwards.

    Args:
        plan: The layers to apply, from detect().
        workdir: An empty directory: with namespaces it becomes a private tmpfs.
        hidden: Directories to cover with an empty read-only tmpfs (the server's data).

    Raises:
        IsolationError: When a step of the plan fails.
    """
    # Before anything can crash: a relay that mirrors a crash must not dump core either.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if plan.namespaces:
        _enter_namespaces(plan.user_namespace)
    # After writing the uid map (which needs it): no core dumps, no ptrace by the same uid.
    _prctl(_PR_SET_DUMPABLE, 0)
    if plan.namespaces:
        _fork_into_the_pid_namespace()
        _set_up_filesystem(plan, workdir, hidden)
        _call("sethostname", _libc.sethostname(_HOSTNAME, len(_HOSTNAME)))
    elif plan.uid is not None:
        os.chown(workdir, plan.uid, plan.uid)
    os.chdir(workdir)
    if plan.uid is not None:
        os.setgroups([])
        os.setgid(plan.uid)
        os.setuid(plan.uid)  # clears every capability as well
    elif plan.user_namespace:
        _drop_capabilities()
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


def set_limits(limits: Limits) -> None:
    """Close every fd above the four pipes and set the rlimits; the last step before user code."""
    os.closerange(4, os.sysconf("SC_OPEN_MAX"))
    cpu_seconds = cpu_limit_seconds(limits)
    for limit, soft, hard in (
        (resource.RLIMIT_AS, limits.memory_mb * _MIB, limits.memory_mb * _MIB),
        # The soft limit's SIGXCPU kills; the hard one's SIGKILL is a backstop (and the
        # only one that stops the init of a PID namespace, which ignores SIGXCPU).
        (resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1),
        (resource.RLIMIT_FSIZE, _FILE_SIZE_BYTES, _FILE_SIZE_BYTES),
        (resource.RLIMIT_NOFILE, _MAX_OPEN_FILES, _MAX_OPEN_FILES),
        (resource.RLIMIT_CORE, 0, 0),
        # No new processes or threads: counted per real uid, and not enforced for root.
        (resource.RLIMIT_NPROC, 0, 0),
    ):
        resource.setrlimit(limit, (soft, hard))


@functools.cache
def detect() -> Isolation:
    """Probe once which layers this host allows, log what is missing, and remember it."""
    isolation = _run_probe()
    for layer in isolation.layers:
        if not layer.active:
            log.warning("sandbox layer %s is not active: %s", layer.name, layer.detail)
    return isolation


def _run_probe() -> Isolation:
    done = subprocess.run(
        [sys.executable, "-I", "-m", "toolvault.sandbox._isolation"],
        env={},
        capture_output=True,
        timeout=60,
        check=False,
        start_new_session=True,
    )
    try:
        found = json.loads(done.stdout)
    except ValueError:
        # Without a probe nothing can be claimed: the process layer alone, as root or not.
        why = done.stderr.decode(errors="replace").strip()[-500:] or f"exit {done.returncode}"
        uid = UNPRIVILEGED_UID if os.geteuid() == 0 else None
        return Isolation(Plan(uid=uid), (Layer("kernel", False, f"the probe failed: {why}"),))
    layers = tuple(Layer(**layer) for layer in found["layers"])
    return Isolation(Plan(**found["plan"]), layers)


def _enter_namespaces(user: bool) -> None:
    uid, gid = os.getuid(), os.getgid()
    _call("unshare", _libc.unshare(_NAMESPACES | (_CLONE_NEWUSER if user else 0)))
    if user:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"0 {uid} 1"),
            ("gid_map", f"0 {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as file:
                file.write(text)


def _fork_into_the_pid_namespace() -> None:
    """Fork; the child, PID 1 of the new PID namespace, returns; this process relays."""
    # Blocked until the child's pid is known, so that a SIGTERM always reaches the child.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    child = os.fork()
    if child:
        _relay(child)
    # Own session: kill(0, ...) from user code must not reach the relay, in its group.
    os.setsid()
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _relay(child: int) -> NoReturn:
    """Kill the child on SIGTERM, wait for it, and end the way it ended."""
    signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGKILL))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    # Only the child writes to the pipes: when it is gone, the runner sees them close.
    os.close(0)
    os.close(1)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)  # a signal whose default is not to terminate
    os._exit(os.WEXITSTATUS(status))


def _set_up_filesystem(plan: Plan, workdir: str, hidden: Sequence[str]) -> None:
    # First: no mount made here may propagate back to the host's namespace.
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    if plan.read_only:
        attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY, 0, 0, 0)
        _call(
            "mount_setattr",
            _libc.syscall(
                _SYS_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE, attr, ctypes.sizeof(attr)
            ),
        )
    sealed = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    # The PID namespace's own /proc: no other process, and no host secrets through it.
    _mount("proc", "/proc", "proc", sealed | _MS_RDONLY)
    for path in hidden:
        if os.path.isdir(path) and os.path.commonpath([path, workdir]) != path:
            _mount("tmpfs", path, "tmpfs", sealed | _MS_RDONLY, "size=4k,nr_inodes=1,mode=0555")
    owner = 0 if plan.uid is None else plan.uid
    options = f"size={WORKDIR_BYTES},nr_inodes={_WORKDIR_INODES},mode=0700,uid={owner},gid={owner}"
    _mount("tmpfs", workdir, "tmpfs", sealed, options)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    encoded = [None if s is None else s.encode() for s in (source, target, fstype)]
    _call(f"mount {target}", _libc.mount(*encoded, flags, data.encode() or None))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]


def _drop_capabilities() -> None:
    """Drop every capability: the root of a user namespace keeps none."""
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    _call("capset", _libc.capset(ctypes.byref(header), (_CapData * 2)()))


def _prctl(option: int, value: int) -> None:
    _call("prctl", _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0))


def _call(what: str, result: int) -> None:
    if result == -1:
        code = ctypes.get_errno()
        raise IsolationError(code, f"{what}: {os.strerror(code)}")


# The probe: run as ``python -I -m toolvault.sandbox._isolation``, it prints the best plan
# this host allows and the layers as checked from inside a sandbox confined by it.

_PROBE_LIMITS = Limits(timeout_ms=5_000, memory_mb=256, max_output_bytes=1024)


def _candidates() -> list[Plan]:
    if os.geteuid() == 0:
        # As real root: no user namespace (setuid(65534) fails in one that maps only
        # root), and an unprivileged uid instead.
        strong = Plan(namespaces=True, read_only=True, uid=UNPRIVILEGED_UID)
    else:
        strong = Plan(namespaces=True, user_namespace=True, read_only=True)
    weaker = dataclasses.replace(strong, read_only=False)
    fallback = Plan(uid=strong.uid)
    return [strong, weaker, fallback]


def _probe() -> dict[str, Any]:
    outside = _namespace_ids()
    failures: list[str] = []
    for plan in _candidates():
        facts = _observe_in_a_sandbox(plan)
        if "error" not in facts:
            return {
                "plan": dataclasses.asdict(plan),
                "layers": _layers(plan, facts, outside, failures),
            }
        failures.append(facts["error"])
    raise SystemExit(f"even the process layer failed: {failures}")


def _observe_in_a_sandbox(plan: Plan) -> dict[str, Any]:
    """Confine a forked child by ``plan`` and say what it observes from inside."""
    workdir = tempfile.mkdtemp(prefix="toolvault-probe-")
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.dup2(write_end, 1)  # the fds a sandbox keeps are 0 to 3
            try:
                isolate(plan, workdir)
                set_limits(_PROBE_LIMITS)
                facts = _observe(workdir)
            except Exception as exc:
                facts = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(1, json.dumps(facts).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return json.loads(data) if data else {"error": "the probe sandbox died"}


def _observe(workdir: str) -> dict[str, Any]:
    """What the layers look like from inside; must not import anything."""
    status = dict(line.split(":", 1) for line in _read("/proc/self/status").splitlines())
    with socket.socket() as sock:
        network = sock.connect_ex(("127.0.0.1", 9))
    try:
        pid = os.fork()
    except OSError as exc:
        forked = exc.errno
    else:
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        forked = 0
    try:
        with open(os.path.join(workdir, "probe"), "w") as file:
            file.write("x")
        writable = True
    except OSError:
        writable = False
    mounts = [line.split() for line in _read("/proc/self/mountinfo").splitlines()]
    return {
        "uid": os.getuid(),
        "cap_eff": int(status["CapEff"], 16),
        "no_new_privs": status["NoNewPrivs"].strip() == "1",
        "uid_map": _read("/proc/self/uid_map").split(),
        "workdir": workdir,
        "namespaces": _namespace_ids(),
        "network_errno": network,
        "pids": sorted(int(name) for name in os.listdir("/proc") if name.isdigit()),
        "fork_errno": forked,
        "workdir_writable": writable,
        "writable_mounts": [m[4] for m in mounts if "rw" in m[5].split(",")],
    }


def _namespace_ids() -> dict[str, int]:
    names = ("net", "pid", "mnt", "ipc", "uts", "cgroup", "user")
    return {name: os.stat(f"/proc/self/ns/{name}").st_ino for name in names}


def _layers(
    plan: Plan, facts: dict[str, Any], outside: dict[str, int], failures: list[str]
) -> list[dict[str, Any]]:
    new = {name for name, ino in facts["namespaces"].items() if ino != outside[name]}
    missing = f"not available: {failures[0]}" if failures else ""
    layers = [
        ("process", True, "own session, empty environment, inherited fds closed"),
        (
            "rlimits",
            facts["fork_errno"] == errno.EAGAIN,
            "address space, CPU time, file size, open files; no core dumps; "
            + ("no new processes" if facts["fork_errno"] else "processes NOT limited"),
        ),
        _user_layer(plan, facts),
        (
            "network-namespace",
            "net" in new and facts["network_errno"] == errno.ENETUNREACH,
            "no network at all, not even loopback" if "net" in new else missing,
        ),
        (
            "pid-namespace",
            "pid" in new and facts["pids"] == [1],
            "sees no other process; its own /proc" if "pid" in new else missing,
        ),
        (
            "ipc-namespace",
            "ipc" in new,
            "own System V IPC and POSIX queues" if "ipc" in new else missing,
        ),
        ("uts-namespace", "uts" in new, "own hostname" if "uts" in new else missing),
    ]
    if plan.user_namespace:
        layers.append(("user-namespace", "user" in new, "maps only the server's uid, to root"))
    # From inside, the only writable mount must be the working directory.
    read_only = plan.read_only and facts["writable_mounts"] == [facts["workdir"]]
    layers.append(
        (
            "read-only-filesystem",
            read_only,
            f"every mount read-only but the working directory, a private "
            f"{WORKDIR_BYTES // _MIB} MiB tmpfs; the server's data directory hidden"
            if read_only
            else (failures[-1] if failures else "needs a mount namespace"),
        )
    )
    layers += [
        ("seccomp", False, "not implemented: no system-call filter is installed"),
        ("cgroup-memory", False, _cgroup_detail()),
    ]
    return [{"name": n, "active": a, "detail": d} for n, a, d in layers]


def _user_layer(plan: Plan, facts: dict[str, Any]) -> tuple[str, bool, str]:
    privileged = facts["cap_eff"] != 0 or not facts["no_new_privs"]
    if plan.uid is not None:
        active = facts["uid"] == plan.uid and not privileged
        return (
            "unprivileged-user",
            active,
            f"uid {plan.uid}, no groups, no capabilities, no_new_privs",
        )
    if plan.user_namespace:
        host_uid = facts["uid_map"][1] if len(facts["uid_map"]) == 3 else "?"
        detail = f"root of its user namespace = the server's uid {host_uid}; no capabilities"
        return "unprivileged-user", not privileged, detail
    return "unprivileged-user", False, "runs as the server's own uid: reads what the server can"


def _cgroup_detail() -> str:
    for path in ("/sys/fs/cgroup/cgroup.controllers", "/sys/fs/cgroup/unified/cgroup.controllers"):
        try:
            controllers = _read(path).split()
        except OSError:
            continue
        if "memory" in controllers:
            return "not implemented (a cgroup v2 memory controller exists); RLIMIT_AS bounds memory"
    return "not available: no cgroup v2 memory controller; RLIMIT_AS bounds memory"


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


if __name__ == "__main__":
    print(json.dumps(_probe()))
