"""Validate and run untrusted Python functions: the sandbox of toolvault.

check_source vets source before it is stored; run executes one call in a fresh process
under memory, CPU, wall-clock and output limits. Both return their findings as values and
raise only for programming errors. The package imports nothing else of toolvault.

Layers, each useful alone:

1. Validation (``_validate``): syntax, RestrictedPython's compile-time restrictions, an
   import allow-list and the entrypoint.
2. A restricted runtime (``_globals``): RestrictedPython's guards, safe builtins and an
   import hook admitting only allowed modules. RestrictedPython says itself that it is
   not a sandbox: allowed modules can still hand out ways around its guards.
3. The process (``_runner`` spawns ``_child``, which applies ``_isolation``): a new
   session, an empty environment, only the pipes as fds, a private working directory,
   an unprivileged uid with no capabilities and no_new_privs, rlimits on address
   space, CPU, file size, open files, core dumps and processes; everything it started
   is killed on any limit.
4. The kernel (``_isolation``), where the host allows it: new network, PID, mount, IPC
   and UTS namespaces (in a user namespace when the server is not root), a read-only
   filesystem. ``isolation_layers`` says which layers a probe sandbox found in effect.

Approaches not taken, and why:

- ``exec`` in the server process or a thread: it cannot be stopped or bounded, and it
  shares memory with everything else.
- ``subprocess`` / ``asyncio.create_subprocess_exec``: ``preexec_fn`` is unsafe in a
  process with threads, and asyncio's child watcher is process-global state; posix_spawn
  plus a pidfd needs neither.
- Forking the server: forking a process that runs gRPC threads is unsafe. A warm,
  single-threaded host that forks per call is the planned replacement for spawning;
  ``_child.run_job`` (with ``_isolation.isolate``) is written to be called from such a fork.
- The ``unshare`` binary in front of the interpreter: one more exec per call, and the
  mounts and the uid switch must happen inside the new namespaces anyway; libc's
  unshare through ctypes does the same in the process itself.
- A user namespace when the server is root: one that maps only root makes
  setuid(65534) fail, and the real root can switch to an unprivileged uid directly.

``peak_memory_bytes`` is the sandbox process's own VmHWM; only for a process killed
before it reported does it fall back to ``wait4``'s ``ru_maxrss``, which Linux starts from
the spawning server's resident size, so it is then an upper bound.
"""

from ._isolation import Layer, detect
from ._models import DEFAULT_ALLOWED_IMPORTS, Job, Limits, RunResult, RunStatus
from ._runner import run
from ._validate import CheckedSource, SourceIssue, check_source


def isolation_layers() -> tuple[Layer, ...]:
    """The process and kernel layers, each active or not, as a probe sandbox found them.

    The probe runs once per process (the first call, or the first run); a layer the
    host does not allow is logged as a WARNING then.
    """
    return detect().layers


__all__ = [
    "DEFAULT_ALLOWED_IMPORTS",
    "CheckedSource",
    "Job",
    "Layer",
    "Limits",
    "RunResult",
    "RunStatus",
    "SourceIssue",
    "check_source",
    "isolation_layers",
    "run",
]
