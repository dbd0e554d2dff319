"""The process and kernel layers: what a sandbox host and each sandbox process do to themselves.

A warm sandbox host (``_host``) confines itself once with enter_host(): new network, PID,
mount, IPC, UTS and cgroup namespaces (inside a new user namespace when the server is
not root), a private root (pivot_root into a read-only tmpfs holding the standard
library, /proc, four devices, the CA bundle and the working directory; runtime_paths()
and trust_store() say what of the host it keeps) or, where that fails, a read-only view
of every mount with the server's data hidden; its own /proc and hostname. Per call it
forks with fork_sandbox(): the process for the call is PID 1 of a fresh PID namespace of
its own, in its own session, and dies with the host. That process then calls confine():
its own mount namespace with a private tmpfs as working directory and a /proc that shows
only itself, its own IPC namespace, an unprivileged uid of its own (one per concurrent
call) without capabilities, and no_new_privs; set_limits() then sets the rlimits and
closes inherited fds, and seal() installs the system-call filter (``_seccomp``) as the
very last step before user code.

The first process in a new PID namespace is its init: signals it has no handler for are
ignored when sent from inside, and its death kills everything in the namespace. So
enter_host() forks: the child, PID 1 of the new namespace, returns; the parent stays
outside as a relay that turns SIGTERM into a SIGKILL for the child, reaps it and exits
the way it did, so that nothing is ever orphaned.

observe() is what a probe sandbox reports from inside, and layers() turns it into the
layers that are in effect; candidates() lists the plans to try, strongest first.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import functools
import json
import os
import resource
import signal
import socket
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from . import _seccomp
from ._models import MAX_FILES_BYTES, Limits, cpu_limit_seconds

# The first of the uids sandboxes run as when the server is root, one per concurrent
# call (slot), so that no two running calls share a uid: above the ranges that useradd
# and container runtimes hand out as subordinate ids (100000 up, in blocks of 65536)
# and below the 2**31 that some tools mishandle.
SANDBOX_UID_BASE = 1_000_000_000
# Room for a call's files in and out, and 8 MiB of its own.
WORKDIR_BYTES = 2 * MAX_FILES_BYTES + 8 * 1024 * 1024
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
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 1, 4, 38
# mount_setattr(2), Linux 5.12+; new system calls have the same number on every arch.
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID = -100, 0x8000, 1, 2
# pivot_root(2) predates the common numbering, and libc has no wrapper for it.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
# The sandboxes' working directory inside a private root.
PRIVATE_WORKDIR = "/sandbox"
# The devices a private root holds: enough for the runtime, none that reach anything.
_DEVICES = ("null", "zero", "random", "urandom")
_PRIVATE_ROOT_BYTES = 1024 * 1024
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
        private_root: Replace the root with one made for the sandboxes (pivot_root):
            the standard library read-only, the working directory, a /proc of their
            own and four devices; nothing else of the host's filesystem.
        syscall_filter: Install the seccomp filter (``_seccomp``) in each sandbox process
            right before user code.
        uid: The first unprivileged uid (and gid) to switch to, for a server that is
            root: the sandbox in slot N runs as ``uid + N``.
    """

    namespaces: bool = False
    user_namespace: bool = False
    read_only: bool = False
    private_root: bool = False
    syscall_filter: bool = False
    uid: int | None = None

    def to_json(self) -> str:
        """The plan as the sandbox process (or host) gets it."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan from its JSON form."""
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Layer:
    """One layer of the sandbox as found on this host.

    Attributes:
        name: A short name, e.g. ``"network-namespace"``.
        active: Whether sandboxes get it; checked from inside a probe sandbox forked
            by a sandbox host.
        detail: What it does here, or why it is missing.
    """

    name: str
    active: bool
    detail: str


@dataclass(frozen=True)
class Isolation:
    """What a probe found: the plan every sandbox applies, and the layers in effect."""

    plan: Plan
    layers: tuple[Layer, ...]


def enter_host(plan: Plan, workdir: str, hidden: Sequence[str] = ()) -> str:
    """Apply the host's half of ``plan`` to this process, once; trusted bootstrap only.

    With namespaces this process forks, and only the child, PID 1 of the new PID
    namespace, returns. Modules not imported before may be unreadable afterwards.

    Args:
        plan: The layers to apply.
        workdir: An empty directory, the sandboxes' working directory: never hidden.
            With a private root it becomes the mount point of that root.
        hidden: Directories to cover with an empty read-only tmpfs (the server's data),
            for a plan without a private root, which holds none of them anyway.

    Returns:
        The sandboxes' working directory from now on: ``workdir``, or
        PRIVATE_WORKDIR inside a private root.

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
        workdir = _set_up_filesystem(plan, workdir, hidden)
        _call("sethostname", _libc.sethostname(_HOSTNAME, len(_HOSTNAME)))
    return workdir


def fork_sandbox(plan: Plan) -> int:
    """Fork the process for one call (with _fork); the host keeps forking afterwards.

    With namespaces the child is PID 1 of a PID namespace of its own, so it sees and
    can signal no other call, and its death ends everything it started. The child leads
    its own session and gets SIGKILL when this process dies. The child must reseed
    ``random`` before anything else (see _fork).

    Raises:
        IsolationError: When the PID namespace cannot be made.
    """
    if not plan.namespaces:
        pid = _fork()
    else:
        _call("unshare", _libc.unshare(_CLONE_NEWPID))
        pid = -1
        try:
            pid = _fork()
        finally:
            if pid != 0:
                # Back to this process's own namespace for its next children: unshare
                # refuses a new one while the one for children is not the active one.
                _call("setns", _libc.setns(_own_pid_namespace(), _CLONE_NEWPID))
    if pid == 0:
        _lead_a_session_and_die_with_the_parent()
    return pid


def _fork() -> int:
    """fork(2) without os.fork's after-fork work in the child, for a single-threaded host.

    os.fork runs the interpreter's and the modules' after-fork hooks in the child
    (threading's rebuilds its thread table): Python code that touches, and so copies, a
    few hundred pages shared with the host, half of a sandbox's start-up. They exist to
    repair state that other threads held at the fork; the host has no other thread. The
    one hook whose work the child needs is random's: the caller must reseed it in the
    child (where a failure can end the process instead of unwinding into its own code),
    or every call would draw the same numbers.
    """
    pid: int = _libc.fork()
    if pid == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"fork: {os.strerror(code)}")
    return pid


def confine(plan: Plan, workdir: str, slot: int) -> None:
    """Apply a sandbox's own half of ``plan`` to this process, forked for one call.

    Args:
        plan: The layers the host applied.
        workdir: The working directory: with namespaces a private tmpfs is mounted on
            it, otherwise it must be empty and this call's alone.
        slot: Which of the calls running at once this is; picks the uid.

    Raises:
        IsolationError: When a step of the plan fails.
    """
    uid = None if plan.uid is None else plan.uid + slot
    if plan.namespaces:
        # Mounts of its own (the tmpfs and /proc of this call) and System V IPC objects of
        # its own, all gone when it ends.
        _call("unshare", _libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC))
        sealed = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        owner = 0 if uid is None else uid
        options = (
            f"size={WORKDIR_BYTES},nr_inodes={_WORKDIR_INODES},mode=0700,uid={owner},gid={owner}"
        )
        _mount("tmpfs", workdir, "tmpfs", sealed, options)
        # This PID namespace's /proc: no other process, and no host secrets through it.
        _mount("proc", "/proc", "proc", sealed | _MS_RDONLY)
        # World-readable, and it names the host's boot and control-plane settings.
        _mount("/dev/null", "/proc/cmdline", None, _MS_BIND)
    elif uid is not None:
        os.chown(workdir, uid, uid)
    os.chdir(workdir)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # clears every capability as well
    elif plan.user_namespace:
        _drop_capabilities()
    # After the uid switch, which resets it: no core dumps, no ptrace by the same uid.
    _prctl(_PR_SET_DUMPABLE, 0)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


def seal(plan: Plan) -> None:
    """Install the system-call filter if ``plan`` has one; after set_limits, before user code.

    Raises:
        OSError: When the kernel refuses the filter: the process must not run user code.
    """
    if plan.syscall_filter:
        filter_ = _seccomp.program()
        if filter_ is None:
            raise IsolationError(errno.ENOSYS, f"seccomp: no filter for {os.uname().machine}")
        _seccomp.install(filter_)


def set_limits(limits: Limits, *, cpu_hard_s: int | None = None, kept_fds: int = 4) -> None:
    """Close every fd above the pipes and set the rlimits; then only seal() is left.

    Args:
        limits: The call's limits.
        cpu_hard_s: The hard CPU limit of a warm worker, which serves many calls and
            lowers its soft limit per call; by default one second above the call's.
        kept_fds: The fds below this number stay open: the four pipes, and a call's
            door to the network after them when it has one.
    """
    os.closerange(kept_fds, os.sysconf("SC_OPEN_MAX"))
    cpu_seconds = cpu_limit_seconds(limits)
    file_size = max(_FILE_SIZE_BYTES, limits.max_file_bytes + 1)
    for limit, soft, hard in (
        (resource.RLIMIT_AS, limits.memory_mb * _MIB, limits.memory_mb * _MIB),
        # The soft limit's SIGXCPU kills; the hard one's SIGKILL is a backstop (and the
        # only one that stops the init of a PID namespace, which ignores SIGXCPU).
        (resource.RLIMIT_CPU, cpu_seconds, cpu_hard_s or cpu_seconds + 1),
        # One byte past a file's cap, so that a file over it is seen as such in out/.
        (resource.RLIMIT_FSIZE, file_size, file_size),
        (resource.RLIMIT_NOFILE, _MAX_OPEN_FILES, _MAX_OPEN_FILES),
        (resource.RLIMIT_CORE, 0, 0),
        # No new processes or threads: counted per real uid, and not enforced for root.
        (resource.RLIMIT_NPROC, 0, 0),
    ):
        resource.setrlimit(limit, (soft, hard))


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
    _lead_a_session_and_die_with_the_parent()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _lead_a_session_and_die_with_the_parent() -> None:
    # Own session: kill(0, ...) from user code must not reach the parent's group.
    os.setsid()
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@functools.cache
def _own_pid_namespace() -> int:
    """An fd of this process's PID namespace, opened once (its /proc must be mounted)."""
    return os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)


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


def _set_up_filesystem(plan: Plan, workdir: str, hidden: Sequence[str]) -> str:
    # First: no mount made here may propagate back to the host's namespace.
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    if plan.private_root:
        _pivot_to_a_private_root(workdir)
        return PRIVATE_WORKDIR
    if plan.read_only:
        _make_read_only("/", _MOUNT_ATTR_RDONLY)
    sealed = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    # The host's own /proc, for its PID namespace; each sandbox mounts its own over it.
    _mount("proc", "/proc", "proc", sealed | _MS_RDONLY)
    for path in hidden:
        if os.path.isdir(path) and os.path.commonpath([path, workdir]) != path:
            _mount("tmpfs", path, "tmpfs", sealed | _MS_RDONLY, _EMPTY)
    return workdir


_EMPTY = "size=4k,nr_inodes=1,mode=0555"


def runtime_paths() -> tuple[list[str], list[str]]:
    """What a private root holds of the host: the standard library, minus third-party code.

    Returns:
        The directories bound read-only, and those inside them covered by an empty
        tmpfs (site-packages, where it lies within the standard library's tree).
    """
    # The base interpreter's: a virtual environment's "platstdlib" holds only site-packages.
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    kept = sorted({os.path.realpath(paths[name]) for name in ("stdlib", "platstdlib")})
    covered = sorted(
        {
            real
            for name in ("purelib", "platlib")
            if os.path.isdir(real := os.path.realpath(paths[name]))
            and any(os.path.commonpath([real, k]) == k for k in kept)
        }
    )
    return kept, covered


def trust_store() -> list[tuple[str, str]]:
    """The CA bundle a private root holds, for TLS through a call's door: (source, path).

    OpenSSL's default file, bound where OpenSSL looks for it; empty when there is none.
    Public certificates, read-only: nothing of the host's.
    """
    import _ssl  # the C module alone: ssl itself imports far more

    path = _ssl.get_default_verify_paths()[1]
    real = os.path.realpath(path)
    return [(real, path)] if os.path.isfile(real) else []


def _pivot_to_a_private_root(mount_point: str) -> None:
    """Make a tmpfs on ``mount_point`` this mount namespace's root, and drop the old one.

    Everything the host imports comes from memory by now; the standard library is there
    for what allowed modules import lazily and for tracebacks. After pivot_root and the
    detach of the old root, no path leads to the host's files, its sockets included:
    a mount namespace has no way back to a root it no longer holds.
    """
    sealed = _MS_NOSUID | _MS_NODEV
    _mount("tmpfs", mount_point, "tmpfs", _MS_NOSUID, f"size={_PRIVATE_ROOT_BYTES},mode=0755")
    kept, covered = runtime_paths()
    for path in kept:
        os.makedirs(mount_point + path, exist_ok=True)
        _mount(path, mount_point + path, None, _MS_BIND | _MS_REC)
    for path in covered:
        _mount("tmpfs", mount_point + path, "tmpfs", sealed | _MS_RDONLY, _EMPTY)
    for source, path in trust_store():
        os.makedirs(os.path.dirname(mount_point + path), exist_ok=True)
        os.close(os.open(mount_point + path, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(source, mount_point + path, None, _MS_BIND)
    os.mkdir(f"{mount_point}/dev", 0o755)
    for device in _DEVICES:
        target = f"{mount_point}/dev/{device}"
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o666))
        _mount(f"/dev/{device}", target, None, _MS_BIND)
    for directory in ("/proc", PRIVATE_WORKDIR, "/.old"):
        os.mkdir(mount_point + directory, 0o755)
    # This PID namespace's /proc, mounted while the host's is still there to show that
    # mounting one reveals nothing new (a user namespace may mount proc only then).
    _mount("proc", f"{mount_point}/proc", "proc", sealed | _MS_NOEXEC | _MS_RDONLY)
    os.chdir(mount_point)
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise IsolationError(errno.ENOSYS, f"pivot_root: unknown on {os.uname().machine}")
    _call("pivot_root", _libc.syscall(number, b".", b".old"))
    os.chdir("/")
    _call("umount /.old", _libc.umount2(b"/.old", _MNT_DETACH))
    os.rmdir("/.old")
    # Last, recursively: the root, the binds and the devices (which stay usable).
    _make_read_only("/", _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID)


def _make_read_only(path: str, flags: int) -> None:
    # mount_setattr only adds flags: a remount would have to repeat a user namespace's
    # locked ones (atime, nodev) exactly, or fail.
    attr = (ctypes.c_uint64 * 4)(flags, 0, 0, 0)
    _call(
        "mount_setattr",
        _libc.syscall(
            _SYS_MOUNT_SETATTR, _AT_FDCWD, path.encode(), _AT_RECURSIVE, attr, ctypes.sizeof(attr)
        ),
    )


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


# The probe: a sandbox host forks one sandbox at start-up that runs observe() instead of
# user code; the server turns what it saw into layers().

PROBE_LIMITS = Limits(timeout_ms=5_000, memory_mb=256, max_output_bytes=1024)


def candidates() -> list[Plan]:
    """The plans to try, strongest first; the last is the process layer alone."""
    if os.geteuid() == 0:
        # As real root: no user namespace (setuid to an unprivileged uid fails in one
        # that maps only root), and unprivileged uids instead.
        strong = Plan(namespaces=True, read_only=True, uid=SANDBOX_UID_BASE)
    else:
        strong = Plan(namespaces=True, user_namespace=True, read_only=True)
    weaker = dataclasses.replace(strong, read_only=False)
    fallback = Plan(uid=strong.uid)
    plans = [dataclasses.replace(strong, private_root=True), strong, weaker, fallback]
    if _seccomp.program() is None:
        return plans
    # The filter with every plan first; the process layer alone last, as the last resort.
    filtered = [dataclasses.replace(plan, syscall_filter=True) for plan in plans]
    return [filtered[0], plans[0], *filtered[1:], fallback]


def observe(workdir: str, private_root: bool) -> dict[str, Any]:
    """What the layers look like from inside a sandbox; must not import anything.

    With a private root it also lists every file the root holds outside /proc, the
    working directory and the standard library (the host's whole tree would be too
    long to walk without one).
    """
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
        "namespaces": namespace_ids(),
        "network_errno": network,
        "pids": sorted(int(name) for name in os.listdir("/proc") if name.isdigit()),
        "fork_errno": forked,
        "workdir_writable": writable,
        "writable_mounts": [m[4] for m in mounts if "rw" in m[5].split(",")],
        "root_files": _files_in_root(workdir) if private_root else None,
    }


def _files_in_root(workdir: str) -> list[str]:
    skip = {"/proc", workdir, *runtime_paths()[0]}
    found = []
    for directory, subdirectories, files in os.walk("/"):
        subdirectories[:] = [d for d in subdirectories if os.path.join(directory, d) not in skip]
        found += [os.path.join(directory, name) for name in files]
    return sorted(found)


def namespace_ids() -> dict[str, int]:
    """The inode of each namespace this process is in."""
    names = ("net", "pid", "mnt", "ipc", "uts", "cgroup", "user")
    return {name: os.stat(f"/proc/self/ns/{name}").st_ino for name in names}


def layers(
    plan: Plan, facts: dict[str, Any], outside: dict[str, int], failures: Sequence[str]
) -> tuple[Layer, ...]:
    """The layers in effect, from what a probe sandbox confined by ``plan`` observed.

    Args:
        plan: The plan the probe's host and sandbox applied.
        facts: What observe() returned inside the probe sandbox.
        outside: namespace_ids() of a process outside the sandbox.
        failures: Why stronger plans failed, strongest first.
    """
    new = {name for name, ino in facts["namespaces"].items() if ino != outside[name]}
    missing = f"not available: {failures[0]}" if failures else ""
    found = [
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
            "sees no other process, other calls included; its own /proc"
            if "pid" in new
            else missing,
        ),
        (
            "ipc-namespace",
            "ipc" in new,
            "own System V IPC and POSIX queues" if "ipc" in new else missing,
        ),
        ("uts-namespace", "uts" in new, "own hostname" if "uts" in new else missing),
    ]
    if plan.user_namespace:
        found.append(("user-namespace", "user" in new, "maps only the server's uid, to root"))
    expected = sorted([f"/dev/{d}" for d in _DEVICES] + [path for _, path in trust_store()])
    private = plan.private_root and facts["root_files"] == expected
    found.append(
        (
            "private-root",
            private,
            "a root of its own: the standard library read-only (no third-party packages), "
            "the working directory, the system's CA certificates, its own /proc and /dev/"
            + ", ".join(sorted(_DEVICES))
            + "; no other file or socket of the host"
            if private
            else (failures[0] if failures else "needs a mount namespace"),
        )
    )
    # From inside, the only writable mount must be the working directory.
    read_only = plan.read_only and facts["writable_mounts"] == [facts["workdir"]]
    found.append(
        (
            "read-only-filesystem",
            read_only,
            f"every mount read-only but the working directory, a private "
            f"{WORKDIR_BYTES // _MIB} MiB tmpfs; the server's data directory hidden"
            if read_only
            else (failures[-1] if failures else "needs a mount namespace"),
        )
    )
    found += [_seccomp_layer(plan, facts, failures), ("cgroup-memory", False, _cgroup_detail())]
    return tuple(Layer(n, a, d) for n, a, d in found)


def _seccomp_layer(
    plan: Plan, facts: dict[str, Any], failures: Sequence[str]
) -> tuple[str, bool, str]:
    if _seccomp.program() is None:
        return "seccomp", False, f"not available: no filter for {os.uname().machine}"
    if not plan.syscall_filter:
        return "seccomp", False, f"not available: {failures[0] if failures else 'not tried'}"
    return "seccomp", _seccomp.active(facts["seccomp"]), _seccomp.DESCRIPTION


def _user_layer(plan: Plan, facts: dict[str, Any]) -> tuple[str, bool, str]:
    privileged = facts["cap_eff"] != 0 or not facts["no_new_privs"]
    if plan.uid is not None:
        active = facts["uid"] == plan.uid and not privileged
        return (
            "unprivileged-user",
            active,
            f"uid {plan.uid} + the call's slot (no two running calls share one), no groups, "
            "no capabilities, no_new_privs",
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
