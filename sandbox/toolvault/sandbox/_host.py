"""The sandbox host: a warm, single-threaded process that forks one sandbox per call.

The server spawns it as ``python -I -m toolvault.sandbox._host`` in a new session with an
empty environment, its end of a Unix socket pair on fd 3, /dev/null on fds 0 and 1 and the
server's stderr on fd 2 (for the host's own crashes). Frames (``_models.encode_frame``) go
both ways on the socket:

- ``init`` {plan, preload, workdir, hidden, language_layer}, the first: the host imports
  the runtime and the modules of the server's allow-list, confines itself once
  (``enter_host``), forks a probe sandbox that reports from inside what it sees, and
  answers ``ready`` {facts}, or ``failed`` {error} when the plan cannot be applied;
- ``run`` {id, slot, allowed_imports, door} with the write ends of the call's stdout,
  stderr and report pipes and a memfd holding the job attached (SCM_RIGHTS), and with
  ``door`` the sandbox's end of the call's door to the network after them
  (``_door``): the host forks a sandbox, which confines itself, reads the job from the
  memfd and runs it (``_child.run_job``);
- ``spawn`` {id, slot, allowed_imports, limits, cpu_hard_s, warm_up} with one end of a socket
  pair the server made attached: the host forks a warm worker, confined exactly as a
  call's sandbox (``confine``, the rlimits, the filter), which serves calls of one
  function version on that socket, straight from the server (``_child.serve_calls``),
  and answers ``spawned`` {id, pid} (its pid in the host's PID namespace), by which the
  server finds it in its own /proc to read the kernel's figures of each call (a fresh
  call's spare is such a worker, made ahead of its call, that serves only that call;
  with ``warm_up`` it first runs a trusted no-op that the host compiled);
- ``kill`` {id}: SIGKILL for the call's process (or the worker), PID 1 of its own
  namespace, so that everything it started dies with it;
- ``exited`` {id, status, cpu_ms, maxrss_kb, error}: the host reaped the call's process
  or the worker (status is wait4's; error says why there was none to reap). One frame
  per call, or per worker, each way.

At EOF on the socket (the server closed it, or died) the host kills every sandbox and
exits. The host never runs user code, and never reads a job: its memory, which every
sandbox is a copy of, holds no call's source, code, arguments or results (the server
compiles, and the memfd goes to the sandbox unread). What it keeps between calls are the
restricted globals per allow-list and the spares' warm-up (a constant no-op), which hold
nothing of any call.
"""

import builtins
import collections
import contextlib
import gc
import json
import os
import random
import select
import shutil
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NoReturn

from . import _seccomp
from ._child import (
    DOOR_FD,
    JOB_FD,
    WARM_UP_FILENAME,
    WARM_UP_SOURCE,
    Program,
    compile_job,
    encode_job,
    preload,
    read_job,
    run_job,
    serve_calls,
)
from ._globals import restricted_module
from ._isolation import (
    PROBE_LIMITS,
    Plan,
    confine,
    enter_host,
    fork_sandbox,
    observe,
    seal,
    set_limits,
)
from ._models import Job, Limits, decode_frames, encode_frame
from ._modules import USER_MODULE

CONTROL_FD = 3
# A run frame carries four fds, five with a door; one recvmsg never returns those of two
# frames.
_FDS_PER_FRAME = 4
_FDS_WITH_DOOR = 5
_FDS_PER_SPAWN = 1
_RECEIVE_BYTES = 1024 * 1024
_CACHED_MODULES = 16
# The exit code of a sandbox process that failed to confine itself (EX_SOFTWARE).
_CONFINEMENT_FAILED = 70


def main() -> NoReturn:
    """Serve the server on fd 3 until it goes away."""
    sock = socket.socket(fileno=CONTROL_FD)
    channel = _Channel(sock)
    init = channel.first_message()
    plan = Plan(**init["plan"])
    workdir: str = init["workdir"]
    # Imported now, while every file is readable, and shared by every sandbox.
    preload(init["preload"])
    try:
        workdir = enter_host(plan, workdir, init["hidden"])
        host = _Host(channel, plan, workdir, init["language_layer"])
        facts = host.probe()
    except Exception as exc:
        channel.send({"op": "failed", "error": f"{type(exc).__name__}: {exc}"})
        os._exit(1)
    if "error" in facts:
        channel.send({"op": "failed", "error": facts["error"]})
        os._exit(1)
    channel.send({"op": "ready", "facts": facts})
    host.serve()


class _Channel:
    """The host's end of the socket: frames in, with the fds that came with them, and out."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self.fds: collections.deque[int] = collections.deque()

    def fileno(self) -> int:
        """The socket's fd, for select."""
        return self._sock.fileno()

    def first_message(self) -> dict[str, Any]:
        """Block until the first message has arrived; exit if the server went away."""
        while True:
            messages = self.receive()
            if messages is None:
                os._exit(0)
            if messages:
                return messages[0]

    def receive(self) -> list[dict[str, Any]] | None:
        """The messages completed by what one read returns; None at EOF."""
        data, fds, flags, _ = socket.recv_fds(self._sock, _RECEIVE_BYTES, _FDS_WITH_DOOR)
        self.fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            raise RuntimeError("a frame came with more fds than it may carry")
        if not data:
            return None
        self._buffer += data
        return decode_frames(self._buffer)

    def send(self, message: dict[str, Any]) -> None:
        """Send one message; blocks while the server's end is full."""
        self._sock.sendall(encode_frame(message))


class _Host:
    """Forks and reaps the sandboxes, one per call."""

    def __init__(self, channel: _Channel, plan: Plan, workdir: str, language_layer: bool) -> None:
        self._channel = channel
        self._plan = plan
        self._workdir = workdir
        self._language_layer = language_layer
        # Compiled once here, so that each sandbox only installs it.
        if plan.syscall_filter:
            _seccomp.program()
        self._modules: collections.OrderedDict[tuple[str, ...], ModuleType] = (
            collections.OrderedDict()
        )
        self._warm_up: Program | None = None
        self._calls: dict[int, int] = {}  # call id -> pid
        self._slots: dict[int, tuple[int, int]] = {}  # pid -> call id, slot
        # SIGCHLD wakes select through this pipe: no signal handler does any work.
        self._wakeup, wakeup_write = os.pipe()
        os.set_blocking(self._wakeup, False)
        os.set_blocking(wakeup_write, False)
        signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def probe(self) -> dict[str, Any]:
        """Fork a sandbox exactly as for a call that observes the layers from inside."""
        read_end, write_end = os.pipe()
        no_job = os.open(os.devnull, os.O_RDONLY)
        try:
            pid = self._fork(0, (write_end, write_end, write_end, no_job), self._observe)
        finally:
            os.close(write_end)
            os.close(no_job)
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        self._finish(0)
        try:
            facts: dict[str, Any] = json.loads(data)
        except ValueError:
            text = data.decode(errors="replace").strip()[-2000:]
            return {"error": f"the probe sandbox failed: {text or 'no output'}"}
        return facts

    def serve(self) -> NoReturn:
        """Answer the server's frames and reap the sandboxes until the server goes away."""
        while True:
            try:
                self._serve_once()
            except (BrokenPipeError, ConnectionResetError):
                # The server closed its end with frames unread either way: gone as at EOF.
                self._shut_down()

    def _serve_once(self) -> None:
        readable = select.select([self._channel.fileno(), self._wakeup], [], [])[0]
        if self._wakeup in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wakeup, 4096):
                    pass
            self._reap()
        if self._channel.fileno() in readable:
            messages = self._channel.receive()
            if messages is None:
                self._shut_down()
            for message in messages:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        if message["op"] == "run":
            count = _FDS_WITH_DOOR if message["door"] else _FDS_PER_FRAME
            fds = tuple(self._channel.fds.popleft() for _ in range(count))
            self._run(message["id"], message["slot"], tuple(message["allowed_imports"]), fds)
        elif message["op"] == "spawn":
            self._spawn(message, self._channel.fds.popleft())
        elif message["op"] == "kill":
            pid = self._calls.get(message["id"])
            if pid is not None:
                _kill(pid)

    def _run(
        self, call_id: int, slot: int, allowed_imports: tuple[str, ...], fds: Sequence[int]
    ) -> None:
        module = self._module(allowed_imports)
        door = len(fds) == _FDS_WITH_DOOR
        try:
            pid = self._fork(
                slot, fds, lambda: run_job(*read_job(JOB_FD), module, self._plan, door=door)
            )
        except OSError as exc:
            self._finish(slot)
            self._channel.send({"op": "exited", "id": call_id, "error": f"fork: {exc}"})
            return
        finally:
            for fd in fds:
                os.close(fd)  # the sandbox's alone now: it closes when the sandbox ends
        self._calls[call_id] = pid
        self._slots[pid] = (call_id, slot)

    def _spawn(self, message: dict[str, Any], channel: int) -> None:
        """Fork a warm worker that serves calls on ``channel``, straight from the server."""
        worker_id: int = message["id"]
        slot: int = message["slot"]
        module = self._module(tuple(message["allowed_imports"]))
        limits = Limits(**message["limits"])
        cpu_hard_s: int = message["cpu_hard_s"]
        warm_up = b""
        if message["warm_up"]:
            job = Job(WARM_UP_SOURCE, "main", "{}", (), limits, filename=WARM_UP_FILENAME)
            warm_up = encode_job(job, self._warm_up_program())
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            pid = self._fork(
                slot,
                (null, null, null, channel),
                lambda: serve_calls(limits, module, self._plan, cpu_hard_s, warm_up),
            )
        except OSError as exc:
            self._finish(slot)
            self._channel.send({"op": "exited", "id": worker_id, "error": f"fork: {exc}"})
            return
        finally:
            os.close(null)
            os.close(channel)  # the worker's alone now: the server sees EOF when it ends
        self._calls[worker_id] = pid
        self._slots[pid] = (worker_id, slot)
        self._channel.send({"op": "spawned", "id": worker_id, "pid": pid})

    def _warm_up_program(self) -> Program:
        """The spares' warm-up compiled, once: a constant of this module, no call's code."""
        if self._warm_up is None:
            restricted = self._language_layer
            self._warm_up = compile_job(WARM_UP_SOURCE, WARM_UP_FILENAME, restricted=restricted)
        return self._warm_up

    def _fork(self, slot: int, fds: Sequence[int], body: Callable[[], object]) -> int:
        """Fork a sandbox that runs ``body``, with ``fds`` on its fds 1, 2, 3, 0 and 4.

        Those are its stdout, stderr, report and job, then its door if it has one.
        """
        workdir = self._workdir_of(slot)
        if not self._plan.namespaces:
            os.mkdir(workdir, 0o700)
        # Everything allocated so far is the host's: the sandbox's collector never scans
        # it, which would copy the pages it touches.
        gc.freeze()
        pid = -1
        try:
            pid = fork_sandbox(self._plan)
        finally:
            # By the pid fork_sandbox returned: with namespaces the host and the sandbox are
            # both PID 1, so os.getpid() cannot tell them apart.
            if pid != 0:
                # Back in the host: what it frees from now on must stay collectable.
                gc.unfreeze()
        if pid:
            return pid
        try:
            # Forked without os.fork's hooks (see fork_sandbox): random's is the one needed.
            random.seed()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # 3 was the socket: the sandbox never holds it.
            for target, fd in zip((1, 2, 3, JOB_FD, DOOR_FD), fds, strict=False):
                os.dup2(fd, target)
            confine(self._plan, workdir, slot)
            body()
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(_CONFINEMENT_FAILED)

    def _observe(self) -> None:
        set_limits(PROBE_LIMITS)
        # The network first: under the filter no socket can be made to try it with.
        facts = observe(os.getcwd(), self._plan.private_root)
        seal(self._plan)
        facts["seccomp"] = _seccomp.observe()
        os.write(1, json.dumps(facts).encode())
        os._exit(0)

    def _workdir_of(self, slot: int) -> str:
        if self._plan.namespaces:
            return self._workdir  # each sandbox mounts a tmpfs of its own on it
        return os.path.join(self._workdir, str(slot))

    def _finish(self, slot: int) -> None:
        """Remove what the sandbox in ``slot`` left in its working directory."""
        if not self._plan.namespaces:
            shutil.rmtree(self._workdir_of(slot), ignore_errors=True)

    def _reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            call_id, slot = self._slots.pop(pid)
            del self._calls[call_id]
            self._finish(slot)
            self._channel.send(
                {
                    "op": "exited",
                    "id": call_id,
                    "status": status,
                    "cpu_ms": (usage.ru_utime + usage.ru_stime) * 1000,
                    "maxrss_kb": usage.ru_maxrss,
                }
            )

    def _module(self, allowed_imports: tuple[str, ...]) -> ModuleType:
        """Globals for code that may import ``allowed_imports``; each sandbox gets a copy."""
        module = self._modules.get(allowed_imports)
        if module is not None:
            self._modules.move_to_end(allowed_imports)
            return module
        preload(allowed_imports)
        if self._language_layer:
            module = restricted_module(allowed_imports)
        else:
            # The test suite's kernel-layer attacks: full Python, the real builtins.
            module = ModuleType(USER_MODULE)
            module.__dict__["__builtins__"] = builtins
        self._modules[allowed_imports] = module
        if len(self._modules) > _CACHED_MODULES:
            self._modules.popitem(last=False)
        return module

    def _shut_down(self) -> NoReturn:
        for pid in self._slots:
            _kill(pid)
        os._exit(0)


def _kill(pid: int) -> None:
    """Kill a sandbox: PID 1 of its namespace, or the leader of its process group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
