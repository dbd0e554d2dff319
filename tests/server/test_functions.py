"""The function store: validation, versioning, aliases and deletion, on both backends."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from tests.server import ACTOR
from toolvault.server.db.engine import Database
from toolvault.server.db.tables import FunctionVersion
from toolvault.server.domain.errors import InvalidArgument, NotFound
from toolvault.server.domain.names import parse_ref
from toolvault.server.services.functions import FunctionStore, PublishRequest

ADD = 'def main(a, b):\n    """Add two numbers."""\n    return a + b\n'


def count_versions(database: Database) -> int:
    with database.read.begin() as session:
        return session.scalar(select(func.count()).select_from(FunctionVersion)) or 0


def test_publish_stores_version_one_with_its_hash_and_docstring(functions: FunctionStore) -> None:
    version, created = functions.publish(PublishRequest(name="add", source=ADD), actor=ACTOR)
    assert created
    assert (version.name, version.version) == ("add", 1)
    assert re.fullmatch(r"[0-9a-f]{64}", version.sha256)
    assert version.content.description == "Add two numbers."
    assert version.content.entrypoint == "main"
    assert version.content.limits.timeout_ms == 5000


def test_same_content_again_returns_the_same_version(functions: FunctionStore) -> None:
    first, _ = functions.publish(PublishRequest(name="add", source=ADD), actor=ACTOR)
    again, created = functions.publish(PublishRequest(name="add", source=ADD), actor=ACTOR)
    assert not created
    assert (again.version, again.sha256) == (1, first.sha256)


def test_any_change_makes_the_next_version(functions: FunctionStore) -> None:
    first, _ = functions.publish(PublishRequest(name="add", source=ADD), actor=ACTOR)
    second, created = functions.publish(
        PublishRequest(name="add", source=ADD, timeout_ms=1000), actor=ACTOR
    )
    third, _ = functions.publish(
        PublishRequest(name="add", source=ADD + "\n# changed\n"), actor=ACTOR
    )
    assert created
    assert [second.version, third.version] == [2, 3]
    assert len({first.sha256, second.sha256, third.sha256}) == 3
    # The old version is unchanged: versions are immutable.
    assert functions.resolve("add@1").sha256 == first.sha256


def test_refs_resolve_by_number_alias_and_latest(functions: FunctionStore) -> None:
    functions.publish(PublishRequest(name="add", source=ADD), actor=ACTOR)
    functions.publish(PublishRequest(name="add", source=ADD + "# v2\n"), actor=ACTOR)
    info = functions.set_alias("add", "prod", 1, actor=ACTOR)
    assert info.aliases == {"prod": 1}
    assert functions.resolve("add").version == 2
    assert functions.resolve("add@latest").version == 2
    assert functions.resolve("add@1").version == 1
    assert functions.resolve("add@prod").version == 1
    functions.set_alias("add", "prod", 2, actor=ACTOR)
    assert functions.resolve("add@prod").version == 2
    functions.delete_alias("add", "prod", actor=ACTOR)
    with pytest.raises(NotFound, match="no alias 'prod'"):
        functions.resolve("add@prod")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("Add", "ref 'Add' is invalid"),
        ("add@0", "ref 'add@0' is invalid"),
        ("add@x y", "ref 'add@x y' is invalid"),
    ],
)
def test_malformed_refs_are_rejected(ref: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        parse_ref(ref)


def test_missing_function_version_and_alias_are_not_found(functions: FunctionStore) -> None:
    with pytest.raises(NotFound, match="function 'nope' not found"):
        functions.resolve("nope")
    functions.publish(PublishRequest(name="add", source=ADD), actor=ACTOR)
    with pytest.raises(NotFound, match=r"has no version 7 \(latest is 1\)"):
        functions.resolve("add@7")
    with pytest.raises(NotFound, match="has no version 9"):
        functions.set_alias("add", "prod", 9, actor=ACTOR)
    with pytest.raises(InvalidArgument, match="'latest' is kept"):
        functions.set_alias("add", "latest", 1, actor=ACTOR)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (PublishRequest(name="9x", source=ADD), "name '9x' is invalid"),
        (PublishRequest(name="x", source="  "), "source is empty"),
        (PublishRequest(name="x", source="def main(:\n"), "line 1, column 10"),
        (PublishRequest(name="x", source="import os\ndef main(): pass\n"), "line 1, column 8"),
        (PublishRequest(name="x", source="def run(): pass\n"), "'main'"),
        (
            PublishRequest(name="x", source=ADD, input_schema='{"type": 5}'),
            "input_schema_json is not a valid JSON Schema at type",
        ),
        (
            PublishRequest(name="x", source=ADD, output_schema="{nope"),
            "output_schema_json is not valid JSON",
        ),
        (PublishRequest(name="x", source=ADD, input_schema="[]"), "must be a JSON object"),
        (PublishRequest(name="x", source=ADD, timeout_ms=999_999), "limits.timeout_ms is 999999"),
        (PublishRequest(name="x", source=ADD, memory_mb=1), "limits.memory_mb is 1"),
        (PublishRequest(name="x", source=ADD, allowed_imports=("os",)), "['os'] are not on"),
        (PublishRequest(name="x", source="x" * 300_000), "more than the limit of 262144"),
    ],
)
def test_bad_functions_are_rejected_and_nothing_is_stored(
    functions: FunctionStore, database: Database, request_: PublishRequest, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        functions.publish(request_, actor=ACTOR)
    assert count_versions(database) == 0


def test_schemas_are_stored_in_canonical_form(functions: FunctionStore) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    version, _ = functions.publish(
        PublishRequest(name="add", source=ADD, input_schema=json.dumps(schema, indent=4)),
        actor=ACTOR,
    )
    same, created = functions.publish(
        PublishRequest(name="add", source=ADD, input_schema=json.dumps(schema)), actor=ACTOR
    )
    assert not created and same.version == version.version
    assert json.loads(version.content.input_schema or "") == schema


def test_listing_pages_through_functions_and_versions(functions: FunctionStore) -> None:
    for name in ["c", "a", "b"]:
        functions.publish(PublishRequest(name=name, source=ADD), actor=ACTOR)
    for n in range(4):
        functions.publish(PublishRequest(name="a", source=ADD + f"# {n}\n"), actor=ACTOR)
    page, token = functions.functions(size=2, token="")
    assert [f.name for f in page] == ["a", "b"] and token
    page, token = functions.functions(size=2, token=token)
    assert [f.name for f in page] == ["c"] and token == ""
    versions, token = functions.versions("a", size=3, token="")
    assert [v.version for v in versions] == [5, 4, 3]
    versions, token = functions.versions("a", size=3, token=token)
    assert [v.version for v in versions] == [2, 1] and token == ""
    with pytest.raises(InvalidArgument, match="page_token"):
        functions.functions(size=2, token="garbage!")


def test_delete_removes_versions_and_aliases(functions: FunctionStore, database: Database) -> None:
    functions.publish(PublishRequest(name="add", source=ADD), actor=ACTOR)
    functions.publish(PublishRequest(name="add", source=ADD + "# 2\n"), actor=ACTOR)
    functions.set_alias("add", "prod", 1, actor=ACTOR)
    assert [v.version for v in functions.delete("add", actor=ACTOR)] == [1, 2]
    assert count_versions(database) == 0
    with pytest.raises(NotFound):
        functions.resolve("add@prod")
    version, _ = functions.publish(PublishRequest(name="add", source=ADD), actor=ACTOR)
    assert version.version == 1


def test_concurrent_publishers_get_dense_unique_versions(functions: FunctionStore) -> None:
    sources = [ADD + f"# {n}\n" for n in range(12)]
    with ThreadPoolExecutor(6) as pool:
        versions = list(
            pool.map(
                lambda s: functions.publish(PublishRequest(name="add", source=s), actor=ACTOR)[0],
                sources,
            )
        )
    assert sorted(v.version for v in versions) == list(range(1, 13))
