"""A version's isolation (warm or fresh) is part of its content; operators may force fresh.

Where the calls then run is in test_warm_workers.py; here: the hash, the store, the
migration that brought the field, and the settings.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from pydantic import ValidationError

from tests.server import ACTOR
from toolvault.sandbox import Limits
from toolvault.server.config import Settings
from toolvault.server.db.engine import Database
from toolvault.server.db.tables import UTCDateTime
from toolvault.server.domain.functions import Isolation, VersionContent
from toolvault.server.services.functions import FunctionStore, PublishRequest

ADD = "def main(a: int, b: int) -> int:\n    return a + b\n"
CONTENT = VersionContent(
    source=ADD,
    entrypoint="main",
    description="Add two integers.",
    input_schema=None,
    output_schema=None,
    limits=Limits(timeout_ms=5000, memory_mb=256, max_output_bytes=1024 * 1024),
    allowed_imports=("json", "math"),
)
# Computed before isolation existed: a version stored then must keep its hash.
CONTENT_SHA256 = "f69b457281a8b9aac32ad75feb50d8678ffe28c217770f7e3ed20976e618806e"
ADD_REQUEST = PublishRequest(
    name="add", source=ADD, description="Add two integers.", allowed_imports=("json", "math")
)


def test_a_warm_version_keeps_the_hash_it_had_before_isolation_existed() -> None:
    assert CONTENT.isolation is Isolation.WARM
    assert CONTENT.sha256() == CONTENT_SHA256


def test_fresh_isolation_joins_the_canonical_content_and_changes_the_hash() -> None:
    fresh = replace(CONTENT, isolation=Isolation.FRESH)
    assert fresh.sha256() == "d0048deba53653c2c2ce10894fb1394986af642842b565779e9dcfdc25975f9b"


def test_the_same_source_published_fresh_is_a_new_version(functions: FunctionStore) -> None:
    warm, _ = functions.publish(ADD_REQUEST, actor=ACTOR)
    assert (warm.version, warm.sha256, warm.content.isolation) == (1, CONTENT_SHA256, "warm")
    fresh_request = replace(ADD_REQUEST, isolation=Isolation.FRESH)
    fresh, created = functions.publish(fresh_request, actor=ACTOR)
    assert (fresh.version, created, fresh.content.isolation) == (2, True, Isolation.FRESH)
    assert fresh.sha256 == fresh.content.sha256() != warm.sha256
    again, created = functions.publish(fresh_request, actor=ACTOR)
    assert (again.version, created) == (2, False)
    assert functions.resolve("add@2").content.isolation is Isolation.FRESH
    assert functions.resolve("add@1").content.isolation is Isolation.WARM
    listed, _ = functions.versions("add", size=10, token="")
    assert [v.content.isolation for v in listed] == [Isolation.FRESH, Isolation.WARM]


def test_a_version_stored_at_migration_0005_is_warm_with_its_hash_after_the_upgrade(
    db_url: str, settings: Settings
) -> None:
    db = Database(db_url)
    try:
        config = Config()
        config.set_main_option("script_location", "toolvault.server.db:migrations")
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0005")
        _store_at_0005(db)
        db.upgrade()
        functions = FunctionStore(db, settings)
        version = functions.resolve("add")
        assert (version.version, version.sha256) == (1, CONTENT_SHA256)
        assert version.content == CONTENT
        # Publishing the same content finds the old version: its identity carried over.
        again, created = functions.publish(ADD_REQUEST, actor=ACTOR)
        assert (again.version, created) == (1, False)
    finally:
        db.dispose()


def _store_at_0005(db: Database) -> None:
    """Insert CONTENT as version 1 of ``add`` through the tables as they were at 0005."""
    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    functions = sa.table(
        "functions",
        *(sa.column(c) for c in ("id", "name", "namespace", "latest_version")),
        sa.column("created_at", UTCDateTime()),
        sa.column("updated_at", UTCDateTime()),
    )
    versions = sa.table(
        "function_versions",
        *(
            sa.column(c)
            for c in (
                "id function_id version sha256 source entrypoint description input_schema "
                "output_schema timeout_ms memory_mb max_output_bytes allowed_imports "
                "max_concurrency deterministic"
            ).split()
        ),
        sa.column("created_at", UTCDateTime()),
    )
    with db.engine.begin() as connection:
        connection.execute(
            functions.insert().values(
                id=1,
                name="add",
                namespace="default",
                latest_version=1,
                created_at=now,
                updated_at=now,
            )
        )
        connection.execute(
            versions.insert().values(
                id=1,
                function_id=1,
                version=1,
                sha256=CONTENT_SHA256,
                source=CONTENT.source,
                entrypoint=CONTENT.entrypoint,
                description=CONTENT.description,
                input_schema=None,
                output_schema=None,
                timeout_ms=CONTENT.limits.timeout_ms,
                memory_mb=CONTENT.limits.memory_mb,
                max_output_bytes=CONTENT.limits.max_output_bytes,
                allowed_imports=json.dumps(sorted(CONTENT.allowed_imports)),
                max_concurrency=0,
                deterministic=False,
                created_at=now,
            )
        )


def test_fresh_namespaces_are_read_as_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLVAULT_FRESH_NAMESPACES", "team, ops-2,default")
    assert Settings().fresh_namespaces == ("team", "ops-2", "default")
    monkeypatch.setenv("TOOLVAULT_FRESH_NAMESPACES", "")
    assert Settings().fresh_namespaces == ()


@pytest.mark.parametrize("bad", ["Team", "team/f", "2team", "t" * 33])
def test_a_fresh_namespace_that_is_no_namespace_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("TOOLVAULT_FRESH_NAMESPACES", f"team,{bad}")
    with pytest.raises(ValidationError) as caught:
        Settings()
    (error,) = caught.value.errors()
    assert error["loc"] == ("fresh_namespaces",)
    assert error["msg"] == (
        f"Value error, {bad!r} is not a namespace: use 1 to 32 of a-z, 0-9, _ and -, "
        "starting with a letter"
    )
