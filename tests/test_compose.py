"""docker-compose.yml wires toolvault to PostgreSQL (no Docker engine runs here to start it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from tests.conftest import TOOLVAULT, serve_and_probe
from tests.test_dockerfile import instructions
from toolvault.server.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
POSTGRES = COMPOSE["services"]["postgres"]
TOOLVAULT_SERVICE = COMPOSE["services"]["toolvault"]


def test_postgres_is_pinned_healthy_and_keeps_its_data_on_a_volume() -> None:
    assert POSTGRES["image"] == "postgres:15.20-bookworm"
    assert POSTGRES["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert POSTGRES["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert set(COMPOSE["volumes"]) == {"postgres-data", "toolvault-data"}


def test_toolvault_is_built_from_the_dockerfile_and_waits_for_a_healthy_database() -> None:
    build = TOOLVAULT_SERVICE["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert TOOLVAULT_SERVICE["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert TOOLVAULT_SERVICE["ports"] == ["127.0.0.1:50051:50051"]
    assert TOOLVAULT_SERVICE["volumes"] == ["toolvault-data:/var/lib/toolvault"]
    assert instructions("VOLUME") == ['["/var/lib/toolvault"]']


def test_toolvaults_health_check_is_the_images() -> None:
    (healthcheck,) = instructions("HEALTHCHECK")
    image_command = json.loads(healthcheck.partition(" CMD ")[2])
    assert TOOLVAULT_SERVICE["healthcheck"]["test"] == ["CMD", *image_command]


def test_every_variable_set_for_toolvault_is_a_setting() -> None:
    environment = TOOLVAULT_SERVICE["environment"]
    settings = {f"TOOLVAULT_{name.upper()}" for name in Settings.model_fields}
    assert set(environment) <= settings
    url = make_url(environment["TOOLVAULT_DB"].replace("${POSTGRES_PASSWORD:-toolvault}", "pw"))
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgres", 5432)
    postgres = POSTGRES["environment"]
    assert (url.username, url.database) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])


def test_the_images_command_serves_with_the_compose_settings(pg_url: str, tmp_path: Path) -> None:
    """ENTRYPOINT + CMD (`toolvault serve`) with the service's environment, on a local database."""
    environment = {
        **TOOLVAULT_SERVICE["environment"],
        "TOOLVAULT_DB": pg_url,
        "TOOLVAULT_LISTEN": "127.0.0.1:0",
        "TOOLVAULT_DATA_DIR": str(tmp_path),
    }
    code, out, log = serve_and_probe(environment, tmp_path)
    assert (code, out) == (0, "SERVING\n")
    assert log[0].startswith('{"time": ')  # TOOLVAULT_LOG_FORMAT=json took effect


def test_serve_help_lists_the_plugin_flag() -> None:
    done = subprocess.run([TOOLVAULT, "serve", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "--plugin MODULE:ATTR" in done.stdout
