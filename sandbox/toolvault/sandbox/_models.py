"""The values the runner and the sandbox process exchange: jobs, limits and results.

Also the wire protocols, kept here so that both sides agree on them: the server and its
sandbox host exchange frames (a 4-byte big-endian length, then a JSON object) on a Unix
socket; a sandbox process spawned per call reads its job as JSON on stdin. Either way
the sandbox's report comes back on fd 3.
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
)


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
    """

    timeout_ms: int
    memory_mb: int
    max_output_bytes: int


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
    """

    source: str
    entrypoint: str
    args_json: str
    allowed_imports: tuple[str, ...]
    limits: Limits
    filename: str = "<function>"
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


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
    """The job's wire form (inside a frame, or as JSON on a spawned sandbox's stdin).

    Built by hand: ``dataclasses.asdict`` deep-copies, forty times slower on every call.
    """
    return {**vars(job), "limits": vars(job.limits), "secrets": dict(job.secrets)}


def decode_job(data: bytes | dict[str, Any]) -> Job:
    """The job from its wire form, or from that form already parsed (inside a frame)."""
    fields = json.loads(data) if isinstance(data, bytes) else data
    return Job(
        **{
            **fields,
            "allowed_imports": tuple(fields["allowed_imports"]),
            "limits": Limits(**fields["limits"]),
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
