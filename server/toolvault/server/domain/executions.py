"""Runs as values: how a run ended, on whose behalf it ran, and what it recorded."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass

from toolvault.sandbox import EgressRecord, File
from toolvault.server.domain.functions import Isolation


class ExecutionStatus(enum.StrEnum):
    """How a run ended; the values are those stored in the history's ``status`` column.

    The sandbox's outcomes (``toolvault.sandbox.RunStatus`` by name), and two that only
    the server decides: the caller went away, or the result failed the output schema.
    """

    # The SDK's ExecutionStatus lists the same values: both mirror the proto's enum, and
    # the server and the SDK share no code.
    # pylint: disable=duplicate-code
    OK = "OK"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"
    OUTPUT_SCHEMA_MISMATCH = "OUTPUT_SCHEMA_MISMATCH"
    # pylint: enable=duplicate-code


# How long the history keeps the bytes of a run's output files, unless configured.
DEFAULT_FILE_RETENTION_S = 7 * 86_400.0


class FileDirection(enum.StrEnum):
    """Which way a file of a run went; the values are those the history stores."""

    IN = "in"
    OUT = "out"


@dataclass(frozen=True)
class ExecutionFile:
    """What the history keeps of one file of a run: never its bytes (see ``outputs``)."""

    direction: FileDirection
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class CallContext:
    """On whose behalf a run happens: a plain Invoke, or an agent's tool call."""

    caller: str
    agent: str = ""
    agent_revision: int = 0
    conversation_id: str = ""
    chain_depth: int = 0


@dataclass(frozen=True)
class ExecutionInfo:
    """One run, as returned by Invoke or read from the history."""

    id: uuid.UUID
    function_name: str
    version: int
    sha256: str
    status: ExecutionStatus
    args_json: str
    args_truncated: bool
    result_json: str
    result_truncated: bool
    stdout: str
    stderr: str
    error_type: str
    error_message: str
    traceback: str
    start_time: dt.datetime
    duration_ms: float
    cpu_time_ms: float
    peak_memory_bytes: int
    context: CallContext
    cached: bool = False
    cached_from: uuid.UUID | None = None
    trace_id: str = ""
    # How its sandbox ran: in a warm worker or a process of its own; None when none ran.
    isolation: Isolation | None = None
    # The requests it made through its door to the network, in order.
    egress: tuple[EgressRecord, ...] = ()
    # The files it got, then those it left in out/, each in name order.
    files: tuple[ExecutionFile, ...] = ()
    # The bytes of the files it left in out/, when at hand: from the run itself, or
    # from the history while it keeps them (not in lists of executions).
    outputs: tuple[File, ...] = ()


@dataclass(frozen=True)
class ExecutionFilter:
    """Which executions to list; empty fields match everything."""

    function_name: str = ""
    status: ExecutionStatus | None = None
    version: int = 0
    start_from: dt.datetime | None = None
    start_to: dt.datetime | None = None
    agent: str = ""
    conversation_id: str = ""
