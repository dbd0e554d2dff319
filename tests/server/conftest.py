from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from toolvault.server.config import Settings
from toolvault.server.db import Database
from toolvault.server.functions import FunctionStore


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.fixture
def functions(database: Database, settings: Settings) -> FunctionStore:
    return FunctionStore(database, settings)
