"""Run a job in a fresh sandbox process and say what happened.

The parent side. It runs inside the asyncio gRPC server, a process with threads, so it
never forks: os.posix_spawn starts ``python -I -m toolvault.sandbox._child`` in a new
session (its own process group) with an empty environment, a private working directory
and pipes on fds 0-3, and tells it the isolation plan that ``_isolation.detect`` found.
The event loop watches the child without threads or asyncio's child watcher: a pidfd
says when it exits, and stdout, stderr and the report are read without blocking and
capped as they arrive. Whatever happens (exit, limit, cancellation) everything the child
started is killed, the child reaped, every fd closed and the directory removed.
"""

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ._isolation import Plan, detect
from ._models import (
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    REPORT_FD,
    Job,
    Limits,
    RunResult,
    RunStatus,
    cpu_limit_seconds,
    encode_job,
)

_CHUNK = 64 * 1024
# How long a sandbox process may take to relay a kill to its PID namespace before the
# whole group gets SIGKILL (which would orphan the namespace's init).
_RELAY_GRACE_S = 1.0
_STDERR_TAIL_CHARS = 1_000
_REPORT_FIELDS = ("status", "result_json", "error_type", "error_message", "traceback")
_REPORTED_STATUSES = ("ok", "error", "memory_limit")
_ERROR_TYPES = {
    RunStatus.TIMEOUT: "TimeoutError",
    RunStatus.MEMORY_LIMIT: "MemoryError",
    RunStatus.OUTPUT_LIMIT: "OutputLimitExceeded",
    RunStatus.CRASHED: "Crashed",
}


async def run(job: Job, *, hidden_paths: Sequence[str] = ()) -> RunResult:
    """Run ``job`` in a fresh sandbox process under its limits and say what happened.

    A failing function is a result, not an exception. The first run in a process probes
    which layers the host allows (``isolation_layers``), once.

    Args:
        job: What to run.
        hidden_paths: Directories the function must not see, such as the server's data:
            covered by an empty tmpfs where the host allows a mount namespace.

    Raises:
        asyncio.CancelledError: When the awaiting task is cancelled, after the sandbox
            process and everything it started are killed and reaped.
    """
    plan = detect().plan
    workdir = tempfile.mkdtemp(prefix="toolvault-")
    try:
        with _Sandbox(job, workdir, plan, hidden_paths) as sandbox:
            return await sandbox.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class _Pipe:
    """The parent's end of one output pipe and what came through it, up to a cap."""

    name: str
    cap: int
    fd: int = -1
    data: bytearray = field(default_factory=bytearray)
    reading: bool = True


class _Sandbox:
    """One sandbox process, watched from the event loop."""

    def __init__(self, job: Job, workdir: str, plan: Plan, hidden: Sequence[str]) -> None:
        self._job = job
        self._workdir = workdir
        self._plan = plan
        self._hidden = list(hidden)
        self._loop = asyncio.get_running_loop()
        self._exited = self._loop.create_future()
        self._unsent = memoryview(encode_job(job))
        cap = job.limits.max_output_bytes
        self._stdout = _Pipe("stdout", cap)
        self._stderr = _Pipe("stderr", cap)
        # The report holds the result as an escaped JSON string, at most twice its size,
        # next to a message and a traceback whose characters take at most 6 bytes each.
        self._report = _Pipe(
            "result", 2 * cap + 6 * (MAX_MESSAGE_CHARS + MAX_TRACEBACK_CHARS) + 1024
        )
        self._pipes = (self._stdout, self._stderr, self._report)
        self._fds: list[int] = []
        self._stdin = self._pidfd = -1
        self._pid = 0
        self._reaped = False
        self._started = self._ended = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._verdict: tuple[RunStatus, str] | None = None

    def __enter__(self) -> "_Sandbox":
        try:
            self._start()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    async def wait(self) -> RunResult:
        """Wait for the process to exit, then reap it and say what happened."""
        await self._exited
        # Kill what the process may have left behind before reaping it: until then its
        # pid, which is also the group's id, cannot be reused by an unrelated process.
        self._kill_group(signal.SIGKILL)
        for pipe in self._pipes:
            self._drain(pipe)
        _, wait_status, usage = os.wait4(self._pid, 0)
        self._reaped = True
        cpu_time_ms = (usage.ru_utime + usage.ru_stime) * 1000
        stderr = self._stderr.data.decode("utf-8", "replace")
        report = _parse_report(self._report.data)
        status, result_json, error_type, error_message, trace = self._outcome(
            report, wait_status, cpu_time_ms, stderr
        )
        # ru_maxrss starts from this (large) process's size at spawn: use the sandbox
        # process's own figure when it could report one.
        peak = report.get("peak_memory_bytes") if report else None
        if not isinstance(peak, int) or peak <= 0:
            peak = usage.ru_maxrss * 1024
        return RunResult(
            status=status,
            result_json=result_json,
            stdout=self._stdout.data.decode("utf-8", "replace"),
            stderr=stderr,
            error_type=error_type,
            error_message=error_message,
            traceback=trace,
            duration_ms=(self._ended - self._started) * 1000,
            cpu_time_ms=cpu_time_ms,
            peak_memory_bytes=peak,
        )

    def _start(self) -> None:
        stdin_end, self._stdin = self._pipe()
        child_ends = {0: stdin_end}
        for target, pipe in ((1, self._stdout), (2, self._stderr), (REPORT_FD, self._report)):
            pipe.fd, child_ends[target] = self._pipe()

        self._started = time.monotonic()
        try:
            self._pid = os.posix_spawn(
                sys.executable,
                [
                    *(sys.executable, "-I", "-m", "toolvault.sandbox._child", self._workdir),
                    *(self._plan.to_json(), *self._hidden),
                ],
                {},
                file_actions=[(os.POSIX_SPAWN_DUP2, fd, to) for to, fd in child_ends.items()],
                setsid=True,
                # A blocked or ignored SIGXCPU, inherited from this process, would defeat
                # the CPU-time limit.
                setsigmask=(),
                setsigdef=(signal.SIGXCPU, signal.SIGXFSZ),
            )
        finally:
            for fd in child_ends.values():
                self._close_fd(fd)

        self._pidfd = os.pidfd_open(self._pid)
        self._fds.append(self._pidfd)
        self._loop.add_reader(self._pidfd, self._on_exit)
        for pipe in self._pipes:
            # Only our ends: O_NONBLOCK is shared with the child's copies of its ends.
            os.set_blocking(pipe.fd, False)
            self._loop.add_reader(pipe.fd, self._drain, pipe)
        os.set_blocking(self._stdin, False)
        self._loop.add_writer(self._stdin, self._send_job)
        limits = self._job.limits
        self._timer = self._loop.call_later(
            limits.timeout_ms / 1000,
            self._kill,
            RunStatus.TIMEOUT,
            f"wall-clock limit of {limits.timeout_ms} ms exceeded",
        )

    def _pipe(self) -> tuple[int, int]:
        read_end, write_end = os.pipe()
        self._fds += (read_end, write_end)
        return read_end, write_end

    def _send_job(self) -> None:
        try:
            self._unsent = self._unsent[os.write(self._stdin, self._unsent) :]
            if self._unsent:
                return
        except BlockingIOError:
            return
        except BrokenPipeError:
            pass  # the process died before reading its job; its exit status says why
        self._close_fd(self._stdin)

    def _drain(self, pipe: _Pipe) -> None:
        """Read what ``pipe`` holds now, up to its cap; past the cap, kill the process."""
        while pipe.reading:
            try:
                chunk = os.read(pipe.fd, _CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                self._stop_reading(pipe)
                return
            pipe.data += chunk
            if len(pipe.data) > pipe.cap:
                del pipe.data[pipe.cap :]
                self._stop_reading(pipe)
                self._kill(RunStatus.OUTPUT_LIMIT, self._output_limit_message(pipe.name))

    def _stop_reading(self, pipe: _Pipe) -> None:
        pipe.reading = False
        self._loop.remove_reader(pipe.fd)

    def _on_exit(self) -> None:
        self._ended = time.monotonic()
        self._loop.remove_reader(self._pidfd)
        if self._timer is not None:
            self._timer.cancel()
        if not self._exited.done():
            self._exited.set_result(None)

    def _kill(self, status: RunStatus, message: str) -> None:
        """Kill the process group for hitting a limit; the first limit hit is the verdict."""
        if self._verdict is None:
            self._verdict = (status, message)
            self._terminate()
            self._loop.call_later(_RELAY_GRACE_S, self._force_kill)

    def _force_kill(self) -> None:
        if not self._exited.done() and not self._reaped:
            self._kill_group(signal.SIGKILL)

    def _terminate(self) -> None:
        """Kill the sandbox process and everything it started."""
        if self._plan.namespaces:
            # The process relays this as SIGKILL to its child, the init of its PID
            # namespace, whose death ends every process in it; then reaps it and exits.
            # A SIGKILL to the group would leave the child for someone else to reap.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGTERM)
        else:
            self._kill_group(signal.SIGKILL)

    def _kill_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._pid, signum)

    def _close_fd(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        os.close(fd)
        self._fds.remove(fd)

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._pid and not self._reaped:
            self._terminate()
            # Blocking, but only as long as a kill takes; an await here could be
            # cancelled in turn and leave a zombie behind.
            if self._pidfd < 0 or not select.select([self._pidfd], [], [], _RELAY_GRACE_S)[0]:
                self._kill_group(signal.SIGKILL)
            os.wait4(self._pid, 0)
            self._reaped = True
        for fd in list(self._fds):
            self._close_fd(fd)

    def _outcome(
        self, report: dict[str, Any] | None, wait_status: int, cpu_time_ms: float, stderr: str
    ) -> tuple[RunStatus, str, str, str, str]:
        """Status, result JSON, error type, error message and traceback of the run."""
        limits = self._job.limits
        verdict = self._verdict
        if verdict is None and report is not None:
            status = RunStatus(report["status"])
            trace = report["traceback"]
            if status is RunStatus.MEMORY_LIMIT:
                message = f"memory limit of {limits.memory_mb} MiB exceeded"
                return status, "", _ERROR_TYPES[status], message, trace
            if len(report["result_json"].encode()) <= limits.max_output_bytes:
                error_type, message = report["error_type"], report["error_message"]
                return status, report["result_json"], error_type, message, trace
            verdict = RunStatus.OUTPUT_LIMIT, self._output_limit_message("result")
        status, message = verdict or _explain_exit(wait_status, cpu_time_ms, limits, stderr)
        return status, "", _ERROR_TYPES[status], message, ""

    def _output_limit_message(self, name: str) -> str:
        return f"{name} passed the output limit of {self._job.limits.max_output_bytes} bytes"


def _parse_report(data: bytes | bytearray) -> dict[str, Any] | None:
    """The sandbox process's report, or None if it wrote none or something malformed."""
    try:
        report = json.loads(data)
    except ValueError:
        return None
    if (
        not isinstance(report, dict)
        or report.get("status") not in _REPORTED_STATUSES
        or not all(isinstance(report.get(key), str) for key in _REPORT_FIELDS)
    ):
        return None
    return report


def _explain_exit(
    wait_status: int, cpu_time_ms: float, limits: Limits, stderr: str
) -> tuple[RunStatus, str]:
    """Why a process that wrote no report ended: the CPU-time limit, or a crash."""
    if os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
        cpu_seconds = cpu_limit_seconds(limits)
        # SIGXCPU at the soft limit; SIGKILL at the hard one if SIGXCPU did not kill.
        if signum == signal.SIGXCPU or (
            signum == signal.SIGKILL and cpu_time_ms >= cpu_seconds * 1000
        ):
            return RunStatus.TIMEOUT, f"CPU time limit of {cpu_seconds} s exceeded"
        try:
            how = f"was killed by {signal.Signals(signum).name}"
        except ValueError:
            how = f"was killed by signal {signum}"
    else:
        how = f"exited with code {os.WEXITSTATUS(wait_status)}"
    message = f"the sandbox process {how} without reporting a result"
    tail = stderr[-_STDERR_TAIL_CHARS:].strip()
    if tail:
        message += f"; its stderr ends with:\n{tail}"
    return RunStatus.CRASHED, message
