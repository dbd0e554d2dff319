"""How the commands print: JSON documents, aligned tables and "key: value" lines.

`--json` prints one JSON document per command with the SDK models' field names (and the
bytes of files in base64); otherwise lists are aligned tables and single objects
"key: value" lines.
"""

from __future__ import annotations

import base64
import json
import sys
import textwrap
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import TextIO

__all__ = [
    "first_line",
    "print_block",
    "print_json",
    "print_object",
    "print_pairs",
    "print_table",
    "text",
]


def print_json(value: object) -> None:
    """Print a value (models, lists and dicts of them) as one indented JSON document."""
    print(json.dumps(value, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):  # the contents of files
        return base64.b64encode(value).decode()
    if is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in fields(value)}
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def print_object(
    obj: object, hide: Collection[str] = (), rename: Mapping[str, str] | None = None
) -> None:
    """Print a model's fields as "key: value" lines; nested models get dotted keys.

    Fields in `hide` are left out; those in `rename` are shown under the name it gives.
    """
    names = rename or {}
    print_pairs([(names.get(key, key), value) for key, value in _flatten(obj) if key not in hide])


def _flatten(obj: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    for field in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, field.name)
        if is_dataclass(value):
            yield from _flatten(value, f"{prefix}{field.name}.")
        else:
            yield prefix + field.name, value


def print_pairs(pairs: Sequence[tuple[str, object]]) -> None:
    """Print aligned "key: value" lines, then multi-line values as indented blocks."""
    texts = [(key, text(value)) for key, value in pairs]
    width = max(len(key) for key, _ in texts) + 1
    blocks = []
    for key, value in texts:
        if "\n" in value:
            blocks.append((key, value))
        else:
            print(f"{key + ':':<{width}} {value}".rstrip())
    for key, value in blocks:
        print_block(sys.stdout, f"{key}:", textwrap.indent(value, "    "))


def print_block(stream: TextIO, title: str, body: str) -> None:
    """Print a title line (if any) and a text that may span lines; nothing if it is empty."""
    if not body:
        return
    if title:
        print(title, file=stream)
    print(body, end="" if body.endswith("\n") else "\n", file=stream)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print rows under their headers, each column as wide as its widest cell."""
    table = [headers, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def text(value: object) -> str:
    """Return a value as a table cell or a "key: value" line shows it."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def first_line(value: str) -> str:
    """Return the first line of a text, for a description in a table."""
    return value.strip().partition("\n")[0]
