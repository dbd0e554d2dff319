"""Server configuration: command-line flags > ``TOOLVAULT_*`` environment variables > defaults."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from toolvault.sandbox import (
    DEFAULT_ALLOWED_IMPORTS,
    MAX_FILES_BYTES,
    EgressError,
    EgressRule,
    parse_rules,
)
from toolvault.server.domain.executions import DEFAULT_FILE_RETENTION_S
from toolvault.server.domain.names import NAMESPACE, NAMESPACE_RULE

MiB = 1024 * 1024


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/toolvault``, or ``~/.local/share/toolvault``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "toolvault"


class Settings(BaseSettings):
    """Everything the server can be told; each field is also ``TOOLVAULT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TOOLVAULT_", extra="forbid")

    listen: str = Field("127.0.0.1:50051", description="HOST:PORT to serve gRPC on")
    data_dir: Path = Field(default_factory=default_data_dir, description="where state lives")
    db: str = Field("", description="SQLAlchemy URL; default: SQLite file in the data dir")
    max_concurrent_runs: int = Field(max(os.cpu_count() or 1, 2), ge=1, le=1024)
    max_queued_runs: int = Field(256, ge=0, le=100_000)
    default_timeout_ms: int = Field(5_000, ge=10)
    max_timeout_ms: int = Field(60_000, ge=10)
    default_memory_mb: int = Field(256, ge=32)
    max_memory_mb: int = Field(4096, ge=32)
    default_max_output_bytes: int = Field(1 * MiB, ge=1024)
    max_max_output_bytes: int = Field(16 * MiB, ge=1024)
    max_source_bytes: int = Field(256 * 1024, ge=1024)
    max_args_bytes: int = Field(1 * MiB, ge=1024)
    allowed_imports: Annotated[tuple[str, ...], NoDecode] = DEFAULT_ALLOWED_IMPORTS
    sandbox_mode: Literal["warm", "fresh"] = Field(
        "warm",
        description="warm: each version's calls run as it was published: in warm workers "
        "of its own, or fresh; fresh: a new sandbox process for every call",
    )
    fresh_namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="namespaces whose calls always run fresh, whatever their versions say"
    )
    warm_workers: int = Field(16, ge=1, le=4096, description="warm workers alive at once")
    warm_workers_per_version: int = Field(4, ge=1, le=1024)
    warm_worker_calls: int = Field(1_000, ge=1, description="calls before a worker retires")
    warm_worker_idle_s: float = Field(60.0, gt=0, description="idle time before it retires")
    warm_idle_memory_mb: int = Field(
        256, ge=1, description="memory idle workers may hold beyond their start, together"
    )
    fresh_spares: int = Field(
        2, ge=0, le=64, description="sandboxes made ahead of time for fresh calls, one call each"
    )
    default_max_chain_depth: int = Field(3, ge=0)
    max_chain_depth: int = Field(10, ge=0)
    shutdown_grace_s: float = Field(10.0, ge=0)
    cache_ttl_s: float = Field(300.0, gt=0, description="lifetime of a cached result")
    cache_max_entries: int = Field(10_000, ge=0, description="result cache size; 0: off")
    resolve_cache_entries: int = Field(
        1024, ge=0, description="refs whose version each replica keeps; 0: off"
    )
    idempotency_ttl_s: float = Field(86_400.0, gt=0, description="lifetime of a key")
    idempotency_lease_s: float = Field(
        10.0, ge=1, description="a key held by a dead replica is free after this"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus port")
    metrics_host: str = "127.0.0.1"
    plugins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="MODULE:ATTRIBUTE plugins to load beside the entry points"
    )
    otlp_endpoint: str = Field("", description="OTLP/gRPC collector for traces; default: off")
    auth: Literal["off", "required"] = Field("off", description="require API keys")
    admin_key: SecretStr | None = Field(None, description="the first admin key, on first start")
    secrets_key: SecretStr | None = Field(
        None,
        description="Fernet keys, comma-separated, that encrypt secrets at rest: the first "
        "encrypts, all decrypt (rotation); without one, secrets cannot be set",
    )
    rate_limit_per_s: float = Field(100.0, ge=0, description="calls a second per key; 0: off")
    rate_limit_burst: int = Field(200, ge=1, description="calls a key may make at once")
    tls_cert: Path | None = Field(None, description="PEM certificate chain; enables TLS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(None, description="PEM CA; requires client certificates")
    insecure: bool = Field(False, description="allow a non-loopback listen without auth and TLS")
    require_isolation: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="sandbox layers (toolvault doctor's names, or all) needed to start"
    )
    egress: Literal["off", "allowlist"] = Field(
        "off",
        description="off: no call reaches the network; allowlist: a call reaches the hosts "
        "its version declares, within its namespace's list (egress_namespaces)",
    )
    egress_namespaces: dict[str, tuple[str, ...]] = Field(
        {},
        description="JSON, namespace to the hosts its versions may declare, e.g. "
        '{"default": ["api.example.com:443", "*.example.org"]}',
    )
    egress_allow_private: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="addresses or networks (CIDR) a door may reach although they are not "
        "public, e.g. a service on the LAN; by default none",
    )
    egress_max_requests: int = Field(16, ge=1, le=10_000, description="connections per call")
    egress_max_bytes: int = Field(8 * MiB, ge=1024, description="per call, sent and received each")
    egress_request_timeout_ms: int = Field(
        10_000, ge=100, description="from a request to the end of its connection"
    )
    max_files: int = Field(16, ge=0, le=1_000, description="files a call gets, and leaves in out/")
    max_file_bytes: int = Field(
        4 * MiB, ge=0, le=MAX_FILES_BYTES, description="the size of each of those files"
    )
    max_files_bytes: int = Field(
        MAX_FILES_BYTES, ge=0, le=MAX_FILES_BYTES, description="a call's files together, each way"
    )
    file_retention_s: float = Field(
        DEFAULT_FILE_RETENTION_S,
        ge=0,
        le=100 * 365 * 86_400,
        description="how long output files' bytes are kept; 0: not kept",
    )

    @field_validator(
        "allowed_imports",
        "plugins",
        "require_isolation",
        "fresh_namespaces",
        "egress_allow_private",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        # A comma-separated list reads better in an environment variable than JSON.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("fresh_namespaces")
    @classmethod
    def _check_namespaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not NAMESPACE.fullmatch(name):
                raise ValueError(f"{name!r} is not a namespace: use {NAMESPACE_RULE}")
        return value

    @field_validator("egress_namespaces")
    @classmethod
    def _check_egress_namespaces(
        cls, value: dict[str, tuple[str, ...]]
    ) -> dict[str, tuple[str, ...]]:
        normal = {}
        for name, entries in value.items():
            if not NAMESPACE.fullmatch(name):
                raise ValueError(f"{name!r} is not a namespace: use {NAMESPACE_RULE}")
            try:
                normal[name] = tuple(str(rule) for rule in parse_rules(entries))
            except EgressError as exc:
                raise ValueError(f"namespace {name!r}: {exc}") from None
        return normal

    @field_validator("egress_allow_private")
    @classmethod
    def _check_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an IP address or network") from None
        return value

    def egress_ceiling(self, namespace: str) -> tuple[EgressRule, ...]:
        """What the versions of ``namespace`` may reach at most; nothing with egress off."""
        if self.egress == "off":
            return ()
        return parse_rules(self.egress_namespaces.get(namespace, ()))

    @field_validator("secrets_key")
    @classmethod
    def _check_secrets_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None  # an empty variable, as a template leaves it, means none
        # Says which key of the list is wrong, never what it holds.
        for number, key in enumerate(value.get_secret_value().split(","), 1):
            try:
                Fernet(key.strip())
            except ValueError:
                raise ValueError(
                    f"key {number} is not a Fernet key (32 bytes in URL-safe base64, "
                    "as `toolvault secrets generate-key` prints)"
                ) from None
        return value

    def secrets_keys(self) -> list[str]:
        """The Fernet keys of ``secrets_key``, the one that encrypts first; [] for none."""
        if self.secrets_key is None:
            return []
        return [key.strip() for key in self.secrets_key.get_secret_value().split(",")]

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_defaults_within_maxima(self) -> Settings:
        for default, maximum in (
            ("default_timeout_ms", "max_timeout_ms"),
            ("default_memory_mb", "max_memory_mb"),
            ("default_max_output_bytes", "max_max_output_bytes"),
        ):
            if getattr(self, default) > getattr(self, maximum):
                raise ValueError(f"{default} must not exceed {maximum}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self

    def exposure_problem(self) -> str | None:
        """Why listening where configured would be unsafe, or None.

        Beyond loopback, anyone who reaches the port could run code: that needs keys and
        TLS, or an explicit ``--insecure`` (e.g. behind a mesh that does both).
        """
        host = self.listen.rpartition(":")[0].strip("[]")
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback or self.insecure or (self.auth == "required" and self.tls_cert):
            return None
        missing = " and ".join(
            what
            for what, absent in (
                ("authentication (--auth required)", self.auth != "required"),
                ("TLS (--tls-cert and --tls-key)", self.tls_cert is None),
            )
            if absent
        )
        return (
            f"refusing to listen on {self.listen} without {missing}: anyone who can reach "
            "the port could run code. Configure them, or pass --insecure "
            "(TOOLVAULT_INSECURE=true) to accept the risk"
        )

    @property
    def database_url(self) -> str:
        """The configured URL, or the embedded SQLite file in the data directory."""
        return self.db or f"sqlite:///{self.data_dir / 'toolvault.db'}"
