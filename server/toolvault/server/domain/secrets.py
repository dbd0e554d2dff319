"""Secrets as values: their names and limits, a listed secret, and redaction.

A secret is ``NAME`` or ``NAMESPACE/NAME`` like every other object; a version declares
the local ``NAME`` s it uses, which its calls read from the function's own namespace.

:class:`Redactor` is the one place where the values that reached a call are taken out
of what the call returns and records: every occurrence becomes ``***``. It finds the
value as it is, JSON-escaped (``json.dumps`` with and without ``ensure_ascii``) and as
``repr`` writes it inside quotes; a value the code transformed (base64, reversed, cut
at an output limit) is not found. That is a guard against accidents, not against code
that means to leak: the value is the code's to use.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from toolvault.server.domain.errors import InvalidArgument
from toolvault.server.domain.executions import ExecutionInfo
from toolvault.server.domain.names import check_qualified

SECRET_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
SECRET_NAME_RULE = "1 to 64 of A-Z, 0-9 and _, not starting with a digit"
# Redaction replaces every occurrence: a value of a few bytes would turn up in ordinary
# output ("***" for every "ab" a function prints) and make it unreadable.
MIN_VALUE_BYTES = 4
MAX_VALUE_BYTES = 64 * 1024
# Far more than a function needs; it bounds a job's size and the redaction's work.
MAX_DECLARED = 32
REDACTED = "***"


@dataclass(frozen=True)
class SecretInfo:
    """A secret as listed: never its value."""

    name: str
    created_at: dt.datetime
    updated_at: dt.datetime
    updated_by: str


def check_secret_name(name: str, field: str = "name") -> str:
    """``name`` if it is ``NAME`` or ``NAMESPACE/NAME`` of a secret, else InvalidArgument."""
    return check_qualified(name, SECRET_NAME, SECRET_NAME_RULE, field)


def check_value(value: str) -> str:
    """``value`` if it is within the limits, else InvalidArgument naming the limit."""
    size = len(value.encode())
    if size < MIN_VALUE_BYTES:
        raise InvalidArgument(
            f"value is {size} bytes, fewer than the minimum of {MIN_VALUE_BYTES}: every "
            "occurrence of a value in a call's output is replaced with ***, which would "
            "mangle the output of so short a value"
        )
    if size > MAX_VALUE_BYTES:
        raise InvalidArgument(f"value is {size} bytes, more than the limit of {MAX_VALUE_BYTES}")
    return value


def checked_declarations(names: Iterable[str]) -> tuple[str, ...]:
    """The secret names a version declares, sorted and unique, or InvalidArgument."""
    unique = sorted(set(names))
    if len(unique) > MAX_DECLARED:
        raise InvalidArgument(
            f"secrets declares {len(unique)} names, more than the limit of {MAX_DECLARED}"
        )
    for name in unique:
        if "/" in name:
            raise InvalidArgument(
                f"secrets name {name!r} is invalid: a version reads the secrets of its own "
                f"function's namespace, so declare {name.rpartition('/')[2]!r}"
            )
        if not SECRET_NAME.fullmatch(name):
            raise InvalidArgument(f"secrets name {name!r} is invalid: use {SECRET_NAME_RULE}")
    return tuple(unique)


class Redactor:
    """Replaces the values of a call's secrets with ``***`` in what the call produced."""

    def __init__(self, values: Iterable[str]) -> None:
        forms = set()
        for value in values:
            forms |= {
                value,
                json.dumps(value)[1:-1],
                json.dumps(value, ensure_ascii=False)[1:-1],
                repr(value)[1:-1],
            }
        # Longest first: a value that contains another is replaced whole.
        self._forms = sorted((f for f in forms if f), key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def text(self, text: str) -> str:
        """``text`` with every form of every value replaced."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def content(self, data: bytes) -> bytes:
        """A file's bytes with every form of every value (as UTF-8) replaced."""
        for form in self._forms:
            encoded = form.encode("utf-8", "surrogatepass")
            if encoded in data:
                data = data.replace(encoded, REDACTED.encode())
        return data

    def json_text(self, text: str) -> str:
        """JSON ``text`` with every value replaced, still valid JSON.

        Values are replaced inside the strings of the parsed document (keys too), and a
        number whose text holds one becomes ``"***"``. A value that spans the document's
        structure (``1,2`` in ``[1,2]``) leaves only ``"***"`` of the whole document.
        """
        if not any(form in text for form in self._forms):
            return text
        try:
            document = json.loads(text)
        except ValueError:
            return self.text(text)
        redacted = json.dumps(self._walk(document), ensure_ascii=False)
        if any(form in redacted for form in self._forms):
            return json.dumps(REDACTED)
        return redacted

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self._walk(item) for item in value]
        if isinstance(value, dict):
            return {self.text(key): self._walk(item) for key, item in value.items()}
        if isinstance(value, int | float) and not isinstance(value, bool):
            return REDACTED if self.text(json.dumps(value)) != json.dumps(value) else value
        return value

    def execution(self, info: ExecutionInfo) -> ExecutionInfo:
        """``info`` with the values taken out of its arguments, result, output and errors."""
        if not self:
            return info
        return replace(
            info,
            args_json=self.json_text(info.args_json),
            result_json=self.json_text(info.result_json) if info.result_json else "",
            stdout=self.text(info.stdout),
            stderr=self.text(info.stderr),
            error_type=self.text(info.error_type),
            error_message=self.text(info.error_message),
            traceback=self.text(info.traceback),
        )
