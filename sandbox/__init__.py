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
3. The process (``_runner`` spawns ``_child``): a new session, an empty environment, a
   private working directory, rlimits on address space, CPU, file size, open files,
   core dumps and processes; the whole process group is killed on any limit.

Approaches not taken, and why:

- ``exec`` in the server process or a thread: it cannot be stopped or bounded, and it
  shares memory with everything else.
- ``subprocess`` / ``asyncio.create_subprocess_exec``: ``preexec_fn`` is unsafe in a
  process with threads, and asyncio's child watcher is process-global state; posix_spawn
  plus a pidfd needs neither.
- Forking the server: forking a process that runs gRPC threads is unsafe. A warm,
  single-threaded host that forks per call is the planned replacement for spawning;
  ``_child.run_job`` is written to be called from such a fork.

``peak_memory_bytes`` is the sandbox process's own VmHWM; only for a process killed
before it reported does it fall back to ``wait4``'s ``ru_maxrss``, which Linux starts from
the spawning server's resident size, so it is then an upper bound.
"""

from ._models import DEFAULT_ALLOWED_IMPORTS, Job, Limits, RunResult, RunStatus
from ._runner import run
from ._validate import CheckedSource, SourceIssue, check_source

__all__ = [
    "DEFAULT_ALLOWED_IMPORTS",
    "CheckedSource",
    "Job",
    "Limits",
    "RunResult",
    "RunStatus",
    "SourceIssue",
    "check_source",
    "run",
]
