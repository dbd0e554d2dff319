"""JSON and JSON Schema: parsing request JSON, checking stored schemas, checking values.

Shared by functions (input and output schemas), invocations (arguments, results) and
agents (tool arguments, task input), so that each refuses bad JSON with the same words.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from toolvault.server.domain.errors import InvalidArgument

MAX_JSON_DEPTH = 64
_MAX_REPORTED_PROBLEMS = 20
# jsonschema quotes the failing value whole: a megabyte quoted twenty times made a 20 MB
# message, which overflowed a status's metadata and, in a few history rows, a page.
# Twenty problems of this size stay within gRPC's 8 KiB soft limit on a status's metadata.
_MAX_PROBLEM_CHARS = 200


def checked_schema(text: str, field: str) -> str | None:
    """The schema in canonical JSON form, or None when none was given."""
    if not text.strip():
        return None
    schema = parse_json(text, field)
    if not isinstance(schema, dict):
        raise InvalidArgument(f"{field} must be a JSON object, not {type(schema).__name__}")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise InvalidArgument(f"{field} is not a valid JSON Schema at {where}: {e.message}") from e
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def parse_json(text: str, field: str) -> Any:
    """Parse JSON text, or InvalidArgument naming ``field`` and the position."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgument(
            f"{field} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e
    except ValueError as e:
        # Python refuses to convert longer integers, so that parsing stays linear
        # (CVE-2020-10735); that ValueError is the only other one json.loads raises.
        raise InvalidArgument(
            f"{field} has an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from e
    except RecursionError:
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = _depth(value)
    # Deeper values would exhaust the stack of the schema checks and the sandbox.
    if depth > MAX_JSON_DEPTH:
        raise InvalidArgument(f"{field} is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend(
                (child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    # Without a registry of its own, jsonschema fetches any $ref it cannot resolve inside
    # the schema with urlopen: http(s) and file URLs, from the server process, outside the
    # sandbox. A publisher could make the server request internal URLs, and read the
    # server's JSON files back through the error messages. An empty registry (to which
    # jsonschema adds the drafts' meta-schemas) resolves only refs within the schema.
    return jsonschema.validators.validator_for(schema)(schema, registry=referencing.Registry())


def problems(schema_json: str, instance: Any) -> str:
    """Each way ``instance`` fails the schema, with its JSON path; "" when it matches.

    A schema that cannot be evaluated (a $ref it cannot resolve, or one that refers to
    itself without end) is a problem too: a schema is checked only as JSON Schema when
    it is stored, and may never match anything.

    Each problem is cut to ``_MAX_PROBLEM_CHARS`` characters, ending in "…" when cut.
    """
    try:
        errors = sorted(_validator(schema_json).iter_errors(instance), key=lambda e: e.path)
    except referencing.exceptions.Unresolvable as e:
        return f"$: the schema's $ref {e.ref!r} cannot be resolved (only refs within it can)"
    except RecursionError:
        return "$: the schema's $refs refer to each other without end"
    return "; ".join(_brief(f"{e.json_path}: {e.message}") for e in errors[:_MAX_REPORTED_PROBLEMS])


def _brief(problem: str) -> str:
    if len(problem) <= _MAX_PROBLEM_CHARS:
        return problem
    return problem[: _MAX_PROBLEM_CHARS - 1] + "\u2026"
