"""Reports forged by code that escaped the language layer, through the server's domain layer.

The sandbox's runner parses the sandbox process's report as hostile input (see
``toolvault.sandbox._runner._parse_report``); these tests check what the server makes of
what gets through it and of what it refuses: the call returns a value (never raises, so
never INTERNAL), exactly one history row records it, and every row reads back through
the History queries the HistoryService uses, the converters to protobuf and the function
statistics, on SQLite and PostgreSQL.

The code runs in a ``SandboxHost(language_layer=False)``, handed to Invocations through
its test seam: plain Python with the real builtins under every kernel layer, as if
RestrictedPython had fallen. It is published through FunctionStore like any function, so
it passes the publish-time check: no import, no name with an underscore; ``open(3)``
reaches the report pipe (the sandbox process's fd 3) with the real ``open``. Closing it
and putting /dev/null in its place makes the payload the whole report; keeping it open
lets the real report follow the payload.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import ACTOR
from toolvault import sandbox
from toolvault.server.config import Settings
from toolvault.server.db.engine import Database
from toolvault.server.domain.executions import CallContext, ExecutionFilter, ExecutionInfo
from toolvault.server.domain.stats import StatsQuery
from toolvault.server.rpc import convert
from toolvault.server.services.functions import FunctionStore, PublishRequest
from toolvault.server.services.history import History
from toolvault.server.services.invocations import Invocations
from toolvault.server.services.stats import FunctionStatistics
from toolvault.v1 import execution_pb2, invocation_pb2

SERVER = Path(__file__).parents[2] / "server"
CALLER = CallContext(caller="attacker")
MALFORMED = "the sandbox process sent a malformed report: "

# Writes PAYLOAD (bytes) as the whole report, then opens /dev/null until it gets fd 3
# again, so that the sandbox process's own report goes nowhere and it exits 0 as after
# an honest report (a report counts only from a process that exits 0).
WHOLE_REPORT = """\
SINKS = []
def main():
    report = open(3, "wb")
    report.write(PAYLOAD)
    report.close()
    while not SINKS or SINKS[-1].fileno() != 3:
        SINKS.append(open("/dev/null", "wb"))
    return "the real result"
"""
# Writes PAYLOAD ahead of the real report, which the sandbox process appends.
BEFORE_THE_REPORT = """\
def main():
    report = open(3, "wb", closefd=False)
    report.write(PAYLOAD)
    report.flush()
    return "the real result"
"""


def forged(**fields: object) -> bytes:
    """A report as the sandbox process writes one (an OK run of 1), with ``fields`` changed."""
    report = {
        "status": "ok",
        "result_json": "1",
        "error_type": "",
        "error_message": "",
        "traceback": "",
        "peak_memory_bytes": 1 << 20,
        **fields,
    }
    return json.dumps(report).encode()


# Each payload, and the problem the runner names for it.
MALFORMED_REPORTS = {
    "not JSON": (b"not json at all {", "not JSON in UTF-8"),
    "a JSON list": (b"[1, 2]", "a JSON list, not an object"),
    "a peak memory of 2**80": (
        forged(peak_memory_bytes=2**80),
        "peak_memory_bytes is not a byte count",
    ),
    "a negative peak memory": (
        forged(peak_memory_bytes=-1),
        "peak_memory_bytes is not a byte count",
    ),
    "a lone surrogate as the result": (
        forged(result_json='"\\ud800"'),
        "the result is not valid JSON ('utf-8' codec can't encode character '\\ud800' in "
        "position 1: surrogates not allowed)",
    ),
    "a result of NaN": (
        forged(result_json="NaN"),
        "the result is not valid JSON (NaN is not JSON)",
    ),
    "a result of 1e999": (
        forged(result_json="[1e999]"),
        "the result is not valid JSON (1e999 is out of range)",
    ),
    "a 5000-digit integer as the result": (
        forged(result_json="9" * 5000),
        "the result is not valid JSON (Exceeds the limit (4300 digits) for integer string "
        "conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase "
        "the limit)",
    ),
    "a result nested 100000 deep": (
        forged(result_json="[" * 100_000 + "]" * 100_000),
        "the result is nested too deeply",
    ),
    "an unknown status": (forged(status="OK"), "an unknown status"),
    "files that are not a list": (forged(files={"a": ""}), "files is not a list"),
    "a file that is not a pair": (
        forged(files=[["a"]]),
        "a file is not a [name, content] pair of strings",
    ),
    "a file named ../../etc/cron.d/x": (
        forged(files=[["../../etc/cron.d/x", ""]]),
        'the name of a file starts with "."',
    ),
    "a file named /etc/passwd": (
        forged(files=[["/etc/passwd", ""]]),
        "the name of a file holds '/', which a plain file name may not",
    ),
    "a file named twice": (forged(files=[["a", ""], ["a", ""]]), "the file 'a' comes twice"),
    "a file that is not base64": (
        forged(files=[["a", "not base64!"]]),
        "the content of 'a' is not base64",
    ),
    "a files_over that is not a string": (forged(files_over=[]), "files_over is not a string"),
    "a traceback that is not a string": (forged(traceback=None), "traceback is not a string"),
}


@pytest.fixture(params=["warm", "fresh"])
def invocations(
    request: pytest.FixtureRequest, database: Database, functions: FunctionStore, settings: Settings
) -> Iterator[Invocations]:
    """Invocations whose sandboxes run code without the language layer, in either mode."""
    host = sandbox.SandboxHost(
        preload=(), hidden_paths=(str(settings.data_dir),), language_layer=False
    )
    mode = settings.model_copy(update={"sandbox_mode": request.param})
    invocations = Invocations(database, functions, mode, sandbox_host=host)
    yield invocations
    asyncio.run(invocations.close())


def publish_attack(
    functions: FunctionStore,
    name: str,
    payload: bytes,
    *,
    template: str = WHOLE_REPORT,
    output_schema: str = "",
) -> None:
    """Publish a function that writes ``payload`` to the report pipe, as ``template`` says."""
    source = template.replace("PAYLOAD", repr(payload))
    request = PublishRequest(name=name, source=source, output_schema=output_schema)
    functions.publish(request, actor=ACTOR)


def invoke(invocations: Invocations, *refs: str) -> list[ExecutionInfo]:
    """Call each of ``refs`` at once (their history rows then share commits), in one loop.

    Each execution returned must also encode as the reply Invoke sends.
    """

    async def calls() -> list[ExecutionInfo]:
        return list(await asyncio.gather(*(invocations.invoke(r, "{}", CALLER) for r in refs)))

    executions = asyncio.run(calls())
    for execution in executions:
        reply = invocation_pb2.InvokeResponse(execution=convert.execution_pb(execution))
        assert invocation_pb2.InvokeResponse.FromString(reply.SerializeToString()) == reply
    return executions


def history(database: Database, **where: str) -> list[ExecutionInfo]:
    """Every recorded run, read page by page as ListExecutions reads them."""
    rows: list[ExecutionInfo] = []
    token = ""
    while True:
        page, token = History(database).executions(ExecutionFilter(**where), size=2, token=token)
        rows += page
        if not token:
            return rows


def read_back(database: Database, execution: ExecutionInfo) -> execution_pb2.Execution:
    """``execution`` as GetExecution returns it, through the wire format and back."""
    row = History(database).get(str(execution.id))
    wire = convert.execution_pb(row).SerializeToString()
    return execution_pb2.Execution.FromString(wire)


def outcome(execution: ExecutionInfo) -> tuple[str, str, str, str, str]:
    """What a run ended with: status, error type and message, result, traceback."""
    return (
        execution.status,
        execution.error_type,
        execution.error_message,
        execution.result_json,
        execution.traceback,
    )


@pytest.mark.parametrize(
    ("payload", "problem"), MALFORMED_REPORTS.values(), ids=MALFORMED_REPORTS.keys()
)
def test_a_malformed_report_makes_the_run_crashed_with_one_history_row(
    database: Database,
    functions: FunctionStore,
    invocations: Invocations,
    payload: bytes,
    problem: str,
) -> None:
    publish_attack(functions, "attack", payload)

    (execution,) = invoke(invocations, "attack")

    assert outcome(execution) == ("CRASHED", "Crashed", MALFORMED + problem, "", "")
    assert 0 < execution.peak_memory_bytes < 2**63  # the kernel's figure, not the report's
    (row,) = history(database)
    assert row == execution
    assert history(database, status="CRASHED") == [execution]
    message = read_back(database, execution)
    assert (message.id, message.status) == (
        str(execution.id),
        execution_pb2.EXECUTION_STATUS_CRASHED,
    )
    assert (message.error.type, message.error.message) == ("Crashed", MALFORMED + problem)
    assert message.result_json == "" and message.peak_memory_bytes == row.peak_memory_bytes


def test_forged_output_files_within_the_caps_are_kept_and_over_them_are_output_limit(
    database: Database, functions: FunctionStore, invocations: Invocations, settings: Settings
) -> None:
    chart = base64.b64encode(b"<svg/>").decode()
    publish_attack(functions, "kept", forged(files=[["chart.svg", chart]]))
    many = [[f"f{n}", ""] for n in range(settings.max_files + 1)]
    publish_attack(functions, "many", forged(files=many))

    kept, over = invoke(invocations, "kept", "many")

    assert (kept.status, kept.outputs) == ("OK", (sandbox.File("chart.svg", b"<svg/>"),))
    assert [(file.direction, file.name, file.size) for file in kept.files] == [
        ("out", "chart.svg", 6)
    ]
    assert History(database).get(str(kept.id), outputs=True).outputs == kept.outputs
    assert outcome(over) == (
        "OUTPUT_LIMIT",
        "OutputLimitExceeded",
        f"out/ holds {settings.max_files + 1} files, more than the limit of {settings.max_files}",
        "",
        "",
    )
    assert over.outputs == () and over.files == ()


def test_a_well_formed_report_followed_by_the_real_one_is_not_json(
    database: Database, functions: FunctionStore, invocations: Invocations
) -> None:
    publish_attack(functions, "prefix", forged(result_json='"forged"'), template=BEFORE_THE_REPORT)

    (execution,) = invoke(invocations, "prefix")

    assert outcome(execution) == ("CRASHED", "Crashed", MALFORMED + "not JSON in UTF-8", "", "")
    assert history(database) == [execution]


def test_a_forged_ok_report_with_nul_and_lone_surrogates_is_stored_and_reads_back(
    database: Database, functions: FunctionStore, invocations: Invocations
) -> None:
    payload = forged(
        result_json='"\\u0000"',
        error_type="Type\x00\ud800",
        error_message="message\x00\udfff",
        traceback="trace\x00\ud800back",
        peak_memory_bytes=2**63 - 1,
    )
    publish_attack(functions, "nul", payload)

    (execution,) = invoke(invocations, "nul")

    # The reply keeps the NULs (a protobuf string may hold them); the runner replaced the
    # lone surrogates, which no UTF-8 text can hold.
    assert (execution.status, execution.result_json) == ("OK", '"\\u0000"')
    assert json.loads(execution.result_json) == "\x00"
    assert (execution.error_type, execution.error_message, execution.traceback) == (
        "Type\x00\ufffd",
        "message\x00\ufffd",
        "trace\x00\ufffdback",
    )
    assert execution.peak_memory_bytes == 2**63 - 1
    # The history cannot store a NUL on PostgreSQL: it keeps U+FFFD on both databases.
    (row,) = history(database)
    assert (row.id, row.status, row.result_json) == (execution.id, "OK", '"\\u0000"')
    assert (row.error_type, row.error_message, row.traceback) == (
        "Type\ufffd\ufffd",
        "message\ufffd\ufffd",
        "trace\ufffd\ufffdback",
    )
    assert row.peak_memory_bytes == 2**63 - 1
    message = read_back(database, execution)
    assert message.status == execution_pb2.EXECUTION_STATUS_OK
    assert (message.result_json, message.peak_memory_bytes) == ('"\\u0000"', 2**63 - 1)
    assert not message.HasField("error")  # an OK run has none to show


def test_a_forged_error_report_with_raw_surrogate_bytes_is_stored_and_reads_back(
    database: Database, functions: FunctionStore, invocations: Invocations
) -> None:
    # A surrogate encoded as UTF-8 bytes (ED A0 80) is not UTF-8; json.loads still reads
    # it (it decodes bytes with surrogatepass), so the runner must mend the texts itself.
    payload = (
        '{"status": "error", "result_json": "[1]", "error_type": "Bad\ud800",'
        ' "error_message": "\\u0000\udfff", "traceback": "", "peak_memory_bytes": 4096}'
    ).encode("utf-8", "surrogatepass")
    publish_attack(functions, "raw", payload)

    (execution,) = invoke(invocations, "raw")

    assert (execution.status, execution.result_json) == ("ERROR", "")
    assert (execution.error_type, execution.error_message) == ("Bad\ufffd", "\x00\ufffd")
    (row,) = history(database, status="ERROR")
    assert (row.id, row.error_type, row.error_message) == (
        execution.id,
        "Bad\ufffd",
        "\ufffd\ufffd",
    )
    message = read_back(database, execution)
    assert (message.error.type, message.error.message) == ("Bad\ufffd", "\ufffd\ufffd")


def test_a_forged_result_checked_against_the_output_schema_is_a_mismatch_not_an_error(
    database: Database, functions: FunctionStore, invocations: Invocations
) -> None:
    publish_attack(
        functions, "typed", forged(result_json='"\\u0000"'), output_schema='{"type": "number"}'
    )

    (execution,) = invoke(invocations, "typed")

    assert (execution.status, execution.error_type, execution.error_message) == (
        "OUTPUT_SCHEMA_MISMATCH",
        "OutputSchemaMismatch",
        "the result does not match the output schema: $: '\\x00' is not of type 'number'",
    )
    assert history(database, status="OUTPUT_SCHEMA_MISMATCH") == [execution]


def test_every_row_of_a_hostile_history_lists_converts_and_counts(
    database: Database, functions: FunctionStore, invocations: Invocations
) -> None:
    names = [f"attack{i}" for i in range(len(MALFORMED_REPORTS))]
    for name, (payload, _) in zip(names, MALFORMED_REPORTS.values(), strict=True):
        publish_attack(functions, name, payload)
    publish_attack(
        functions,
        "nul",
        forged(result_json='"\\u0000"', error_message="\x00\ud800", traceback="\udfff\x00"),
    )

    executions = invoke(invocations, *names, "nul")

    expected = [MALFORMED + problem for _, problem in MALFORMED_REPORTS.values()]
    assert [e.error_message for e in executions[:-1]] == expected
    assert {e.status for e in executions[:-1]} == {"CRASHED"}
    assert executions[-1].status == "OK"
    rows = history(database)
    assert sorted(r.id for r in rows) == sorted(e.id for e in executions)
    assert {r.id: r.error_message for r in rows if r.status == "CRASHED"} == {
        e.id: e.error_message for e in executions[:-1]
    }
    wire = [convert.execution_pb(row).SerializeToString() for row in rows]
    assert [uuid.UUID(execution_pb2.Execution.FromString(w).id) for w in wire] == [
        r.id for r in rows
    ]
    statistics = FunctionStatistics(database)
    for execution in executions:
        stats = statistics.stats(StatsQuery(name=execution.function_name, failure_limit=5))
        convert.stats_pb(stats).SerializeToString()
        failed = execution.status != "OK"
        assert (stats.calls, stats.success_rate) == (1, 0.0 if failed else 1.0)
        assert [f.id for f in stats.recent_failures] == ([execution.id] if failed else [])


def test_nothing_in_the_server_hands_invocations_a_sandbox_host() -> None:
    # The seam runs code without the language layer: only the tests may use it.
    passing = [
        f"{path.name}:{node.lineno}"
        for path in SERVER.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and any(k.arg == "sandbox_host" for k in node.keywords)
    ]
    assert passing == []
