"""Validate and run untrusted Python functions: the sandbox of toolvault.

check_source vets source before it is stored; SandboxHost.run (or run, on a default host)
executes one call in a process of its own under memory, CPU, wall-clock and output
limits. Both return their findings as values and raise only for programming errors. The
package imports nothing else of toolvault.

How a call runs: the server starts a warm sandbox host (``_host``) once, spawned with
posix_spawn and supervised over a Unix socket (``_runner``). The host imports the runtime
and the allowed modules and confines itself once (the kernel layer's namespaces and a
private root); per call it forks a sandbox process, which confines itself further, reads
its job from a memfd the server wrote (the code the server compiled, marshalled, the
arguments and the values of the secrets its version declares, which the code reads as
``from toolvault import secrets``) and runs the function (``_child.run_job``). The
server owns the call's job, output pipes, the wall clock and the verdict, and parses the
report as hostile input; the host forks, kills and reaps, and never reads a job.

Warm workers: ``SandboxHost.run(job, worker_key=...)`` runs the call in a worker the host
forked and confined once (``_child.serve_calls``), which serves only calls with that key
(one function version of one namespace, for the server), one at a time, with fresh
globals, its own pipes and an empty working directory per call; the server sends it each
job and the call's pipes over a socket of its own, reads the call's CPU time and peak
memory from the kernel (/proc), and retires it after any outcome but OK, after a number
of calls, when idle, on ``retire(key)`` or for room in the bounded pool. Without a key
(or without room) a call runs fresh, forked for it alone. SECURITY.md says what survives
between the calls of a worker.

Layers, each useful alone:

1. Validation (``_validate``): syntax, RestrictedPython's compile-time restrictions, an
   import allow-list and the entrypoint.
2. A restricted runtime (``_globals``): RestrictedPython's guards, safe builtins and an
   import hook admitting only allowed modules. RestrictedPython says itself that it is
   not a sandbox: allowed modules can still hand out ways around its guards.
3. The process (``_isolation.confine`` and ``set_limits`` in each forked sandbox): a new
   session, an empty environment, only the pipes as fds, a private working directory,
   an unprivileged uid of its own per concurrent call with no capabilities and
   no_new_privs, rlimits on address space, CPU, file size, open files, core dumps and
   processes; everything it started is killed on any limit.
4. The kernel (``_isolation.enter_host`` once in the host, ``fork_sandbox`` and
   ``seal`` per call), where the machine allows it, built to hold with the language
   layer gone (full Python, ``os`` and ``ctypes`` in hand): new network, PID, mount, IPC
   and UTS namespaces (in a user namespace when the server is not root), a private root
   holding only the standard library, /proc, four devices and the working directory, a
   PID namespace of its own for every call, so calls cannot see or signal one another,
   and a seccomp filter (``_seccomp``) installed right before user code. No job passes
   through the host's memory, so a sandbox, a copy of it, holds no other call's data.
   ``isolation_layers`` says which layers a probe sandbox, forked by a host like any
   call, found in effect.

Egress (``_door``): a sandbox never has a network of its own. A call that may reach hosts
(``SandboxHost.run(job, egress=...)``) is handed one more fd, a door whose other end the
runner holds: it connects on the sandbox's behalf to the allowed hosts' public addresses
only, relays the bytes under the call's limits, and records every request
(``RunResult.egress``). The sandbox's ``socket.create_connection`` asks the door.

Approaches not taken, and why:

- ``exec`` in the server process or a thread: it cannot be stopped or bounded, and it
  shares memory with everything else.
- Forking the server: forking a process that runs gRPC threads is unsafe; the host is a
  separate, single-threaded process that never runs user code itself.
- A fresh interpreter per call (``python -m toolvault.sandbox._child``, kept as the
  benchmark's baseline): about 100 ms a call here, almost all of it interpreter start-up
  and imports, against a few ms for a fork of the warm host.
- ``subprocess`` / ``asyncio.create_subprocess_exec`` to start the host:
  ``preexec_fn`` is unsafe in a process with threads, and asyncio's child watcher is
  process-global state; posix_spawn plus a pidfd needs neither.
- Sharing one PID namespace (and one uid) among the calls: a call could then see the
  others in /proc and signal them. unshare(CLONE_NEWPID) before each fork (and setns
  back after it) gives each call its own; one uid per slot keeps them apart even
  without namespaces.
- Compiling in each sandbox: RestrictedPython's compiler costs far more than a fork.
  Compiling (and caching) in the host, as before: every sandbox, a copy of the host,
  then held every other function's source and code, and the jobs' bytes that had passed
  through the host stayed in its freed memory. The server compiles once per version
  and sends the code marshalled with each job (unmarshalling costs microseconds); the
  host builds only the restricted globals once per allow-list, which each fork copies
  and which hold nothing of any call.
- Scrubbing the host's memory before each fork: freed memory is not zeroed, and
  extension modules stay loaded; a host that never holds a job needs no scrubbing.
- ``chroot`` instead of ``pivot_root``: the old root stays mounted underneath, a way
  back for a process with capabilities; after pivot_root it is detached.
- The ``unshare`` binary in front of the interpreter: one more exec, and the mounts and
  the uid switch must happen inside the new namespaces anyway; libc's unshare through
  ctypes does the same in the process itself.
- A user namespace when the server is root: one that maps only root makes setuid to an
  unprivileged uid fail, and the real root can switch to one directly.

Files: a job's files travel in its memfd, after the job's header; the sandbox writes
them into its working directory (mode 0444) and makes an empty ``out/`` before user code
runs, and after it sends back what ``out/`` holds (regular files only, never through a
symlink, within the job's limits) in its report, which the runner checks like the rest.
User code opens them with an ``open`` of the language layer's own (``_globals``).

``peak_memory_bytes`` is the larger of what the sandbox process reported (its VmHWM,
which includes the pages it still shares with the host it was forked from, about 20 MiB)
and wait4's ``ru_maxrss``, the kernel's own figure: a report can raise it, never lower it.
"""

from ._door import (
    EGRESS_IMPORTS,
    EGRESS_PRELOAD,
    Egress,
    EgressError,
    EgressRecord,
    EgressRule,
    parse_rules,
)
from ._isolation import Isolation, Layer, Plan
from ._models import (
    DEFAULT_ALLOWED_IMPORTS,
    MAX_FILES_BYTES,
    OUTPUT_DIR,
    File,
    Job,
    Limits,
    RunResult,
    RunStatus,
    file_name_problem,
)
from ._runner import HostFailed, SandboxHost, detect, run
from ._validate import CheckedSource, SourceIssue, check_source


def isolation_layers() -> tuple[Layer, ...]:
    """The process and kernel layers, each active or not, as a probe sandbox found them.

    The probe (a sandbox host started for it, and a sandbox it forks) runs once per
    process; a layer the machine does not allow is logged as a WARNING then. Call it
    from synchronous code or a thread: it runs an event loop of its own.
    """
    return detect().layers


__all__ = [
    "DEFAULT_ALLOWED_IMPORTS",
    "EGRESS_IMPORTS",
    "EGRESS_PRELOAD",
    "MAX_FILES_BYTES",
    "OUTPUT_DIR",
    "CheckedSource",
    "Egress",
    "EgressError",
    "EgressRecord",
    "EgressRule",
    "File",
    "HostFailed",
    "Isolation",
    "Job",
    "Layer",
    "Limits",
    "Plan",
    "RunResult",
    "RunStatus",
    "SandboxHost",
    "SourceIssue",
    "check_source",
    "file_name_problem",
    "isolation_layers",
    "parse_rules",
    "run",
]
