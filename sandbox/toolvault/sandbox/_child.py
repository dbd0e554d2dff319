"""The sandbox process: run one job under its limits and report on fd 3.

run_job runs in the process a sandbox host forks per call (serve_calls in a warm worker
the host forks once for many calls of one function version), already confined
(``_isolation``). It reads its job from fd 0 (encode_job: the arguments, the source for
tracebacks and the code the server compiled, marshalled), so that no job ever passes
through the host's memory, which every later sandbox is forked from. What comes before
the confinement is trusted bootstrap: importing the modules the code may use (preload)
and building its globals; the host does that ahead of the fork.

The report is one JSON object with the string members ``status`` ("ok", "error" or
"memory_limit"), ``result_json``, ``error_type``, ``error_message`` and ``traceback``,
and the integer ``peak_memory_bytes`` (missing when memory ran out while reporting);
unless memory ran out, ``files``: what the call left in ``out/``, a list of [name,
base64 content] pairs, and when those broke a rule, ``files_over`` (past a limit) or
``files_problem`` (not a regular file, a bad name) with a sentence saying which.
Whatever code escaped the language layer writes there instead, so the runner parses it
as hostile input.

Before user code, the job's files are written into the working directory, mode 0444,
and an empty ``out/`` is made there; a warm worker's wipe after the call takes both.
"""

import asyncio
import base64
import contextlib
import fcntl
import importlib
import inspect
import io
import json
import linecache
import marshal
import math
import os
import resource
import shutil
import signal
import socket
import stat
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import CodeType, ModuleType
from typing import Any, NoReturn, cast

from RestrictedPython.compile import compile_restricted_exec

from . import _door
from ._globals import SECRETS_GLOBAL, secrets_module
from ._isolation import Plan, seal, set_limits
from ._models import (
    CPU_LIMIT_EXIT,
    MAX_ERROR_TYPE_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    OUTPUT_DIR,
    REPORT_FD,
    File,
    Job,
    Limits,
    cpu_limit_seconds,
    decode_job,
    file_name_problem,
    job_fields,
)
from ._modules import USER_MODULE
from ._validate import RestrictingTransformer, source_lines

# Imported on first use by allowed modules (datetime.strptime); after the switch to an
# unprivileged uid the interpreter's files may not be readable any more.
_LAZY_IMPORTS = ("_strptime",)


JOB_FD = 0
# Never through a symlink, never inherited.
_NEW_FILE = os.O_NOFOLLOW | os.O_CLOEXEC
# Where a sandbox forked for a call has its door to the network, when it has one.
DOOR_FD = 4
# A warm worker's end of its channel to the runner: where a per-call sandbox has its job.
CHANNEL_FD = JOB_FD
# What a worker sends on its channel after a call: ready for the next, or retire me.
CALL_DONE = b"d"
CALL_DONE_DIRTY = b"x"
# The job's memfd, then the call's stdout, stderr and report pipes, then its door if any.
_FDS_PER_CALL = 4
_FDS_WITH_DOOR = 5
# The trusted call a spare runs before its call, to fault in the pages a call touches.
WARM_UP_SOURCE = "def main():\n    return None\n"
WARM_UP_FILENAME = "<warm-up>"
_LENGTH_BYTES = 4


@dataclass(frozen=True)
class Program:
    """A job's source compiled as the sandbox runs it, or why it does not compile.

    Attributes:
        code: The module's code, marshalled; empty if it does not compile.
        error_type: Why not, e.g. ``"SyntaxError"``; ``""`` when it compiles.
        error_message: What the compiler said.
    """

    code: bytes
    error_type: str
    error_message: str


def compile_job(source: str, filename: str, *, restricted: bool = True) -> Program:
    """Compile ``source`` as the sandbox runs it; a failure is a value.

    Args:
        source: The module source.
        filename: The name tracebacks give it.
        restricted: False only for the test suite's runs without the language layer.
    """
    try:
        if not restricted:
            return Program(marshal.dumps(compile(source, filename, "exec")), "", "")
        compiled = compile_restricted_exec(source, filename, policy=RestrictingTransformer)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        return Program(b"", type(exc).__name__, str(exc))
    if compiled.code is None:
        return Program(b"", "SyntaxError", "; ".join(compiled.errors))
    return Program(marshal.dumps(compiled.code), "", "")


def encode_job(job: Job, program: Program) -> bytes:
    """The job as a sandbox process reads it: a length, the job as JSON, its files, the code.

    The files' contents follow the JSON header one after the other (the header gives
    their sizes), so that they never pass through the host either.
    """
    header = json.dumps(
        {
            **job_fields(job),
            "error_type": program.error_type,
            "error_message": program.error_message,
        }
    ).encode("utf-8", "surrogatepass")
    return b"".join(
        (
            len(header).to_bytes(_LENGTH_BYTES, "big"),
            header,
            *(file.content for file in job.files),
            program.code,
        )
    )


def read_job(fd: int) -> tuple[Job, Program]:
    """Read the job that encode_job wrote from ``fd`` (to its end), then close ``fd``."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    data = b"".join(chunks)
    end = _LENGTH_BYTES + int.from_bytes(data[:_LENGTH_BYTES], "big")
    fields = json.loads(data[_LENGTH_BYTES:end].decode("utf-8", "surrogatepass"))
    code = end + sum(size for _, size in fields["files"])
    program = Program(data[code:], fields.pop("error_type"), fields.pop("error_message"))
    return decode_job(fields, data[end:code]), program


def preload(modules: Iterable[str]) -> None:
    """Import ``modules`` and those allowed modules import lazily, before the confinement."""
    for name in (*modules, *_LAZY_IMPORTS):
        # A module that is not installed fails later, where the user's code imports it.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def run_job(
    job: Job, program: Program, module: ModuleType, plan: Plan, *, door: bool = False
) -> NoReturn:
    """Run ``job`` in this confined process under its limits, report on fd 3 and exit.

    Args:
        job: What to run.
        program: ``job.source`` compiled.
        module: Fresh globals for the code (restricted_module), this process's own.
        plan: How the process is confined: its system-call filter goes on last.
        door: Whether the call's door to the network is on DOOR_FD.
    """
    # Encoded now: when memory runs out there may be none left to encode it with.
    out_of_memory = _encode(_report("memory_limit", error_type="MemoryError"))
    # So that what was printed before a kill for time or output still reaches the runner.
    cast(io.TextIOWrapper, sys.stdout).reconfigure(line_buffering=True)
    set_limits(job.limits, kept_fds=DOOR_FD + 1 if door else DOOR_FD)
    _door.install()
    _door.enter(DOOR_FD if door else None)
    seal(plan)
    data = _run(job, program, module, out_of_memory)
    with os.fdopen(REPORT_FD, "wb") as report:
        report.write(data)
    # Skip interpreter shutdown: it would run the user's __del__ methods and atexit hooks.
    os._exit(0)


def serve_calls(
    limits: Limits,
    prepared: ModuleType,
    plan: Plan,
    cpu_hard_s: int,
    warm_up: bytes = b"",
) -> NoReturn:
    """Serve the calls of one function version, one at a time, in this confined worker.

    Set up once: the rlimits (``limits``, with ``cpu_hard_s`` as the hard CPU limit, the
    bound of the worker's whole life) and the system-call filter. Then, per call, the
    runner sends one byte on the channel (fd 0) with the job's memfd and the call's
    stdout, stderr and report pipes attached; the worker runs the job with a fresh copy
    of ``prepared`` as its globals and a soft CPU limit of what it used so far plus the
    call's budget, writes the report, closes the call's fds (the runner's EOF), wipes the
    working directory and sends CALL_DONE (CALL_DONE_DIRTY if something stayed there).
    It exits when the runner closes the channel.

    A spare (``warm_up``: a job of WARM_UP_SOURCE, encoded) first serves that trusted
    no-op exactly as a call, from a memfd of its own, with /dev/null as its stdout,
    stderr and report, and sends the same byte: the pages a call touches are then its
    own, off its one call's path.
    """
    channel = socket.socket(fileno=CHANNEL_FD)
    out_of_memory = _encode(_report("memory_limit", error_type="MemoryError"))
    cast(io.TextIOWrapper, sys.stdout).reconfigure(line_buffering=True)
    set_limits(limits, cpu_hard_s=cpu_hard_s)
    # The init of a PID namespace ignores a SIGXCPU it has no handler for; a worker must
    # stop at each call's soft limit. (The hard limit's SIGKILL still ends it regardless.)
    signal.signal(signal.SIGXCPU, lambda *_: os._exit(CPU_LIMIT_EXIT))
    _door.install()
    seal(plan)
    workdir = os.getcwd()
    if warm_up:
        job_fd = os.memfd_create("warm-up", os.MFD_CLOEXEC)
        os.write(job_fd, warm_up)
        os.lseek(job_fd, 0, os.SEEK_SET)
        # fds 1 to 3 are /dev/null until the first call.
        fds = [job_fd, os.dup(1), os.dup(2), os.dup(REPORT_FD)]
        _serve_call(channel, fds, prepared, out_of_memory, cpu_hard_s, workdir)
    while True:
        _, fds, _, _ = socket.recv_fds(channel, 1, _FDS_WITH_DOOR)
        if len(fds) not in (_FDS_PER_CALL, _FDS_WITH_DOOR):
            os._exit(0)  # the runner closed the channel: retired
        _serve_call(channel, fds, prepared, out_of_memory, cpu_hard_s, workdir)


def _serve_call(
    channel: socket.socket,
    fds: list[int],
    prepared: ModuleType,
    out_of_memory: bytes,
    cpu_hard_s: int,
    workdir: str,
) -> None:
    """Serve one call: its job's memfd, its output pipes and its door in ``fds``, all closed."""
    # Out of the way first: with fds 1 to 3 closed between calls, they arrive there.
    job_fd, *outputs = [_move_up(fd) for fd in fds]
    door = outputs.pop() if len(outputs) > 3 else None
    for target, fd in zip((1, 2, REPORT_FD), outputs, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    _door.enter(door)
    job, program = read_job(job_fd)
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(used.ru_utime + used.ru_stime) + cpu_limit_seconds(job.limits)
    resource.setrlimit(resource.RLIMIT_CPU, (min(soft, cpu_hard_s), cpu_hard_s))
    data = _run(job, program, fresh_module(prepared), out_of_memory)
    _door.leave()
    with os.fdopen(REPORT_FD, "wb") as report:
        report.write(data)
    sys.stderr.flush()
    # Between calls the worker holds no fd but its channel.
    os.close(1)
    os.close(2)
    channel.sendall(CALL_DONE if _wipe(workdir) else CALL_DONE_DIRTY)


def _move_up(fd: int) -> int:
    """``fd`` moved to a number above the call's four (closing ``fd``)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _FDS_WITH_DOOR * 2)
    os.close(fd)
    return moved


def fresh_module(prepared: ModuleType) -> ModuleType:
    """A call's own globals: a copy of ``prepared`` with a builtins mapping of its own.

    The guards' closures (and the import policy's caches of what it checked) are shared
    with the prepared module: they hold only the allow-list's verdicts and, in a warm
    worker, the classes earlier calls of the same version checked. Measured here: ~1 µs,
    against ~85 µs to build the restricted module anew.
    """
    module = ModuleType(prepared.__name__)
    namespace = module.__dict__
    namespace.update(prepared.__dict__)
    builtins_ = namespace.get("__builtins__")
    if isinstance(builtins_, dict):
        namespace["__builtins__"] = dict(builtins_)
    return module


def _wipe(workdir: str) -> bool:
    """Empty ``workdir``; whether it is empty now."""
    for entry in os.scandir(workdir):
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                try:
                    os.rmdir(entry.path)  # out/ is mostly empty: a third of rmtree's cost
                except OSError:
                    shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
    return not os.listdir(workdir)


def _run(job: Job, program: Program, module: ModuleType, out_of_memory: bytes) -> bytes:
    """The report of running ``job``, encoded, or ``out_of_memory``."""
    try:
        report: dict[str, Any] = _execute(job, program, module)
        if report["status"] != "memory_limit":
            report |= _collect_outputs(job.limits)
        data = _encode({**report, "peak_memory_bytes": _peak_memory_bytes()})
        sys.stdout.flush()
    except MemoryError:
        data = out_of_memory
    return data


def _place_inputs(files: Iterable[File]) -> None:
    """Write the call's files into the working directory, read-only, and make out/ empty."""
    for file in files:
        fd = os.open(file.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NEW_FILE, 0o444)
        try:
            data = memoryview(file.content)
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
    os.mkdir(OUTPUT_DIR, 0o700)


def _collect_outputs(limits: Limits) -> dict[str, Any]:
    """What the call left in out/, for the report: ``files`` ([name, base64] pairs).

    Only regular files directly in out/ come back, opened without following a symlink;
    instead of them, anything else there is ``files_problem`` (the runner makes an OK run
    ERROR of it) and more than the limits allow is ``files_over`` (OUTPUT_LIMIT), each a
    sentence. Sizes are checked with fstat before a byte is read, so that no file over
    the caps is ever loaded.
    """
    try:
        directory = os.open(OUTPUT_DIR, os.O_RDONLY | os.O_DIRECTORY | _NEW_FILE)
    except FileNotFoundError:
        return {"files": []}
    except OSError:
        return {"files": [], "files_problem": f"{OUTPUT_DIR}/ is not a directory"}
    files: list[list[str]] = []
    total = 0
    try:
        names = sorted(os.listdir(directory))
        if len(names) > limits.max_files:
            return _files_over(f"{len(names)} files, more than the limit of {limits.max_files}")
        for name in names:
            path = f"{OUTPUT_DIR}/{name}"
            if problem := file_name_problem(name):
                return {"files": [], "files_problem": f"the name of {path!r} {problem}"}
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | _NEW_FILE, dir_fd=directory)
            except OSError:
                return {"files": [], "files_problem": f"{path} is not a regular file"}
            try:
                status = os.fstat(fd)
                if not stat.S_ISREG(status.st_mode):
                    return {"files": [], "files_problem": f"{path} is not a regular file"}
                total += status.st_size
                if status.st_size > limits.max_file_bytes:
                    limit = limits.max_file_bytes
                    return _files_over(f"{path} of {status.st_size} bytes, over {limit} a file")
                if total > limits.max_files_bytes:
                    return _files_over(f"files over the limit of {limits.max_files_bytes} bytes")
                content = _read_all(fd, status.st_size)
            finally:
                os.close(fd)
            files.append([name, base64.b64encode(content).decode()])
    finally:
        os.close(directory)
    return {"files": files}


def _files_over(what: str) -> dict[str, Any]:
    return {"files": [], "files_over": f"{OUTPUT_DIR}/ holds {what}"}


def _read_all(fd: int, size: int) -> bytes:
    """At most ``size`` bytes of ``fd``: a file that grew since its fstat is cut there."""
    chunks = []
    while size > 0 and (chunk := os.read(fd, min(size, 1 << 20))):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _execute(job: Job, program: Program, module: ModuleType) -> dict[str, str]:
    if not program.code:
        return _report("error", error_type=program.error_type, error_message=program.error_message)
    try:
        _place_inputs(job.files)
    except OSError as exc:
        message = f"the call's files could not be written to the working directory: {exc}"
        return _report("error", error_type="OSError", error_message=message)
    try:
        kwargs = json.loads(job.args_json)
    except (ValueError, RecursionError) as exc:
        message = f"arguments are not valid JSON: {exc}"
        return _report("error", error_type="ValueError", error_message=message)
    if not isinstance(kwargs, dict):
        message = f"arguments must be a JSON object, not {type(kwargs).__name__}"
        return _report("error", error_type="TypeError", error_message=message)

    if job.secrets:
        module.__dict__[SECRETS_GLOBAL] = secrets_module(job.secrets)
    lines = source_lines(job.source)
    linecache.cache[job.filename] = (len(job.source), None, lines, job.filename)
    # Where dataclasses and typing look for the module of the code's classes.
    sys.modules[USER_MODULE] = module
    try:
        code = marshal.loads(program.code)
        return _report("ok", result_json=_call(code, module.__dict__, job.entrypoint, kwargs))
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

    Unlike wait4's ru_maxrss, which may start from a larger parent's size, VmHWM belongs
    to this process's own memory map; forked from a sandbox host, it includes the pages
    it still shares with the host.
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
        "error_type": error_type[:MAX_ERROR_TYPE_CHARS],
        "error_message": error_message[:MAX_MESSAGE_CHARS],
        "traceback": trace[-MAX_TRACEBACK_CHARS:],
    }


def _encode(report: Mapping[str, str | int]) -> bytes:
    # Messages may hold lone surrogates; the result cannot (_call checked it).
    return json.dumps(report, ensure_ascii=False).encode("utf-8", "replace")
