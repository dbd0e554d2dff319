"""check_source: every problem with its position, as values; the entrypoint's docstring."""

from textwrap import dedent

import pytest

from toolvault.sandbox import CheckedSource, SourceIssue, check_source

ALLOWED = ("json", "math")


def check(source: str, entrypoint: str = "main") -> CheckedSource:
    return check_source(dedent(source), entrypoint=entrypoint, allowed_imports=ALLOWED)


def test_accepts_a_plain_function() -> None:
    assert check("def main(a, b):\n    return a + b\n") == CheckedSource(issues=(), docstring=None)


def test_a_syntax_error_has_its_line_and_column() -> None:
    checked = check("def main():\n    return (1 +\n")

    assert checked.issues == (SourceIssue("SyntaxError: '(' was never closed", 2, 12),)
    assert not checked.ok


def test_checking_stops_at_a_syntax_error() -> None:
    checked = check("import os\ndef main()\n    pass\n")

    assert checked.issues == (SourceIssue("SyntaxError: expected ':'", 2, 11),)


def test_a_compile_time_error_is_a_syntax_error() -> None:
    checked = check("def main():\n    pass\nreturn 1\n")

    assert checked.issues == (SourceIssue("SyntaxError: 'return' outside function", 3, 1),)


@pytest.mark.parametrize(
    ("source", "issue"),
    [
        ("import os", SourceIssue("import of 'os' is not allowed (allowed: json, math)", 1, 8)),
        (
            "from subprocess import run",
            SourceIssue("import of 'subprocess' is not allowed (allowed: json, math)", 1, 1),
        ),
        (
            "import json, os.path",
            SourceIssue("import of 'os.path' is not allowed (allowed: json, math)", 1, 14),
        ),
        (
            "def main():\n    import sys",
            SourceIssue("import of 'sys' is not allowed (allowed: json, math)", 2, 12),
        ),
    ],
)
def test_cant_import_modules_outside_the_allow_list(source: str, issue: SourceIssue) -> None:
    assert check(f"{source}\ndef main():\n    pass\n").issues == (issue,)


def test_can_import_allowed_modules_their_submodules_and_future_features() -> None:
    source = """\
        from __future__ import annotations
        import json
        import json.decoder
        from math import pi
        def main():
            pass
    """

    assert check(source).ok


@pytest.mark.parametrize("source", ["from . import helpers", "from .helpers import f"])
def test_cant_use_relative_imports(source: str) -> None:
    checked = check(f"def main():\n    pass\n{source}\n")

    assert checked.issues == (SourceIssue("relative imports are not allowed", 3, 1),)


def test_a_missing_entrypoint_is_named_with_the_functions_found() -> None:
    checked = check("def helper():\n    pass\nasync def other():\n    pass\n")

    message = "no top-level function named 'main' (top-level functions: helper, other)"
    assert checked.issues == (SourceIssue(message, None, None),)


def test_a_nested_function_is_not_an_entrypoint() -> None:
    checked = check("class Tool:\n    def main(self):\n        pass\n")

    message = "no top-level function named 'main' (top-level functions: none)"
    assert checked.issues == (SourceIssue(message, None, None),)


@pytest.mark.parametrize(
    ("entrypoint", "message"),
    [
        ("run-it", "entrypoint 'run-it' is not a valid Python identifier"),
        ("class", "entrypoint 'class' is not a valid Python identifier"),
        ("_main", "entrypoint '_main' must not start with '_'"),
    ],
)
def test_the_entrypoint_must_be_a_public_identifier(entrypoint: str, message: str) -> None:
    checked = check("def main():\n    pass\n", entrypoint=entrypoint)

    assert checked.issues == (SourceIssue(message, None, None),)


def test_underscore_names_are_rejected_where_they_are() -> None:
    source = """\
        def main(data):
            _cache = {}
            return data.__class__
    """

    assert check(source).issues == (
        SourceIssue('"_cache" is an invalid variable name because it starts with "_"', 2, 5),
        SourceIssue('"__class__" is an invalid attribute name because it starts with "_".', 3, 12),
    )


def test_columns_count_characters_not_bytes() -> None:
    checked = check("def main():\n    s = 'é'; _x = 1\n")

    assert checked.issues == (
        SourceIssue('"_x" is an invalid variable name because it starts with "_"', 2, 14),
    )


def test_issues_come_restrictions_first_then_imports_then_the_entrypoint() -> None:
    checked = check("import os\n_x = 1\n")

    assert [issue.message for issue in checked.issues] == [
        '"_x" is an invalid variable name because it starts with "_"',
        "import of 'os' is not allowed (allowed: json, math)",
        "no top-level function named 'main' (top-level functions: none)",
    ]


def test_accepts_an_async_entrypoint_and_returns_its_cleaned_docstring() -> None:
    source = '''\
        async def main(n):
            """Double a number.

            Args:
                n: The number.
            """
            return await twice(n)

        async def twice(n):
            return 2 * n
    '''

    assert check(source) == CheckedSource(
        issues=(), docstring="Double a number.\n\nArgs:\n    n: The number."
    )


def test_async_for_stays_forbidden() -> None:
    checked = check("async def main(items):\n    async for item in items:\n        pass\n")

    assert checked.issues == (SourceIssue("AsyncFor statements are not allowed.", 2, 5),)


def test_absurdly_nested_source_is_an_issue_not_an_exception() -> None:
    checked = check("def main():\n    return " + "-" * 100_000 + "1\n")

    assert checked.issues == (SourceIssue("source is nested too deeply", None, None),)
