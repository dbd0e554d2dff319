"""The tables: functions, agents, executions and their outputs, keys, audit events, secrets.

Functions have immutable versions and movable aliases; agents have immutable revisions.
Functions, agents and executions carry the namespace of their name (``team/name``; a bare
name is in ``default``) in a column of its own, so that a key's scope is an indexed filter.

The schema is owned by the Alembic migrations in ``migrations/``; these models must match
them (``tests/server/test_migrations.py`` compares the two).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Refuse naive datetimes and convert aware ones to UTC."""
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        """Attach UTC to the naive values SQLite returns."""
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with constraint names stable across SQLite and PostgreSQL."""

    metadata = MetaData(
        naming_convention={
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Function(Base):
    """A named function; its content lives in its versions."""

    __tablename__ = "functions"
    __table_args__ = (Index("ix_functions_namespace", "namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    namespace: Mapped[str] = mapped_column(String(32), server_default="default")
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    versions: Mapped[list[FunctionVersion]] = relationship(
        back_populates="function", cascade="all, delete-orphan", passive_deletes=True
    )
    aliases: Mapped[list[Alias]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="Alias.name"
    )


class FunctionVersion(Base):
    """One immutable version: never updated after insert."""

    __tablename__ = "function_versions"
    __table_args__ = (
        UniqueConstraint("function_id", "version"),
        UniqueConstraint("function_id", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function_id: Mapped[int] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    entrypoint: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text)
    input_schema: Mapped[str | None] = mapped_column(Text)
    output_schema: Mapped[str | None] = mapped_column(Text)
    timeout_ms: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    max_output_bytes: Mapped[int] = mapped_column(Integer)
    allowed_imports: Mapped[str] = mapped_column(Text)  # JSON list, sorted
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    max_concurrency: Mapped[int] = mapped_column(Integer, server_default="0")
    deterministic: Mapped[bool] = mapped_column(server_default=false())
    isolation: Mapped[str] = mapped_column(String(8), server_default="warm")  # warm or fresh
    egress: Mapped[str] = mapped_column(Text, server_default="[]")  # JSON list of rules, sorted
    secrets: Mapped[str] = mapped_column(Text, server_default="[]")  # JSON list of names, sorted

    function: Mapped[Function] = relationship(back_populates="versions")


class Alias(Base):
    """A movable name for one version of a function ("latest" is implicit, never stored)."""

    __tablename__ = "aliases"
    __table_args__ = (
        ForeignKeyConstraint(
            ["function_id", "version"],
            ["function_versions.function_id", "function_versions.version"],
            ondelete="CASCADE",
        ),
    )

    function_id: Mapped[int] = mapped_column(
        ForeignKey("functions.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Execution(Base):
    """One recorded run. Refers to its function by name and hash, so it outlives deletion."""

    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_start_time", "start_time", "id"),
        Index("ix_executions_function_name", "function_name", "start_time", "id"),
        Index("ix_executions_status", "status", "start_time", "id"),
        Index("ix_executions_agent", "agent", "start_time", "id"),
        Index("ix_executions_conversation_id", "conversation_id", "start_time", "id"),
        Index("ix_executions_namespace", "namespace", "start_time", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    function_name: Mapped[str] = mapped_column(String(128))
    namespace: Mapped[str] = mapped_column(String(32), server_default="default")
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    args_json: Mapped[str] = mapped_column(Text)
    args_truncated: Mapped[bool]
    result_json: Mapped[str] = mapped_column(Text)
    result_truncated: Mapped[bool]
    stdout_tail: Mapped[str] = mapped_column(Text)
    stderr_tail: Mapped[str] = mapped_column(Text)
    error_type: Mapped[str] = mapped_column(String(200))
    error_message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str] = mapped_column(Text)
    start_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float] = mapped_column(Float)
    cpu_time_ms: Mapped[float] = mapped_column(Float)
    peak_memory_bytes: Mapped[int] = mapped_column(BigInteger)
    caller: Mapped[str] = mapped_column(String(256))
    agent: Mapped[str] = mapped_column(String(128), server_default="")
    agent_revision: Mapped[int] = mapped_column(Integer, server_default="0")
    conversation_id: Mapped[str] = mapped_column(String(128), server_default="")
    chain_depth: Mapped[int] = mapped_column(Integer, server_default="0")
    cached: Mapped[bool] = mapped_column(server_default=false())
    cached_from: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    trace_id: Mapped[str] = mapped_column(String(32), server_default="")
    # "warm" or "fresh", how its sandbox ran; "" when none ran.
    isolation: Mapped[str] = mapped_column(String(8), server_default="")
    # JSON list of its egress requests (sandbox.EgressRecord's fields), in order.
    egress: Mapped[str] = mapped_column(Text, server_default="[]")
    # JSON list of its files in and out (domain.executions.ExecutionFile's fields).
    files: Mapped[str] = mapped_column(Text, server_default="[]")


class ExecutionOutput(Base):
    """The bytes of a file a run left in out/, kept for the file retention period.

    Apart from the execution's row, so that reading executions never loads them; its
    ``files`` column says what the run had, whether or not the bytes are still kept.
    """

    __tablename__ = "execution_outputs"
    __table_args__ = (Index("ix_execution_outputs_created_at", "created_at"),)

    execution_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Agent(Base):
    """A named agent; its definitions live in its revisions."""

    __tablename__ = "agents"
    __table_args__ = (Index("ix_agents_namespace", "namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    namespace: Mapped[str] = mapped_column(String(32), server_default="default")
    current_revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    capabilities: Mapped[list[AgentCapability]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="AgentCapability.capability"
    )


class AgentRevision(Base):
    """One immutable revision of an agent's definition, as canonical JSON."""

    __tablename__ = "agent_revisions"
    __table_args__ = (UniqueConstraint("agent_id", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    spec_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class AgentCapability(Base):
    """A capability of an agent's current revision, indexed for routing."""

    __tablename__ = "agent_capabilities"
    __table_args__ = (Index("ix_agent_capabilities_capability", "capability"),)

    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    capability: Mapped[str] = mapped_column(String(64), primary_key=True)


class IdempotencyKey(Base):
    """An Invoke idempotency key: the request it was first used for and the run it made.

    ``execution_id`` is NULL while the first call runs; the row is written before the run,
    so the primary key stops a concurrent duplicate from running too.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    key: Mapped[str] = mapped_column(String(192), primary_key=True)  # NAMESPACE/KEY
    fingerprint: Mapped[str] = mapped_column(String(64))
    execution_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """An API key: only a salted hash of its secret is stored; revoked keys stay for the audit.

    ``namespaces`` is a JSON list, or NULL for every namespace (admins).
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    salt: Mapped[str] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    namespaces: Mapped[str | None] = mapped_column(Text)
    agent: Mapped[str] = mapped_column(String(128), server_default="")
    description: Mapped[str] = mapped_column(String(256), server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """One change: who (the key's prefix), when, what action on which object, and details."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_time", "time", "id"),
        Index("ix_audit_events_namespace", "namespace", "time", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    peer: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(32))
    namespace: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(128))
    details: Mapped[str] = mapped_column(Text)


class Secret(Base):
    """A namespace's secret: its value only encrypted (``services.secrets``), never in clear.

    ``ciphertext`` is a Fernet token of the name and the value together, so that a token
    moved to another row (another namespace) fails to decrypt there.
    """

    __tablename__ = "secrets"
    __table_args__ = (Index("ix_secrets_namespace", "namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    namespace: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(64))


class FunctionsGeneration(Base):
    """One row counting the changes to functions, versions and aliases.

    Triggers (migration 0007) bump it in the transaction of every change, whichever code
    or replica makes it, so that a replica's resolve cache knows from one small read
    whether anything it holds may be stale (``services.functions``).
    """

    __tablename__ = "functions_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
