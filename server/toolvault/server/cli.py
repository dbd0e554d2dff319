"""The server's side of ``toolvault``: ``serve``, ``db upgrade``, ``doctor``, ``secrets rotate``.

The CLI in ``toolvault.cli`` parses the command line and calls these; options
left as None fall back to ``TOOLVAULT_*`` environment variables, then to defaults.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from toolvault import sandbox
from toolvault.server.app import StartupError
from toolvault.server.app import serve as run_server
from toolvault.server.config import Settings
from toolvault.server.db.engine import Database
from toolvault.server.domain.errors import FailedPrecondition
from toolvault.server.services.plugins import PluginError
from toolvault.server.services.secrets import Secrets
from toolvault.server.telemetry import logs

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def serve(
    *,
    listen: str | None = None,
    db: str | None = None,
    data_dir: str | None = None,
    metrics_port: int | None = None,
    plugins: tuple[str, ...] | None = None,
    auth: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    insecure: bool | None = None,
) -> int:
    """Start the server in the foreground; returns the process exit code."""
    settings = _settings(
        listen=listen,
        db=db,
        data_dir=data_dir,
        metrics_port=metrics_port,
        plugins=plugins,
        auth=auth,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        insecure=insecure,
    )
    if settings is None:
        return EXIT_USAGE
    if problem := settings.exposure_problem():
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(settings)
    try:
        asyncio.run(run_server(settings))
    except (StartupError, PluginError) as e:
        logging.getLogger("toolvault.server").error("%s", e)
        return EXIT_FAILED
    except SQLAlchemyError as e:
        logging.getLogger("toolvault.server").error("database error: %s", e)
        return EXIT_FAILED
    return EXIT_OK


def db_upgrade(*, db: str | None = None, data_dir: str | None = None) -> int:
    """Apply pending database migrations; returns the process exit code."""
    found = _database(db, data_dir)
    if found is None:
        return EXIT_USAGE
    _, database = found
    try:
        database.upgrade()
    except SQLAlchemyError as e:
        print(f"error: database upgrade failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        database.dispose()
    print(f"database at head: {database.url.render_as_string(hide_password=True)}")
    return EXIT_OK


def secrets_rotate(*, db: str | None = None, data_dir: str | None = None) -> int:
    """Re-encrypt every secret with the first key of TOOLVAULT_SECRETS_KEY; the exit code."""
    found = _database(db, data_dir)
    if found is None:
        return EXIT_USAGE
    settings, database = found
    try:
        rotated = Secrets(database, settings.secrets_keys()).rotate()
    except FailedPrecondition as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except SQLAlchemyError as e:
        print(f"error: re-encrypting the secrets failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        database.dispose()
    print(f"re-encrypted {rotated} secret{'' if rotated == 1 else 's'} with the first key")
    return EXIT_OK


def doctor(*, json_output: bool = False) -> int:
    """Print each sandbox layer, active or not, as a probe sandbox on this host found it."""
    # The probe's warnings would repeat what the table says.
    logging.getLogger("toolvault.sandbox").setLevel(logging.ERROR)
    layers = sandbox.isolation_layers()
    if json_output:
        print(json.dumps([dataclasses.asdict(layer) for layer in layers], indent=2))
        return EXIT_OK
    width = max(len(layer.name) for layer in layers)
    print(f"{'LAYER':<{width}}  ACTIVE  DETAIL")
    for layer in layers:
        print(f"{layer.name:<{width}}  {'yes' if layer.active else 'no':<6}  {layer.detail}")
    return EXIT_OK


def _settings(**flags: Any) -> Settings | None:
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as e:
        for error in e.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            print(f"error: {field} (TOOLVAULT_{field.upper()}): {error['msg']}", file=sys.stderr)
        return None


def _database(db: str | None, data_dir: str | None) -> tuple[Settings, Database] | None:
    """The settings and the database of a command on it; None after a usage error."""
    settings = _settings(db=db, data_dir=data_dir)
    if settings is None:
        return None
    _configure_logging(settings)
    return settings, Database(settings.database_url)


def _configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)
