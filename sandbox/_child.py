"""The sandbox process: run one job under its limits and report on fd 3.

The runner starts it as ``python -I -m toolvault.sandbox._child WORKDIR PLAN [HIDDEN...]``
with the job on stdin, stdout and stderr on fds 1 and 2, and the report pipe on fd 3.
Everything before the process confines itself (``_isolation``) is trusted bootstrap:
reading the job, compiling it, importing the modules it may use. run_job is the part a
forked sandbox host can call directly.

The report is one JSON object with the string members ``status`` ("ok", "error" or
"memory_limit"), ``result_json``, ``error_type``, ``error_message`` and ``traceback``,
and the integer ``peak_memory_bytes`` (missing when memory ran out while reporting).
"""

import asyncio
import contextlib
import importlib
import inspect
import io
import json
import linecache
import os
import sys
import traceback
from collections.abc import Mapping
from types import CodeType
from typing import Any, NoReturn, cast

from RestrictedPython.compile import compile_restricted_exec

from ._globals import restricted_globals
from ._isolation import Plan, isolate, set_limits
from ._models import (
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    REPORT_FD,
    Job,
    decode_job,
)
from ._validate import RestrictingPolicy

# Imported on first use by allowed modules (datetime.strptime); after the switch to an
# unprivileged uid the interpreter's files may not be readable any more.
_LAZY_IMPORTS = ("_strptime",)


def main() -> NoReturn:
    """Read the job from stdin and run it confined as the command line says."""
    job = decode_job(sys.stdin.buffer.read())
    workdir, plan, *hidden = sys.argv[1:]
    run_job(job, Plan.from_json(plan), workdir, hidden)


def run_job(job: Job, plan: Plan, workdir: str, hidden: list[str]) -> NoReturn:
    """Run ``job`` in this process, confined by ``plan`` and under its limits, then exit.

    The report goes to fd 3. With namespaces, only a child of this process returns from
    the confinement to run the job (see ``_isolation``).
    """
    # Encoded now: when memory runs out there may be none left to encode it with.
    out_of_memory = _encode(_report("memory_limit", error_type="MemoryError"))
    # So that what was printed before a kill for time or output still reaches the runner.
    cast(io.TextIOWrapper, sys.stdout).reconfigure(line_buffering=True)
    try:
        data = _encode(
            {**_execute(job, plan, workdir, hidden), "peak_memory_bytes": _peak_memory_bytes()}
        )
        sys.stdout.flush()
    except MemoryError:
        data = out_of_memory
    with os.fdopen(REPORT_FD, "wb") as report:
        report.write(data)
    # Skip interpreter shutdown: it would run the user's __del__ methods and atexit hooks.
    os._exit(0)


def _execute(job: Job, plan: Plan, workdir: str, hidden: list[str]) -> dict[str, str]:
    try:
        compiled = compile_restricted_exec(job.source, job.filename, policy=RestrictingPolicy)
    except (SyntaxError, MemoryError, RecursionError) as exc:
        return _report("error", error_type=type(exc).__name__, error_message=str(exc))
    if compiled.code is None:
        return _report("error", error_type="SyntaxError", error_message="; ".join(compiled.errors))
    try:
        kwargs = json.loads(job.args_json)
    except ValueError as exc:
        message = f"arguments are not valid JSON: {exc}"
        return _report("error", error_type="ValueError", error_message=message)
    if not isinstance(kwargs, dict):
        message = f"arguments must be a JSON object, not {type(kwargs).__name__}"
        return _report("error", error_type="TypeError", error_message=message)

    lines = job.source.splitlines(keepends=True)
    linecache.cache[job.filename] = (len(job.source), None, lines, job.filename)
    for name in (*job.allowed_imports, *_LAZY_IMPORTS):
        # A module that is not installed fails later, where the user's code imports it.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    namespace = restricted_globals(job.allowed_imports)
    isolate(plan, workdir, hidden)
    set_limits(job.limits)
    try:
        return _report("ok", result_json=_call(compiled.code, namespace, job.entrypoint, kwargs))
    except BaseException as exc:
        return _report(
            "memory_limit" if isinstance(exc, MemoryError) else "error",
            error_type=type(exc).__name__,
            error_message=_message(exc),
            trace=_user_traceback(exc, job.filename),
        )


def _call(
    code: CodeType, namespace: dict[str, Any], entrypoint: str, kwargs: dict[str, Any]
) -> str:
    """Run the module, call the entrypoint and return its result as JSON."""
    exec(code, namespace)
    function = namespace.get(entrypoint)
    if not callable(function):
        raise NameError(f"entrypoint {entrypoint!r} is not defined")
    value = function(**kwargs)
    if inspect.iscoroutine(value):
        value = asyncio.run(value)
    try:
        result = json.dumps(value, ensure_ascii=False, allow_nan=False)
        result.encode()  # lone surrogates pass json.dumps but cannot travel as UTF-8
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"result is not JSON-serializable: {exc}") from None
    return result


def _peak_memory_bytes() -> int:
    """This process's peak resident size (VmHWM).

    Unlike wait4's ru_maxrss, which starts from the spawning server's size, VmHWM belongs
    to the memory map that exec created, so it counts only this process.
    """
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # the user's own __str__ can fail too
        return "<exception str() failed>"


def _user_traceback(exc: BaseException, filename: str) -> str:
    """Python's traceback for ``exc``, keeping only frames in the user's file; "" if none."""
    frames = traceback.StackSummary.extract(
        (frame, line)
        for frame, line in traceback.walk_tb(exc.__traceback__)
        if frame.f_code.co_filename == filename
    )
    if not frames:
        return ""
    parts = ["Traceback (most recent call last):\n", *frames.format()]
    parts += traceback.format_exception_only(exc)
    return "".join(parts)


def _report(
    status: str,
    *,
    result_json: str = "",
    error_type: str = "",
    error_message: str = "",
    trace: str = "",
) -> dict[str, str]:
    return {
        "status": status,
        "result_json": result_json,
        "error_type": error_type,
        "error_message": error_message[:MAX_MESSAGE_CHARS],
        "traceback": trace[-MAX_TRACEBACK_CHARS:],
    }


def _encode(report: Mapping[str, str | int]) -> bytes:
    # Messages may hold lone surrogates; the result cannot (_call checked it).
    return json.dumps(report, ensure_ascii=False).encode("utf-8", "replace")


if __name__ == "__main__":
    main()
