from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import ServerProcess
from toolvault.client import Client
from toolvault.server.config import Settings
from toolvault.server.db.engine import Database
from toolvault.server.services.functions import FunctionStore


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


@pytest.fixture
def auth_server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A started server with ``--auth required`` (and a secrets key) on each database backend."""
    server = ServerProcess(
        db=db_url,
        data_dir=tmp_path / "data",
        extra_args=["--auth", "required"],
        env={"TOOLVAULT_SECRETS_KEY": Fernet.generate_key().decode()},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def admin(auth_server: ServerProcess) -> Iterator[Client]:
    """A client of ``auth_server`` with its bootstrap admin key."""
    with Client(auth_server.address, api_key=auth_server.bootstrap_key(), retries=False) as client:
        yield client
