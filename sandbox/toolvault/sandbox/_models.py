"""The values the runner and the sandbox process exchange: jobs, limits and results.

Also the wire protocols, kept here so that both sides agree on them: the server and its
sandbox host exchange frames (a 4-byte big-endian length, then a JSON object) on a Unix
socket; a sandbox process reads its job from a memfd (``_child.encode_job``). Its
report comes back on fd 3.
"""

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._door import EgressRecord

DEFAULT_ALLOWED_IMPORTS: tuple[str, ...] = (
    "json",
    "math",
    "re",
    "datetime",
    "collections",
    "itertools",
    "functools",
    "statistics",
    "decimal",
    "fractions",
    "random",
    "string",
    "textwrap",
    "typing",
    "dataclasses",
    "hashlib",
    "base64",
    "uuid",
    "heapq",
    "bisect",
    "operator",
    "csv",
)
# The directory of the working directory whose files come back with the result.
OUTPUT_DIR = "out"
# The most a call's files may hold together, each way: the working directory has room
# for both ways and as much again for scratch (``_isolation.WORKDIR_BYTES``).
MAX_FILES_BYTES = 8 * 1024 * 1024
_MAX_FILE_NAME_BYTES = 255


class RunStatus(enum.Enum):
    """How a run ended."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    CRASHED = "crashed"


@dataclass(frozen=True)
class Limits:
    """What one run may use.

    Attributes:
        timeout_ms: Wall-clock time from spawn to exit.
        memory_mb: Address space of the sandbox process (RLIMIT_AS), in MiB.
        max_output_bytes: Cap on stdout, on stderr and on the JSON result, each.
        max_files: Cap on the files a call gets, and on those it leaves in ``out/``.
        max_file_bytes: Cap on the size of each of those files.
        max_files_bytes: Cap on the size of a call's files together, each way.
    """

    timeout_ms: int
    memory_mb: int
    max_output_bytes: int
    max_files: int = 16
    max_file_bytes: int = 4 * 1024 * 1024
    max_files_bytes: int = MAX_FILES_BYTES


@dataclass(frozen=True)
class File:
    """A file a call gets in its working directory, or leaves in ``out/`` for the caller.

    Attributes:
        name: A plain file name (see file_name_problem).
        content: Its bytes.
    """

    name: str
    content: bytes


@dataclass(frozen=True)
class Job:
    """One call of a function: its source, entrypoint, arguments and limits.

    Attributes:
        source: The module source.
        entrypoint: The name of the module-level function to call.
        args_json: A JSON object; its members become keyword arguments.
        allowed_imports: Top-level modules the code may import.
        limits: What the run may use.
        filename: The name tracebacks give the source, e.g. ``"add@3"``.
        secrets: The values of the secrets the version declares, by name, for
            ``from toolvault import secrets``. They travel in the job's memfd, which
            only the call's sandbox reads; never through the host or the environment.
            Kept out of the repr.
        files: What the call finds in its working directory (read-only) before it starts.
    """

    source: str
    entrypoint: str
    args_json: str
    allowed_imports: tuple[str, ...]
    limits: Limits
    filename: str = "<function>"
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    files: tuple[File, ...] = ()


@dataclass(frozen=True)
class RunResult:
    """What happened in one run.

    Attributes:
        status: How the run ended.
        result_json: The return value as compact JSON; ``""`` unless OK.
        stdout: What the function printed, at most ``max_output_bytes`` of it.
        stderr: What the interpreter wrote to stderr, at most ``max_output_bytes`` of it.
        error_type: ``""`` when OK; the exception's class name, or ``"TimeoutError"``,
            ``"MemoryError"``, ``"OutputLimitExceeded"`` or ``"Crashed"`` for limits and
            crashes.
        error_message: The exception's message, or which limit was hit.
        traceback: The traceback through the user's own lines; ``""`` if none.
        duration_ms: Wall-clock time from spawn to exit.
        cpu_time_ms: User plus system CPU time of the sandbox process.
        peak_memory_bytes: The sandbox process's peak resident set size.
        warm: Whether it ran in a warm worker (else in a process of its own: forked
            for it, or a spare).
        egress: The requests it made through its door to the network, in order.
        files: What it left in ``out/``, by name; only when it returned or raised.
    """

    status: RunStatus
    result_json: str
    stdout: str
    stderr: str
    error_type: str
    error_message: str
    traceback: str
    duration_ms: float
    cpu_time_ms: float
    peak_memory_bytes: int
    warm: bool = False
    egress: tuple[EgressRecord, ...] = ()
    files: tuple[File, ...] = ()


def file_name_problem(name: str) -> str:
    r"""What makes ``name`` no plain file name (``"is empty"``, ...); ``""`` if it is one.

    A plain name is one component of a path on any system the files may be saved on: not
    empty, at most 255 bytes of UTF-8, no "/", "\", NUL or other control character, and
    not hidden (no leading "."), which also rules out "." and "..".
    """
    if not name:
        return "is empty"
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > _MAX_FILE_NAME_BYTES:
        return f"is {size} bytes long, more than {_MAX_FILE_NAME_BYTES}"
    if name.startswith("."):
        return 'starts with "."'
    for char in name:
        if char in "/\\" or ord(char) < 0x20 or ord(char) == 0x7F:
            return f"holds {char!r}, which a plain file name may not"
    return ""


# The sandbox process writes its report to this fd.
REPORT_FD = 3
_LENGTH_BYTES = 4
# The sandbox process trims these report fields, so the runner can bound the report's size.
MAX_ERROR_TYPE_CHARS = 200
MAX_MESSAGE_CHARS = 2_000
MAX_TRACEBACK_CHARS = 8_000
# How a warm worker exits at a call's soft CPU limit (128 + SIGXCPU, as a shell says it).
CPU_LIMIT_EXIT = 152


def cpu_limit_seconds(limits: Limits) -> int:
    """The CPU-time limit (RLIMIT_CPU) that backs up the wall clock, in whole seconds."""
    return math.ceil(limits.timeout_ms / 1000) + 1


def job_fields(job: Job) -> dict[str, Any]:
    """The job's wire form without its files' contents: their names and sizes instead.

    Built by hand: ``dataclasses.asdict`` deep-copies, forty times slower on every call.
    """
    files = [[file.name, len(file.content)] for file in job.files]
    return {
        **vars(job),
        "limits": vars(job.limits),
        "secrets": dict(job.secrets),
        "files": files,
    }


def decode_job(fields: dict[str, Any], contents: bytes = b"") -> Job:
    """The job from its wire form, its files' contents one after the other in ``contents``."""
    files = []
    start = 0
    for name, size in fields["files"]:
        files.append(File(name, contents[start : start + size]))
        start += size
    return Job(
        **{
            **fields,
            "allowed_imports": tuple(fields["allowed_imports"]),
            "limits": Limits(**fields["limits"]),
            "files": tuple(files),
        }
    )


def encode_frame(message: dict[str, Any]) -> bytes:
    """One message between the server and its sandbox host, framed."""
    data = json.dumps(message).encode()
    return len(data).to_bytes(_LENGTH_BYTES, "big") + data


def decode_frames(buffer: bytearray) -> list[dict[str, Any]]:
    """Take every complete frame off the front of ``buffer`` and return the messages."""
    messages = []
    start = 0
    while len(buffer) - start >= _LENGTH_BYTES:
        end = start + _LENGTH_BYTES + int.from_bytes(buffer[start : start + _LENGTH_BYTES], "big")
        if end > len(buffer):
            break
        messages.append(json.loads(buffer[start + _LENGTH_BYTES : end]))
        start = end
    del buffer[:start]
    return messages
