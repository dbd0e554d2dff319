"""JSON Schemas for a function's arguments, read from its signature without running it.

Used for tool specs, and to check the arguments of every call (invoke, tool calls, MCP),
when a version was published without an input schema. Annotations
map as a model would expect: ``int`` -> integer, ``float`` -> number, ``str``, ``bool``,
``None``, ``list[T]``, ``dict[str, T]``, ``Optional``/``Union``/``X | Y`` -> anyOf,
``Literal[...]`` -> enum; anything else, or no annotation, accepts any JSON value.
Parameters with defaults are not required; a Google-style ``Args:`` section in the
docstring gives each parameter its description.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from typing import Any

_SCALARS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "None": {"type": "null"},
    "dict": {"type": "object"},
    "list": {"type": "array"},
    "tuple": {"type": "array"},
    "Any": {},
}
_SEQUENCES = {"list", "List", "Sequence", "Iterable", "tuple", "Tuple", "set", "Set"}
_MAPPINGS = {"dict", "Dict", "Mapping"}
_ARG_LINE = re.compile(r"^\s{2,}(\*{0,2}\w+)(?:\s*\([^)]*\))?\s*:\s*(.*)$")


def derive_input_schema(source: str, entrypoint: str) -> dict[str, Any]:
    """The JSON Schema of the keyword arguments ``entrypoint`` in ``source`` accepts."""
    function = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entrypoint
    )
    described = _documented_args(ast.get_docstring(function) or "")
    args = function.args
    params = args.args + args.kwonlyargs
    defaults = [None] * (len(args.args) - len(args.defaults)) + list(args.defaults)
    defaults += list(args.kw_defaults)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param, default in zip(params, defaults, strict=True):
        schema = _schema(param.annotation)
        if param.arg in described:
            schema = {**schema, "description": described[param.arg]}
        if default is None:
            required.append(param.arg)
        else:
            try:
                schema = {**schema, "default": ast.literal_eval(default)}
            except ValueError:
                pass  # not a literal (a call, a name): still optional, just undocumented
        properties[param.arg] = schema
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if args.kwarg is None:
        result["additionalProperties"] = False
    return result


@functools.lru_cache(maxsize=1024)
def derived_schema_json(source: str, entrypoint: str) -> str:
    """``derive_input_schema`` as canonical JSON text, computed once per version."""
    # Versions are immutable, so a schema derived once holds for good.
    return json.dumps(derive_input_schema(source, entrypoint), sort_keys=True)


def _schema(annotation: ast.expr | None) -> dict[str, Any]:
    if annotation is None:
        return {}
    if isinstance(annotation, ast.Constant):
        if annotation.value is None:
            return {"type": "null"}
        if isinstance(annotation.value, str):  # a string annotation: parse and map it
            try:
                return _schema(ast.parse(annotation.value, mode="eval").body)
            except SyntaxError:
                return {}
        return {}
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _any_of([annotation.left, annotation.right])
    name = _name(annotation)
    if name is not None:
        return dict(_SCALARS.get(name, {}))
    if isinstance(annotation, ast.Subscript):
        base = _name(annotation.value)
        items = annotation.slice
        elements = list(items.elts) if isinstance(items, ast.Tuple) else [items]
        if base in _SEQUENCES:
            return {"type": "array", "items": _schema(elements[0])}
        if base in _MAPPINGS and len(elements) == 2:
            return {"type": "object", "additionalProperties": _schema(elements[1])}
        if base == "Optional":
            return _any_of([elements[0], ast.Constant(None)])
        if base == "Union":
            return _any_of(elements)
        if base == "Literal":
            values = [e.value for e in elements if isinstance(e, ast.Constant)]
            return {"enum": values}
    return {}


def _any_of(annotations: list[ast.expr]) -> dict[str, Any]:
    options: list[dict[str, Any]] = []
    for annotation in annotations:
        schema = _schema(annotation)
        # Nested unions flatten: Optional[int | str] is anyOf integer, string, null.
        for option in schema.get("anyOf", [schema]):
            if option not in options:
                options.append(option)
    return {} if {} in options else {"anyOf": options}


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # typing.Optional, t.List, ...
        return node.attr
    return None


def _documented_args(docstring: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    described: dict[str, str] = {}
    current: str | None = None
    arg_indent = 0
    in_args = False
    for line in docstring.splitlines():
        stripped = line.strip()
        if not line.startswith(" ") and stripped.endswith(":"):
            in_args = stripped in ("Args:", "Arguments:", "Parameters:")
            current = None
            continue
        if not in_args or not stripped:
            continue
        match = _ARG_LINE.match(line)
        indent = len(line) - len(line.lstrip())
        if match and (current is None or indent <= arg_indent):
            current = match.group(1).lstrip("*")
            arg_indent = indent
            described[current] = match.group(2).strip()
        elif current is not None:  # a continuation line of the current description
            described[current] = f"{described[current]} {stripped}".strip()
    return described
