"""The system-call filter, against an attacker with full Python and ctypes.

Each live test runs a fresh interpreter that sets no_new_privs and installs the filter
exactly as a sandbox process will, then tries things, with raw system calls where Python
or libc would refuse first, and prints JSON that the test asserts exactly. No other layer
is in place: the filter must hold alone. The probes' arguments are harmless even if the
filter failed to refuse them (no real mount, no attach, no hostname), so a bug shows up as
a failing test and nothing worse. The probe loads the module by its path, which it can
because it imports nothing of ours: the package's __init__ would cost ~0.1 s a process.

Other tests read the compiled programs of both architectures with a small BPF emulator,
for every system-call number, and check the tables against the kernel's headers.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from toolvault.sandbox import _seccomp

MODULE = Path(_seccomp.__file__)
LIVE = pytest.mark.skipif(_seccomp.program() is None, reason="no filter for this machine")
X86_64 = pytest.mark.skipif(
    _seccomp.program() is None or platform.machine() != "x86_64", reason="x86_64 only"
)
HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}
AUDIT_ARCH_I386, AUDIT_ARCH_ARM = 0x40000003, 0x40000028
ALLOW, KILL = 0x7FFF0000, 0x80000000
EPERM, ENOSYS = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
# Written out here rather than read from the module: the threat list, by name.
THREATS = (
    "socket",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "unshare",
    "setns",
    "keyctl",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "execve",
    "execveat",
)

PRELUDE = '''\
import ctypes, errno, importlib.util, json, os, socket, sys

spec = importlib.util.spec_from_file_location("_seccomp", sys.argv[1])
seccomp = importlib.util.module_from_spec(spec)
sys.modules["_seccomp"] = seccomp  # where dataclasses looks for the module's names
spec.loader.exec_module(seccomp)
NUMBERS = seccomp._this_arch().numbers
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def install():
    libc.prctl(38, ctypes.c_ulong(1), 0, 0, 0)  # PR_SET_NO_NEW_PRIVS, as a sandbox has
    seccomp.install(seccomp.program())


def call(number, *args):
    """A raw system call by name or number: its result, or the name of its errno."""
    number = NUMBERS[number] if isinstance(number, str) else number
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    result = libc.syscall(ctypes.c_long(number), *args)
    return errno.errorcode[ctypes.get_errno()] if result == -1 else result


def attempt(action):
    """What action() returns, or the name of the errno of the OSError it raises."""
    try:
        return action()
    except OSError as exc:
        return errno.errorcode[exc.errno]


'''


def run_probe(body: str, *args: str) -> subprocess.CompletedProcess[str]:
    # Its own session: no controlling terminal for the probes to reach.
    return subprocess.run(
        [sys.executable, "-I", "-c", PRELUDE + dedent(body), str(MODULE), *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def probe(body: str, *args: str) -> Any:
    """Run ``body`` after the prelude; the JSON it printed."""
    done = run_probe(body, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@LIVE
def test_cant_open_a_network_socket() -> None:
    result = probe("""
        before = {
            "AF_INET": attempt(lambda: socket.socket(socket.AF_INET).close()),
            "AF_UNIX": attempt(lambda: socket.socket(socket.AF_UNIX).close()),
        }
        install()
        after = {
            name: call("socket", family, kind, 0)
            for name, family, kind in [
                ("AF_INET", 2, 1),
                ("AF_INET6", 10, 2),
                ("AF_UNIX", 1, 1),
                ("AF_NETLINK", 16, 3),
                ("AF_PACKET", 17, 3),
                ("AF_VSOCK", 40, 1),
                ("AF_INET in high bits", 2 | 1 << 32, 1),
            ]
        }
        after["socket.socket"] = attempt(lambda: socket.socket().close())
        print(json.dumps([before, after]))
    """)
    assert result == [
        {"AF_INET": None, "AF_UNIX": None},
        {
            "AF_INET": "EPERM",
            "AF_INET6": "EPERM",
            "AF_UNIX": "EPERM",
            "AF_NETLINK": "EPERM",
            "AF_PACKET": "EPERM",
            "AF_VSOCK": "EPERM",
            "AF_INET in high bits": "EPERM",
            "socket.socket": "EPERM",
        },
    ]


@LIVE
def test_cant_connect_bind_listen_or_accept_with_sockets_made_before_it(tmp_path: Path) -> None:
    host = tmp_path / "host.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(host))
        listener.listen()
        result = probe(
            """
            host, own, other = sys.argv[2:]
            # Made before the filter, as if inherited: socket() itself is refused after it.
            unbound = socket.socket(socket.AF_UNIX)
            listening = socket.socket(socket.AF_UNIX)
            listening.bind(own)
            listening.listen()
            listening.setblocking(False)
            install()
            print(json.dumps({
                "connect": attempt(lambda: unbound.connect(host)),
                "connect_abstract": attempt(lambda: unbound.connect("\\0toolvault")),
                "bind": attempt(lambda: unbound.bind(other)),
                "listen": attempt(lambda: unbound.listen()),
                "accept": call("accept", listening.fileno(), 0, 0),
                "accept4": attempt(lambda: listening.accept()),
            }))
            """,
            str(host),
            str(tmp_path / "own.sock"),
            str(tmp_path / "other.sock"),
        )
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected
    assert result == {
        "connect": "EPERM",
        "connect_abstract": "EPERM",
        "bind": "EPERM",
        "listen": "EPERM",
        "accept": "EPERM",
        "accept4": "EPERM",
    }
    assert not (tmp_path / "other.sock").exists()


@LIVE
def test_can_make_a_unix_stream_socketpair_and_no_other() -> None:
    result = probe("""
        install()
        a, b = socket.socketpair()
        a.sendall(b"x")
        fds = (ctypes.c_int * 2)()
        nonblocking = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        print(json.dumps({
            "stream": b.recv(1).decode(),
            "stream, nonblocking": call("socketpair", 1, nonblocking, 0, fds),
            "AF_UNIX in high bits": call("socketpair", 1 | 1 << 32, 1, 0, fds),
            "datagram": attempt(lambda: socket.socketpair(type=socket.SOCK_DGRAM)),
            "seqpacket": attempt(lambda: socket.socketpair(type=socket.SOCK_SEQPACKET)),
            "AF_INET": call("socketpair", 2, 1, 0, fds),
            "AF_INET in high bits": call("socketpair", 2 | 1 << 32, 1, 0, fds),
        }))
    """)
    assert result == {
        "stream": "x",
        "stream, nonblocking": 0,
        "AF_UNIX in high bits": 0,  # the kernel, too, reads only the low 32 bits
        "datagram": "EPERM",
        "seqpacket": "EPERM",
        "AF_INET": "EPERM",
        "AF_INET in high bits": "EPERM",
    }


@LIVE
def test_cant_enter_new_namespaces() -> None:
    result = probe("""
        import signal, struct, threading
        CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
            0x20000, 0x10000000, 0x20000000, 0x40000000
        )

        def spawn(name, *args):
            pid = call(name, *args)
            if pid == 0:
                os._exit(0)  # the child, had the filter let it through
            if isinstance(pid, int):
                os.waitpid(pid, 0)
                return "started"
            return pid

        def thread():
            ran = []
            worker = threading.Thread(target=lambda: ran.append(True))
            worker.start()
            worker.join()
            return ran == [True]

        def fork():
            pid = os.fork()
            if pid == 0:
                os._exit(7)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

        net = os.open("/proc/self/ns/net", os.O_RDONLY)
        clone_args = ctypes.create_string_buffer(
            struct.pack("=8Q", CLONE_NEWUSER, 0, 0, 0, signal.SIGCHLD, 0, 0, 0)
        )
        install()
        print(json.dumps({
            "unshare user": call("unshare", CLONE_NEWUSER),
            "unshare net": call("unshare", CLONE_NEWNET),
            "unshare mount": call("unshare", CLONE_NEWNS),
            "setns": call("setns", net, CLONE_NEWNET),
            "clone user": spawn("clone", CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0),
            "clone mount": spawn("clone", CLONE_NEWNS | signal.SIGCHLD, 0, 0, 0, 0),
            "clone net, pid": spawn(
                "clone", CLONE_NEWNET | CLONE_NEWPID | signal.SIGCHLD, 0, 0, 0, 0
            ),
            "clone3 user": spawn("clone3", clone_args, len(clone_args.raw)),
            "fork": fork(),
            "thread": thread(),
        }))
    """)
    assert result == {
        "unshare user": "EPERM",
        "unshare net": "EPERM",
        "unshare mount": "EPERM",
        "setns": "EPERM",
        "clone user": "EPERM",
        "clone mount": "EPERM",
        "clone net, pid": "EPERM",
        "clone3 user": "ENOSYS",
        # Plain clone still works, and libc falls back to it when clone3 is missing.
        "fork": 7,
        "thread": True,
    }


@LIVE
def test_cant_mount_or_change_the_root(tmp_path: Path) -> None:
    result = probe(
        """
        target = sys.argv[2].encode()
        AT_FDCWD = -100
        install()
        print(json.dumps({
            # A file system type that does not exist, and a directory that is no mount
            # point: harmless even unfiltered.
            "mount": call("mount", b"none", target, b"toolvault-none", 0, 0),
            "umount2": call("umount2", target, 0),
            "chroot": call("chroot", target),
            "pivot_root": call("pivot_root", target, target),
            "fsopen": call("fsopen", b"tmpfs", 0),
            "open_tree": call("open_tree", AT_FDCWD, target, 0),
            "mount_setattr": call(
                "mount_setattr", AT_FDCWD, target, 0, ctypes.create_string_buffer(32), 32
            ),
        }))
        """,
        str(tmp_path),
    )
    assert result == dict.fromkeys(
        ("mount", "umount2", "chroot", "pivot_root", "fsopen", "open_tree", "mount_setattr"),
        "EPERM",
    )


@LIVE
def test_cant_reach_into_another_process() -> None:
    result = probe("""
        class iovec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        PTRACE_PEEKDATA, KCMP_FILE = 2, 0
        parent = os.getppid()
        buffer = ctypes.create_string_buffer(8)
        local = iovec(ctypes.addressof(buffer), 8)
        nothing = iovec(ctypes.addressof(buffer), 0)  # a write of nothing, should it pass
        pidfd = os.pidfd_open(parent)
        install()
        print(json.dumps({
            "ptrace": call("ptrace", PTRACE_PEEKDATA, parent, 0, 0),
            "process_vm_readv": call(
                "process_vm_readv", parent, ctypes.byref(local), 1, ctypes.byref(local), 1, 0
            ),
            "process_vm_writev": call(
                "process_vm_writev", parent, ctypes.byref(nothing), 1, ctypes.byref(nothing), 1, 0
            ),
            "pidfd_getfd": call("pidfd_getfd", pidfd, 0, 0),
            "kcmp": call("kcmp", os.getpid(), parent, KCMP_FILE, 0, 0),
        }))
    """)
    assert result == dict.fromkeys(
        ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp"), "EPERM"
    )


@LIVE
def test_cant_start_a_program() -> None:
    result = probe("""
        import subprocess
        AT_FDCWD = -100
        argv = (ctypes.c_char_p * 2)(sys.executable.encode(), None)
        install()
        print(json.dumps({
            "execve": attempt(lambda: os.execv(sys.executable, [sys.executable, "-c", "1"])),
            "execveat": call("execveat", AT_FDCWD, sys.executable.encode(), argv, argv, 0),
            "subprocess": attempt(lambda: subprocess.run(["true"]).returncode),
        }))
    """)
    assert result == {"execve": "EPERM", "execveat": "EPERM", "subprocess": "EPERM"}


@LIVE
def test_cant_use_the_kernel_interfaces_attacks_start_from() -> None:
    result = probe("""
        import struct
        USERFAULTFD_IOC_NEW, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING = 0xAA00, 0, -3
        BPF_MAP_CREATE, BPF_MAP_TYPE_ARRAY = 0, 2
        bpf_attr = ctypes.create_string_buffer(
            struct.pack("=4I", BPF_MAP_TYPE_ARRAY, 4, 4, 1), 72
        )
        # PERF_TYPE_SOFTWARE, PERF_ATTR_SIZE_VER0, PERF_COUNT_SW_CPU_CLOCK
        perf_attr = ctypes.create_string_buffer(struct.pack("=IIQ", 1, 64, 0), 64)
        io_uring_params = ctypes.create_string_buffer(120)
        pipe, _ = os.pipe()
        install()
        print(json.dumps({
            "io_uring_setup": call("io_uring_setup", 1, io_uring_params),
            "io_uring_enter": call("io_uring_enter", pipe, 0, 0, 0, 0, 0),
            "bpf": call("bpf", BPF_MAP_CREATE, bpf_attr, 72),
            "perf_event_open": call("perf_event_open", perf_attr, 0, -1, -1, 0),
            "userfaultfd": call("userfaultfd", os.O_CLOEXEC),
            "USERFAULTFD_IOC_NEW": call("ioctl", pipe, USERFAULTFD_IOC_NEW, 0),
            "keyctl": call("keyctl", KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0),
            "add_key": call("add_key", b"user", b"toolvault", b"x", 1, KEY_SPEC_SESSION_KEYRING),
        }))
    """)
    assert result == dict.fromkeys(
        (
            "io_uring_setup",
            "io_uring_enter",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "USERFAULTFD_IOC_NEW",
            "keyctl",
            "add_key",
        ),
        "EPERM",
    )


@LIVE
def test_can_ask_for_the_personality_but_not_change_it() -> None:
    result = probe("""
        QUERY, PER_LINUX, PER_LINUX32, ADDR_NO_RANDOMIZE = 0xFFFFFFFF, 0, 0x8, 0x40000
        before = call("personality", QUERY)
        install()
        print(json.dumps({
            "query": call("personality", QUERY) == before,
            "PER_LINUX32": call("personality", PER_LINUX32),
            "ADDR_NO_RANDOMIZE": call("personality", ADDR_NO_RANDOMIZE),
            "PER_LINUX": call("personality", PER_LINUX),
            "unchanged": call("personality", QUERY) == before,
        }))
    """)
    assert result == {
        "query": True,
        "PER_LINUX32": "EPERM",
        "ADDR_NO_RANDOMIZE": "EPERM",
        "PER_LINUX": "EPERM",
        "unchanged": True,
    }


@LIVE
def test_cant_type_into_a_terminal() -> None:
    result = probe("""
        import fcntl, termios
        TIOCSTI, TIOCLINUX = 0x5412, 0x541C
        terminal, _ = os.openpty()
        char = ctypes.c_char(b"x")
        install()
        print(json.dumps({
            "TIOCSTI": call("ioctl", terminal, TIOCSTI, ctypes.byref(char)),
            "TIOCSTI in high bits": call("ioctl", terminal, TIOCSTI | 1 << 32, ctypes.byref(char)),
            "TIOCLINUX": call("ioctl", terminal, TIOCLINUX, ctypes.byref(char)),
            "other ioctls": len(fcntl.ioctl(terminal, termios.TIOCGWINSZ, bytes(8))),
        }))
    """)
    assert result == {
        "TIOCSTI": "EPERM",
        "TIOCSTI in high bits": "EPERM",
        "TIOCLINUX": "EPERM",
        "other ioctls": 8,
    }


@LIVE
def test_cant_choose_a_signal_for_the_kernel_to_send_later() -> None:
    # SIGCONT, sent by a timer or an fd's event, would resume a warm worker held stopped.
    result = probe("""
        import fcntl, signal
        F_SETSIG = 10
        read_end, _ = os.pipe()
        event = (ctypes.c_int * 16)(0, int(signal.SIGCONT), 0)  # sigevent: SIGEV_SIGNAL
        timer = ctypes.c_long()
        install()
        print(json.dumps({
            "timer_create": call("timer_create", 1, ctypes.byref(event), ctypes.byref(timer)),
            "F_SETSIG": call("fcntl", read_end, F_SETSIG, int(signal.SIGCONT)),
            "F_SETSIG in high bits": call("fcntl", read_end, F_SETSIG | 1 << 32, 18),
            "other fcntls": fcntl.fcntl(read_end, fcntl.F_GETFD) >= 0,
            "setitimer": signal.setitimer(signal.ITIMER_REAL, 0) == (0.0, 0.0),
        }))
    """)
    assert result == {
        "timer_create": "EPERM",
        "F_SETSIG": "EPERM",
        "F_SETSIG in high bits": "EPERM",
        "other fcntls": True,
        "setitimer": True,
    }


@LIVE
def test_ordinary_python_still_works() -> None:
    result = probe("""
        import asyncio, datetime, hashlib, pathlib, random, tempfile, time
        install()

        async def main():
            queue = asyncio.Queue()
            await queue.put(3)
            await asyncio.sleep(0.001)
            return await queue.get()

        with tempfile.TemporaryDirectory() as directory:
            path = pathlib.Path(directory, "data.json")
            path.write_text(json.dumps({"a": [1, 2]}))
            path.rename(path.with_suffix(".txt"))
            data = json.loads(path.with_suffix(".txt").read_text())
            listed = os.listdir(directory)
        started = time.monotonic()
        time.sleep(0.001)
        print(json.dumps({
            "files": [data, listed],
            "asyncio.run": asyncio.run(main()),
            "sha256": hashlib.sha256(b"abc").hexdigest()[:12],
            "urandom": len(os.urandom(16)),
            "random": 0 <= random.random() < 1,
            "time": time.monotonic() > started and time.time() > 1e9,
            "strptime": datetime.datetime.strptime("2024-01-02", "%Y-%m-%d").day,
            "isatty": sys.stdout.isatty(),
        }))
    """)
    assert result == {
        "files": [{"a": [1, 2]}, ["data.txt"]],
        "asyncio.run": 3,
        "sha256": "ba7816bf8f01",
        "urandom": 16,
        "random": True,
        "time": True,
        "strptime": 2,
        "isatty": False,
    }


@LIVE
def test_every_refused_call_is_refused_by_this_kernel() -> None:
    # Invalid everything (fds, pids, flags, lengths; non-canonical pointers): a call that
    # got through would fail on its arguments, where the filter's answer is EPERM.
    result = probe("""
        install()
        if not seccomp.active(seccomp.observe()):
            sys.exit("the filter is not in effect: not sweeping")
        junk = [0xDEAD0000DEAD0000] * 6
        refused = sorted({
            name for names in seccomp._REFUSED.values() for name in names if name in NUMBERS
        })
        print(json.dumps({
            "refused": {name: call(name, *junk) for name in refused},
            "clone3": call("clone3", *junk),
            "the first number not reviewed": call(seccomp._LAST_REVIEWED + 1, *junk),
        }))
    """)
    arch = _seccomp._this_arch()
    assert arch is not None
    numbers = arch.numbers
    listed = {name for names in _seccomp._REFUSED.values() for name in names}
    assert result == {
        "refused": dict.fromkeys(sorted(listed & numbers.keys()), "EPERM"),
        "clone3": "ENOSYS",
        "the first number not reviewed": "ENOSYS",
    }


X32_AND_I386 = """
    import mmap, signal
    # mov eax, 20 (getpid in the i386 table); int 0x80; ret
    code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(bytes.fromhex("b814000000cd80c3"))
    i386_getpid = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
    if sys.argv[2] == "filtered":
        install()
    print("calling", flush=True)
    print(call(0x40000000 | 39) if sys.argv[3] == "x32" else i386_getpid(), flush=True)
"""


@X86_64
def test_an_x32_system_call_kills_the_process() -> None:
    done = run_probe(X32_AND_I386, "filtered", "x32")
    assert (done.returncode, done.stdout) == (-signal.SIGSYS, "calling\n")


@X86_64
def test_an_i386_system_call_kills_the_process() -> None:
    unfiltered = run_probe(X32_AND_I386, "unfiltered", "i386")
    if unfiltered.returncode != 0:
        pytest.skip("this kernel runs no i386 code (no IA32 emulation)")
    done = run_probe(X32_AND_I386, "filtered", "i386")
    assert (done.returncode, done.stdout) == (-signal.SIGSYS, "calling\n")


@LIVE
def test_observe_sees_the_filter_once_installed() -> None:
    before, after = probe("""
        before = seccomp.observe()
        install()
        print(json.dumps([before, seccomp.observe()]))
    """)
    assert not _seccomp.active(before)
    assert _seccomp.active(after)
    assert after == {"mode": 2, "filters": before["filters"] + 1, "socket_errno": errno.EPERM}


@LIVE
def test_installing_without_no_new_privs_says_so() -> None:
    if _status("NoNewPrivs") == "1":
        pytest.skip("no_new_privs is set already")
    result = probe("""
        if os.getuid() == 0:  # root may install filters without no_new_privs
            os.setgid(65534)
            os.setuid(65534)
        try:
            seccomp.install(seccomp.program())
        except OSError as exc:
            print(json.dumps([exc.errno, str(exc)]))
    """)
    assert result == [
        errno.EACCES,
        "[Errno 13] seccomp(SECCOMP_SET_MODE_FILTER): Permission denied (set no_new_privs first)",
    ]


def emulate(program: bytes, nr: int, arch: int, args: tuple[int, ...] = (0,) * 6) -> int:
    """The verdict of ``program`` on a call; fails on an instruction the filter must not use."""
    return _emulate(program, nr, arch, args)[0]


def _emulate(program: bytes, nr: int, arch: int, args: tuple[int, ...]) -> tuple[int, bool]:
    """The verdict, and whether the program read an argument (no cached verdict then)."""
    data = struct.pack("=IIQ6Q", nr, arch, 0, *args)
    code = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    a = pc = 0
    read_an_argument = False
    while True:
        opcode, jt, jf, k = code[pc]
        if opcode == 0x20:  # ld [k]
            assert k in (0, 4) or (k >= 16 and k % 4 == 0), k
            read_an_argument |= k >= 16
            (a,) = struct.unpack_from("=I", data, k)
        elif opcode == 0x54:  # and #k
            a &= k
        elif opcode == 0x05:  # ja
            pc += k
        elif opcode == 0x15:  # jeq #k
            pc += jt if a == k else jf
        elif opcode == 0x35:  # jge #k
            pc += jt if a >= k else jf
        elif opcode == 0x06:  # ret #k
            return k, read_an_argument
        else:
            raise AssertionError(f"instruction {opcode:#x} at {pc}")
        pc += 1


ARCHES = pytest.mark.parametrize("arch", sorted(_seccomp._ARCHES.values(), key=lambda a: a.name))


@ARCHES
def test_the_program_gives_every_number_its_verdict(arch: _seccomp._Arch) -> None:
    program = _seccomp._compile(arch)
    assert len(program) // 8 <= 4096  # BPF_MAXINSNS
    refused = {
        arch.numbers[n] for names in _seccomp._REFUSED.values() for n in names if n in arch.numbers
    }
    assert {arch.numbers[name] for name in THREATS} <= refused
    conditional = {arch.numbers[name] for name in _seccomp._CONDITIONAL}
    for nr in range(_seccomp._LAST_REVIEWED + 1):
        verdict, read_an_argument = _emulate(program, nr, arch.audit_arch, (0,) * 6)
        if nr in refused:
            assert verdict == EPERM, nr
        elif nr == arch.numbers["clone3"]:
            assert verdict == ENOSYS
        elif nr not in conditional:
            assert verdict == ALLOW, nr
        # Only these four read arguments: every other verdict the kernel can cache.
        assert read_an_argument == (nr in conditional), nr
    for nr in (_seccomp._LAST_REVIEWED + 1, 0x3FFFFFFF):
        assert emulate(program, nr, arch.audit_arch) == ENOSYS


@ARCHES
def test_another_abi_kills(arch: _seccomp._Arch) -> None:
    program = _seccomp._compile(arch)
    others = {a.audit_arch for a in _seccomp._ARCHES.values()} - {arch.audit_arch}
    for other in {*others, AUDIT_ARCH_I386, AUDIT_ARCH_ARM}:
        assert emulate(program, arch.numbers["socket"], other) == KILL
    x32 = [0x40000000 | nr for nr in (0, 39, 41, 0x3FFFFFFF)] + [0xFFFFFFFF]
    expected = KILL if arch.name == "x86_64" else ENOSYS
    assert [emulate(program, nr, arch.audit_arch) for nr in x32] == [expected] * len(x32)


@ARCHES
def test_the_program_reads_only_the_low_half_of_arguments(arch: _seccomp._Arch) -> None:
    program = _seccomp._compile(arch)

    def verdict(name: str, *args: int) -> int:
        padded = (*args, 0, 0, 0, 0, 0, 0)[:6]
        return emulate(program, arch.numbers[name], arch.audit_arch, padded)

    high = 1 << 32
    sigchld, thread = 17, 0x3D0F00  # glibc's flags for a thread
    assert [verdict("socketpair", 1, kind) for kind in (1, 1 | 0x80800, 2, 5)] == [
        ALLOW,
        ALLOW,
        EPERM,
        EPERM,
    ]
    assert [verdict("socketpair", family, 1) for family in (2, 1 | high, 2 | high)] == [
        EPERM,
        ALLOW,
        EPERM,
    ]
    assert [verdict("clone", flags) for flags in (sigchld, thread, sigchld | high)] == [ALLOW] * 3
    namespaces = [1 << bit for bit in (17, 25, 26, 27, 28, 29, 30)]
    assert [verdict("clone", sigchld | flag) for flag in namespaces] == [EPERM] * 7
    queries = (0xFFFFFFFF, 0xFFFFFFFF | high, 0, 8, 0x40000)
    assert [verdict("personality", p) for p in queries] == [ALLOW, ALLOW, EPERM, EPERM, EPERM]
    commands = (0x5412, 0x5412 | high, 0x541C, 0xAA00, 0x5401, 0x541B)
    assert [verdict("ioctl", 0, cmd) for cmd in commands] == [EPERM] * 4 + [ALLOW] * 2


def test_a_jump_beyond_a_byte_goes_through_a_trampoline() -> None:
    code = _seccomp._Assembler()
    far = code.emit(0x06, 1)
    for _ in range(300):
        code.emit(0x06, 2)
    near = code.emit(0x06, 3)
    code.jump(0x15, 5, far, near)
    code.emit(0x20, 0)
    program = code.program()
    assert len(program) // 8 == 305  # one more: the trampoline
    assert [emulate(program, nr, 0) for nr in (5, 6)] == [1, 3]


def header_numbers(arch: str) -> dict[str, int]:
    """Every call's number in ``arch``'s header; a skip where it is missing, but in CI."""
    path = HEADERS[arch]
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing; install linux-libc-dev")
        pytest.skip(f"{path} is missing")
    text = path.read_text()
    found = re.findall(r"^#define __NR_(\w+)\s+(\d+)$", text, re.MULTILINE)
    # asm-generic names the calls whose 32- and 64-bit forms differ __NR3264_*.
    generic = dict(re.findall(r"^#define __NR3264_(\w+)\s+(\d+)$", text, re.MULTILINE))
    aliased = re.findall(r"^#define __NR_(\w+)\s+__NR3264_(\w+)$", text, re.MULTILINE)
    found += [(name, generic[target]) for name, target in aliased if target in generic]
    return {name: int(number) for name, number in found if name != "syscalls"}


@ARCHES
def test_the_tables_match_the_kernel_headers(arch: _seccomp._Arch) -> None:
    header = header_numbers(arch.name)
    newest = max(header.values())
    assert {n: header[n] for n in arch.numbers if n in header} == {
        n: nr for n, nr in arch.numbers.items() if n in header
    }
    # A call the header lacks must be newer than the header, and numbered as on every arch.
    newer = {n: nr for n, nr in arch.numbers.items() if n not in header}
    assert all(nr > newest and _seccomp._COMMON[n] == nr for n, nr in newer.items()), newer
    # No call of the lists that this architecture has may be missing from its table.
    listed = {n for names in _seccomp._REFUSED.values() for n in names}
    listed |= {*_seccomp._CONDITIONAL, *_seccomp._ABSENT_CALLS, "seccomp"}
    assert sorted(listed & header.keys() - arch.numbers.keys()) == []


@ARCHES
def test_the_headers_know_no_call_newer_than_the_review(arch: _seccomp._Arch) -> None:
    header = header_numbers(arch.name)
    unreviewed = sorted(n for n, nr in header.items() if nr > _seccomp._LAST_REVIEWED)
    assert unreviewed == [], "review these calls, then raise _LAST_REVIEWED"


def _status(field: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return value.strip()
    return ""
