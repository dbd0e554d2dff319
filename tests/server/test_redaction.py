"""Redaction: every form of a value that reached a call becomes ``***``; JSON stays JSON.

The one function the invocation path applies (``domain.secrets.Redactor``), tested on
its own: the forms it finds, the ones it does not (its documented limit), and every
field of an execution.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import fields

import pytest

from toolvault.server.domain.errors import InvalidArgument
from toolvault.server.domain.executions import CallContext, ExecutionInfo, ExecutionStatus
from toolvault.server.domain.secrets import Redactor, checked_declarations

VALUE = 'sk-"q"\\é-42'


def test_the_raw_json_escaped_and_repr_forms_are_replaced() -> None:
    redactor = Redactor([VALUE])
    for form in (
        VALUE,
        json.dumps(VALUE)[1:-1],
        json.dumps(VALUE, ensure_ascii=False)[1:-1],
        repr(VALUE)[1:-1],
    ):
        assert redactor.text(f"<{form}>") == "<***>", form


def test_a_transformed_value_is_not_found_as_the_readme_says() -> None:
    redactor = Redactor(["plain-value"])
    assert redactor.text("eulav-nialp plain-valu") == "eulav-nialp plain-valu"


def test_a_value_inside_another_is_replaced_whole() -> None:
    assert Redactor(["abcd", "xxabcdxx"]).text("1 xxabcdxx 2 abcd") == "1 *** 2 ***"


def test_json_stays_valid_whatever_the_value_holds() -> None:
    redactor = Redactor([VALUE, "1234", "1,2"])
    document = {VALUE: [VALUE, f"in {VALUE} text", 1234, 5.5], "n": 91234, "list": [1, 2]}
    redacted = redactor.json_text(json.dumps(document, ensure_ascii=False))
    assert json.loads(redacted) == {"***": ["***", "in *** text", "***", 5.5], "n": "***"} | {
        "list": [1, 2]
    }
    # A value that only appears across the structure leaves nothing of the document.
    assert json.loads(Redactor(["1, 2"]).json_text("[1, 2]")) == "***"
    assert Redactor(["abcd"]).json_text('{"a": 1}') == '{"a": 1}'


def test_every_text_of_an_execution_is_redacted_and_nothing_else_changes() -> None:
    info = ExecutionInfo(
        id=uuid.uuid4(),
        function_name="f",
        version=1,
        sha256="0" * 64,
        status=ExecutionStatus.ERROR,
        args_json=json.dumps({"x": VALUE}),
        args_truncated=False,
        result_json="",
        result_truncated=False,
        stdout=f"out {VALUE}",
        stderr=f"err {VALUE}",
        error_type=f"E{VALUE}",
        error_message=f"message {VALUE}",
        traceback=f"line {VALUE!r}",
        start_time=dt.datetime.now(dt.UTC),
        duration_ms=1.0,
        cpu_time_ms=1.0,
        peak_memory_bytes=1,
        context=CallContext(caller="test"),
    )
    redacted = Redactor([VALUE]).execution(info)
    changed = {f.name for f in fields(info) if getattr(info, f.name) != getattr(redacted, f.name)}
    assert changed == {"args_json", "stdout", "stderr", "error_type", "error_message", "traceback"}
    assert VALUE not in repr(redacted)
    assert Redactor([]).execution(info) is info


def test_declared_names_are_sorted_unique_and_checked() -> None:
    assert checked_declarations(["B", "A", "B"]) == ("A", "B")
    with pytest.raises(InvalidArgument, match="more than the limit of 32"):
        checked_declarations([f"K{i}" for i in range(33)])
