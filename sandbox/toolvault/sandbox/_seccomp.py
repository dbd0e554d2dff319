"""The system-call filter: a seccomp-BPF deny-list that a sandbox process installs last.

Written for an attacker who has full Python with ``os`` and ``ctypes`` (the language layer
fell) and so can make any system call with any arguments. program() compiles the filter
for this machine once, in the sandbox host before it forks; install() puts it on a sandbox
process right before user code runs, after no_new_privs; observe() and active() tell from
inside a probe sandbox whether it is in effect; DESCRIPTION says what it blocks, for
``toolvault doctor``. The module imports nothing of ours.

What it refuses, by class (a call an architecture does not have is skipped there):

- The network: ``socket`` for every family (AF_INET, AF_INET6, AF_UNIX, AF_NETLINK,
  AF_PACKET, AF_VSOCK, ...), ``connect``, ``bind``, ``listen``, ``accept``, ``accept4``.
  ``socketpair`` only for AF_UNIX stream sockets, which ``asyncio.run`` needs: a datagram
  pair could reach any Unix datagram socket by path (journald's, say) with ``sendto``,
  no ``connect`` needed.
- Namespaces and mounts: ``unshare``, ``setns``, ``clone`` with any CLONE_NEW* flag, and
  every call of the old and the new mount API (``mount``, ``umount2``, ``pivot_root``,
  ``chroot``, ``open_tree``, ``open_tree_attr``, ``move_mount``, ``fsopen``, ``fsconfig``,
  ``fsmount``, ``fspick``, ``mount_setattr``, ``statmount``, ``listmount``). ``clone3``
  fails with ENOSYS: its flags are in memory the filter cannot read, and libc then falls
  back to ``clone``, whose flags it can. CLONE_NEWTIME fits only unshare and clone3.
- Other processes: ``ptrace``, ``process_vm_readv``, ``process_vm_writev``,
  ``pidfd_getfd``, ``kcmp``, ``process_madvise``, ``process_mrelease``, ``move_pages``,
  ``migrate_pages``, ``get_robust_list``.
- Starting programs: ``execve``, ``execveat``, ``uselib``; a sandbox never needs them.
- Signals the kernel sends the process later, of its choosing: ``timer_create`` (POSIX
  timers; ``setitimer``'s fixed signals stay) and ``fcntl(F_SETSIG)`` (the signal of an
  fd's O_ASYNC events, leases and dnotify). Either could have SIGCONT resume a warm
  worker that the runner holds stopped between calls.
- System V shared memory, message queues and semaphores, and POSIX message queues:
  what they hold stays in the call's IPC namespace after every detach, uncounted by
  RLIMIT_AS, so they would let a call hold memory far beyond its limit.
- The kernel's attack surface and the host's administration: ``bpf``,
  ``perf_event_open``, ``userfaultfd`` (and /dev/userfaultfd's ioctl), ``io_uring_*``,
  the keyrings, ``personality`` but the query ``personality(0xffffffff)``,
  ``modify_ldt``, ``iopl``, ``ioperm``, modules, kexec, ``reboot``, swap, ``acct``,
  quotas, file handles (``name_to_handle_at``, ``open_by_handle_at``), ``syslog``,
  ``lookup_dcookie``, fanotify, the clocks, ``sethostname``, ``setdomainname``,
  ``vhangup``, ``nfsservctl``, the ioctls TIOCSTI and TIOCLINUX, and the calls systemd
  files under @obsolete. The classes follow Docker's default profile and systemd's
  @mount, @privileged, @debug, @obsolete, @clock, @module, @raw-io, @reboot, @swap,
  @keyring and @cpu-emulation groups.
- Every number above the last call this list was reviewed against (file_setattr, 469,
  Linux 6.17) fails with ENOSYS, as on an older kernel: a new interface stays closed
  until it is reviewed, and libc's fallbacks for missing calls still work.

A refused call fails with EPERM (ENOSYS as said), so user code sees a plain OSError. A
call through another ABI kills the process with SIGSYS (SECCOMP_RET_KILL_PROCESS): an
arch in seccomp_data other than this process's own (i386 by ``int 0x80`` or from a
32-bit code segment on x86_64, AArch32 on aarch64) and, on x86_64, every number from
0x40000000 (x32's bit) up. Their numbers differ from the native ones, so a deny-list by
native numbers would let them through; no honest program of ours ever makes such a call.

How: the program checks the arch, then binary-searches the call's number over runs of
numbers with the same verdict (six or seven comparisons, 10 to 14 instructions a call).
A verdict that depends on the number alone is one the kernel's action cache (Linux 5.11
and later) remembers, so the program runs only for the four calls whose arguments it
reads (``socketpair``, ``clone``, ``personality``, ``ioctl``, ``fcntl``). Arguments are
compared on their low 32 bits only: all five are ``int`` arguments, which the kernel truncates the
same way, so high bits the caller sets change nothing (a 64-bit comparison would read
AF_INET | 1 << 32 as some other family while the kernel saw AF_INET).

Measured here: installing costs ~0.15 ms a process, nearly all of it the kernel's own (a
one-instruction filter costs ~0.12 ms); a call under it costs ~50 ns more, as under any
filter, and one whose arguments it reads ~80 ns more.

Approaches not taken, and why:

- libseccomp through ctypes: a native library the host may lack, reached through an ABI
  ctypes cannot check (an opaque context, variadic calls with structs by value), to make
  what a hundred lines of ``struct`` make here; and its output would change with the
  installed version, where this program is the same bytes everywhere and its tests
  read it instruction by instruction.
- An allow-list: the stronger end state, but CPython, its extension modules and asyncio
  use a hundred-odd calls that change with glibc and Python releases, and each one
  missed breaks user code. The deny-list closes the classes that matter; ENOSYS above
  the reviewed number keeps new calls out.
- ``prctl(PR_SET_SECCOMP)``: it takes no flags; ``seccomp(2)`` with
  SECCOMP_FILTER_FLAG_TSYNC filters every thread of the process or fails.
- Killing the process on every refusal: a user would see a dead process where an error
  can name the call. Killing is kept for the other ABIs.
- SECCOMP_RET_TRAP or a user-space supervisor (SECCOMP_RET_USER_NOTIF): a handler inside
  the sandbox is the attacker's to replace, and a supervisor is one more process per
  call, for nothing a fixed verdict does not already give.

Honest limits:

- It is a deny-list: a call not listed is allowed, with any arguments. The kernel's own
  permission checks, the unprivileged uid, the rlimits and the namespaces stand behind
  it, and each of them holds without it.
- seccomp sees numbers and arguments, never paths or memory: ``/proc/<pid>/mem`` or a
  device file are kept from the sandbox by the kernel's ptrace access checks, the PID
  namespace and the read-only filesystem, not by this filter.
- Sockets a process already holds are covered only as far as ``connect``, ``bind``,
  ``listen`` and ``accept`` go: a datagram socket, even one of a connected pair, could
  still ``sendto`` any Unix datagram socket by path. A sandbox process inherits only
  pipes; a channel it is ever given must be a stream (or seqpacket) socket. A warm
  worker's channel to the runner is one (an AF_UNIX stream socket the runner made):
  ``recvmsg`` on it, which brings each call's fds, needs nothing the filter refuses.
- Only x86_64 and aarch64, for a 64-bit little-endian interpreter: elsewhere program()
  returns None and the layer is reported inactive.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DESCRIPTION = (
    "seccomp-BPF deny-list: no socket (any family), connect, bind, listen or accept, "
    "only AF_UNIX stream socketpairs; no namespaces (unshare, setns, clone with "
    "CLONE_NEW*, clone3) or mounts; no exec; no System V or POSIX IPC (memory the address "
    "space limit misses); no ptrace, process_vm_*, pidfd_getfd or kcmp; no POSIX timers "
    "or fcntl(F_SETSIG) (signals chosen for later); "
    "no bpf, perf_event_open, userfaultfd, io_uring, keyrings, personality changes, "
    "modules, kexec, reboot, swap, clocks, quotas, file handles, syslog or TIOCSTI; "
    "calls newer than Linux 6.17 fail with ENOSYS; other ABIs (i386, x32) kill"
)

# Classic BPF opcodes (linux/bpf_common.h), as the kernel's seccomp filters accept them.
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = the 32-bit word of seccomp_data at k
_ALU_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K: A &= k
_JA = 0x05  # BPF_JMP | BPF_JA: skip k instructions
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: skip jt if A == k, else jf
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K: skip jt if A >= k, else jf
_RET_K = 0x06  # BPF_RET | BPF_K: the verdict k
_INSTRUCTION = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
# How far a conditional jump reaches: jt and jf are bytes.
_MAX_SKIP = 255

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
_NR, _ARCH, _ARGS = 0, 4, 16
_LOW32 = 0xFFFFFFFF

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_REFUSE = _RET_ERRNO | errno.EPERM
_ABSENT = _RET_ERRNO | errno.ENOSYS

_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_SECCOMP_MODE_FILTER = 2  # "Seccomp:" in /proc/self/status

_AF_UNIX = 1
_SOCK_STREAM = 1
_SOCK_TYPE_MASK = 0xF  # the rest of socketpair's type is SOCK_NONBLOCK and SOCK_CLOEXEC
_SOCK_CLOEXEC = 0o2000000
# CLONE_NEWNS (0x20000) and CLONE_NEWCGROUP, _NEWUTS, _NEWIPC, _NEWUSER, _NEWPID and
# _NEWNET (0x02000000 to 0x40000000). clone() takes no CLONE_NEWTIME (0x80): its low byte
# is the exit signal.
_CLONE_NEW_ANY = 0x7E020000
_PERSONALITY_QUERY = 0xFFFFFFFF
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C  # the same on x86_64 and aarch64
_USERFAULTFD_IOC_NEW = 0xAA00  # _IO(0xAA, 0): a userfaultfd from /dev/userfaultfd
_F_SETSIG = 10  # the signal an fd's events (O_ASYNC, leases, dnotify) send

# The last system call the lists below were reviewed against: file_setattr, Linux 6.17.
# Calls from 424 on have the same number on every architecture.
_LAST_REVIEWED = 469

# The numbers of the calls named below (and of seccomp, to install it), from the kernel's
# tables; tests/sandbox/test_seccomp.py checks them against the headers.
_COMMON = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount_setattr": 442,
    "quotactl_fd": 443,
    "process_mrelease": 448,
    "statmount": 457,
    "listmount": 458,
    "open_tree_attr": 467,
}
_X86_64 = {
    **_COMMON,
    "fcntl": 72,
    "timer_create": 222,
    "shmget": 29,
    "shmat": 30,
    "shmctl": 31,
    "semget": 64,
    "semop": 65,
    "semctl": 66,
    "shmdt": 67,
    "msgget": 68,
    "msgsnd": 69,
    "msgrcv": 70,
    "msgctl": 71,
    "semtimedop": 220,
    "mq_open": 240,
    "mq_unlink": 241,
    "mq_timedsend": 242,
    "mq_timedreceive": 243,
    "mq_notify": 244,
    "mq_getsetattr": 245,
    "ioctl": 16,
    "socket": 41,
    "connect": 42,
    "accept": 43,
    "bind": 49,
    "listen": 50,
    "socketpair": 53,
    "clone": 56,
    "execve": 59,
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "personality": 135,
    "ustat": 136,
    "sysfs": 139,
    "vhangup": 153,
    "modify_ldt": 154,
    "pivot_root": 155,
    "_sysctl": 156,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "create_module": 174,
    "init_module": 175,
    "delete_module": 176,
    "get_kernel_syms": 177,
    "query_module": 178,
    "quotactl": 179,
    "nfsservctl": 180,
    "getpmsg": 181,
    "putpmsg": 182,
    "afs_syscall": 183,
    "tuxcall": 184,
    "security": 185,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "vserver": 236,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "migrate_pages": 256,
    "unshare": 272,
    "get_robust_list": 274,
    "move_pages": 279,
    "accept4": 288,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "fanotify_mark": 301,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "seccomp": 317,
    "kexec_file_load": 320,
    "bpf": 321,
    "execveat": 322,
    "userfaultfd": 323,
}
# The generic table (asm-generic/unistd.h), which aarch64 uses.
_AARCH64 = {
    **_COMMON,
    "fcntl": 25,
    "timer_create": 107,
    "mq_open": 180,
    "mq_unlink": 181,
    "mq_timedsend": 182,
    "mq_timedreceive": 183,
    "mq_notify": 184,
    "mq_getsetattr": 185,
    "msgget": 186,
    "msgctl": 187,
    "msgrcv": 188,
    "msgsnd": 189,
    "semget": 190,
    "semctl": 191,
    "semtimedop": 192,
    "semop": 193,
    "shmget": 194,
    "shmctl": 195,
    "shmat": 196,
    "shmdt": 197,
    "lookup_dcookie": 18,
    "ioctl": 29,
    "umount2": 39,
    "mount": 40,
    "pivot_root": 41,
    "nfsservctl": 42,
    "chroot": 51,
    "vhangup": 58,
    "quotactl": 60,
    "acct": 89,
    "personality": 92,
    "unshare": 97,
    "get_robust_list": 100,
    "kexec_load": 104,
    "init_module": 105,
    "delete_module": 106,
    "clock_settime": 112,
    "syslog": 116,
    "ptrace": 117,
    "reboot": 142,
    "sethostname": 161,
    "setdomainname": 162,
    "settimeofday": 170,
    "adjtimex": 171,
    "socket": 198,
    "socketpair": 199,
    "bind": 200,
    "listen": 201,
    "accept": 202,
    "connect": 203,
    "add_key": 217,
    "request_key": 218,
    "keyctl": 219,
    "clone": 220,
    "execve": 221,
    "swapon": 224,
    "swapoff": 225,
    "migrate_pages": 238,
    "move_pages": 239,
    "perf_event_open": 241,
    "accept4": 242,
    "fanotify_init": 262,
    "fanotify_mark": 263,
    "name_to_handle_at": 264,
    "open_by_handle_at": 265,
    "clock_adjtime": 266,
    "setns": 268,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "kcmp": 272,
    "finit_module": 273,
    "seccomp": 277,
    "bpf": 280,
    "execveat": 281,
    "userfaultfd": 282,
    "kexec_file_load": 294,
}

# Refused outright (EPERM), by class.
_REFUSED: Mapping[str, tuple[str, ...]] = {
    "network": ("socket", "connect", "bind", "listen", "accept", "accept4"),
    "signals the kernel sends later": ("timer_create",),
    "namespaces and mounts": (
        "unshare",
        "setns",
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "open_tree",
        "open_tree_attr",
        "move_mount",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "statmount",
        "listmount",
    ),
    "other processes": (
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "pidfd_getfd",
        "kcmp",
        "process_madvise",
        "process_mrelease",
        "move_pages",
        "migrate_pages",
        "get_robust_list",
    ),
    "exec": ("execve", "execveat", "uselib"),
    # Memory outside the address-space limit: segments, queues and semaphores outlive
    # every detach until the call's IPC namespace goes, uncounted by RLIMIT_AS.
    "System V and POSIX IPC": (
        "shmget",
        "shmat",
        "shmdt",
        "shmctl",
        "msgget",
        "msgsnd",
        "msgrcv",
        "msgctl",
        "semget",
        "semop",
        "semtimedop",
        "semctl",
        "mq_open",
        "mq_unlink",
        "mq_timedsend",
        "mq_timedreceive",
        "mq_notify",
        "mq_getsetattr",
    ),
    "kernel": (
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "add_key",
        "request_key",
        "keyctl",
        "modify_ldt",
        "iopl",
        "ioperm",
        "lookup_dcookie",
        "syslog",
    ),
    "host administration": (
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "quotactl",
        "quotactl_fd",
        "name_to_handle_at",
        "open_by_handle_at",
        "fanotify_init",
        "fanotify_mark",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "sethostname",
        "setdomainname",
        "vhangup",
        "nfsservctl",
    ),
    "obsolete": (
        "_sysctl",
        "create_module",
        "get_kernel_syms",
        "query_module",
        "afs_syscall",
        "tuxcall",
        "security",
        "vserver",
        "getpmsg",
        "putpmsg",
        "ustat",
        "sysfs",
    ),
}


@dataclass(frozen=True)
class _Arg:
    """A call's condition: the low 32 bits of argument ``index``, masked, among ``values``.

    With ``among=False``, the condition is that they are not among them.
    """

    index: int
    values: tuple[int, ...]
    mask: int = _LOW32
    among: bool = True


# Allowed only when every condition holds, refused (EPERM) otherwise.
_CONDITIONAL: Mapping[str, tuple[_Arg, ...]] = {
    "socketpair": (_Arg(0, (_AF_UNIX,)), _Arg(1, (_SOCK_STREAM,), mask=_SOCK_TYPE_MASK)),
    "clone": (_Arg(0, (0,), mask=_CLONE_NEW_ANY),),
    "personality": (_Arg(0, (_PERSONALITY_QUERY,)),),
    "ioctl": (_Arg(1, (_TIOCSTI, _TIOCLINUX, _USERFAULTFD_IOC_NEW), among=False),),
    "fcntl": (_Arg(1, (_F_SETSIG,), among=False),),
}
# Not implemented, as far as the sandbox can tell (ENOSYS): libc falls back to clone.
_ABSENT_CALLS = ("clone3",)

# A verdict (a SECCOMP_RET_* value) or the conditions of a call allowed only with them.
_Action = int | tuple[_Arg, ...]


@dataclass(frozen=True)
class _Arch:
    """A system-call ABI the filter knows.

    Attributes:
        name: The machine, as os.uname() gives it.
        audit_arch: The AUDIT_ARCH_* value of seccomp_data.arch for this ABI.
        numbers: The numbers of the calls named above that it has.
        kill_from: Numbers from here up belong to another ABI (x32's on x86_64).
    """

    name: str
    audit_arch: int
    numbers: Mapping[str, int]
    kill_from: int | None = None


_ARCHES = {
    "x86_64": _Arch("x86_64", 0xC000003E, _X86_64, kill_from=0x40000000),
    "aarch64": _Arch("aarch64", 0xC00000B7, _AARCH64),
}

_libc = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


@functools.cache
def program() -> bytes | None:
    """The filter for this process's architecture, compiled once; None where there is none.

    None means the layer is not available here (see the module's docstring): report it
    inactive.
    """
    arch = _this_arch()
    return None if arch is None else _compile(arch)


def install(program: bytes) -> None:
    """Put ``program`` on this process and its threads for good; the last step before user code.

    The process must have set no_new_privs (or hold CAP_SYS_ADMIN). Everything it runs
    afterwards, and every process it forks, is filtered.

    Raises:
        OSError: The kernel refused the filter, or a thread could not take it; the
            process must not run user code then.
    """
    arch = _this_arch()
    if arch is None:
        raise OSError(errno.ENOSYS, f"seccomp: no filter for {os.uname().machine}")
    fprog = _SockFprog(len(program) // _INSTRUCTION.size, program)
    result = _libc.syscall(
        ctypes.c_long(arch.numbers["seccomp"]),
        ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(_SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(fprog),
    )
    if result == -1:
        code = ctypes.get_errno()
        hint = " (set no_new_privs first)" if code == errno.EACCES else ""
        raise OSError(code, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(code)}{hint}")
    if result:
        # TSYNC's failure: the id of a thread under other filters; nothing was installed.
        raise OSError(errno.EBUSY, f"seccomp: thread {result} cannot take the filter")


def observe() -> dict[str, int]:
    """What a sandbox process sees of system-call filters, from inside; imports nothing.

    Returns:
        ``mode`` and ``filters``, the Seccomp and Seccomp_filters of /proc/self/status
        (-1 when missing), and ``socket_errno``: what socket(AF_UNIX) failed with, 0 when
        it succeeded.
    """
    status: dict[str, int] = {"Seccomp": -1, "Seccomp_filters": -1}
    with open("/proc/self/status") as file:
        for line in file:
            name, _, value = line.partition(":")
            if name in status:
                status[name] = int(value)
    # Through libc: socket.socket would raise, and a sandbox may be out of fds for one.
    fd = _libc.socket(_AF_UNIX, _SOCK_STREAM | _SOCK_CLOEXEC, 0)
    if fd >= 0:
        os.close(fd)
    return {
        "mode": status["Seccomp"],
        "filters": status["Seccomp_filters"],
        "socket_errno": 0 if fd >= 0 else ctypes.get_errno(),
    }


def active(facts: Mapping[str, int]) -> bool:
    """Whether what observe() saw shows this filter in effect.

    A filter is there and refuses socket(AF_UNIX), which no other layer does and which
    container runtimes' default filters allow.
    """
    return facts["mode"] == _SECCOMP_MODE_FILTER and facts["socket_errno"] == errno.EPERM


@functools.cache
def _this_arch() -> _Arch | None:
    # The machine alone is not enough: a 32-bit or x32 interpreter on a 64-bit kernel
    # calls through an ABI the filter kills, and the argument words are little-endian.
    if sys.platform != "linux" or struct.calcsize("P") != 8 or sys.byteorder != "little":
        return None
    return _ARCHES.get(os.uname().machine)


def _compile(arch: _Arch) -> bytes:
    """The program for ``arch``: the ABI check, then the verdict by number."""
    code = _Assembler()
    kill = code.emit(_RET_K, _RET_KILL_PROCESS)
    _decide(code, _runs(arch))
    by_number = code.emit(_LD_W_ABS, _NR)
    code.jump(_JEQ_K, arch.audit_arch, by_number, kill)
    code.emit(_LD_W_ABS, _ARCH)
    return code.program()


def _runs(arch: _Arch) -> list[tuple[int, _Action]]:
    """(first number, action) of each run of numbers that share one, covering all 2**32."""
    actions: dict[int, _Action] = {}
    for names in _REFUSED.values():
        actions.update((arch.numbers[name], _REFUSE) for name in names if name in arch.numbers)
    actions.update((arch.numbers[name], rule) for name, rule in _CONDITIONAL.items())
    actions.update((arch.numbers[name], _ABSENT) for name in _ABSENT_CALLS)
    runs: list[tuple[int, _Action]] = []
    for number in range(_LAST_REVIEWED + 1):
        action = actions.get(number, _RET_ALLOW)
        if not runs or runs[-1][1] != action:
            runs.append((number, action))
    runs.append((_LAST_REVIEWED + 1, _ABSENT))
    if arch.kill_from is not None:
        runs.append((arch.kill_from, _RET_KILL_PROCESS))
    return runs


def _decide(code: _Assembler, runs: Sequence[tuple[int, _Action]]) -> int:
    """Code that takes the action of the run holding A, the call's number: a binary search."""
    if len(runs) == 1:
        return _act(code, runs[0][1])
    middle = len(runs) // 2
    upper = _decide(code, runs[middle:])
    lower = _decide(code, runs[:middle])
    return code.jump(_JGE_K, runs[middle][0], upper, lower)


def _act(code: _Assembler, action: _Action) -> int:
    if isinstance(action, int):
        return code.emit(_RET_K, action)
    refuse = code.emit(_RET_K, _REFUSE)
    allow = code.emit(_RET_K, _RET_ALLOW)
    for condition in reversed(action):
        allow = _test(code, condition, allow, refuse)
    return allow


def _test(code: _Assembler, condition: _Arg, passed: int, failed: int) -> int:
    """Code that goes on to ``passed`` when ``condition`` holds, and to ``failed`` if not."""
    found, missing = (passed, failed) if condition.among else (failed, passed)
    for value in reversed(condition.values):
        missing = code.jump(_JEQ_K, value, found, missing)
    if condition.mask != _LOW32:
        code.emit(_ALU_AND_K, condition.mask)
    # Little-endian: an argument's low half comes first.
    return code.emit(_LD_W_ABS, _ARGS + 8 * condition.index)


class _Assembler:
    """Builds a BPF program backwards, so that every (forward) jump's target is known.

    An address counts instructions from the program's end: its last instruction is 1.
    """

    def __init__(self) -> None:
        self._reversed: list[bytes] = []

    def emit(self, opcode: int, k: int, jt: int = 0, jf: int = 0) -> int:
        """Put an instruction in front of those emitted so far; its address."""
        self._reversed.append(_INSTRUCTION.pack(opcode, jt, jf, k))
        return len(self._reversed)

    def jump(self, opcode: int, k: int, true: int, false: int) -> int:
        """A conditional jump to the instructions at ``true`` and ``false``; its address."""
        true = self._within_reach(true)
        false = self._within_reach(false)
        here = len(self._reversed)
        return self.emit(opcode, k, here - true, here - false)

    def _within_reach(self, target: int) -> int:
        # One short of the limit: the other target's trampoline may still come between.
        if len(self._reversed) - target < _MAX_SKIP:
            return target
        return self.emit(_JA, len(self._reversed) - target)

    def program(self) -> bytes:
        """The instructions, first to last, as the kernel takes them (struct sock_filter[])."""
        return b"".join(reversed(self._reversed))
