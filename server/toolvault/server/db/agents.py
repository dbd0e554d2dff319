"""Queries of the agent tables: agents, their revisions and capabilities.

Every function takes the session of the caller's unit of work and never commits.
Revisions come back as the domain's frozen :class:`AgentInfo`; agent rows only to be
handed back to another query of this module.
"""

from __future__ import annotations

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from toolvault.server.db.tables import Agent, AgentCapability, AgentRevision, utcnow
from toolvault.server.domain.agents import AgentDefinition, AgentInfo
from toolvault.server.domain.names import Scope, namespace_of


def find(session: Session, name: str, *, lock: bool = False) -> Agent | None:
    """The agent named ``name``; ``lock`` takes a row lock for a following write."""
    query = select(Agent).where(Agent.name == name)
    return session.scalar(query.with_for_update() if lock else query)


def add_revision(session: Session, agent: Agent | None, definition: AgentDefinition) -> AgentInfo:
    """Store ``definition`` as the next revision of ``agent`` (None: a new agent)."""
    now = utcnow()
    if agent is None:
        agent = Agent(
            name=definition.name,
            namespace=namespace_of(definition.name),
            current_revision=0,
            created_at=now,
            updated_at=now,
        )
        session.add(agent)
    agent.current_revision += 1
    agent.updated_at = now
    agent.capabilities = [AgentCapability(capability=c) for c in definition.capabilities]
    session.flush()
    row = AgentRevision(
        agent_id=agent.id,
        revision=agent.current_revision,
        spec_json=definition.canonical(),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return _info(row)


def revision(session: Session, agent: Agent, number: int) -> AgentInfo | None:
    """Revision ``number`` of ``agent``, if it exists."""
    row = session.scalar(
        select(AgentRevision).where(
            AgentRevision.agent_id == agent.id, AgentRevision.revision == number
        )
    )
    return None if row is None else _info(row)


def page(
    session: Session, *, scope: Scope, capability: str, after: str | None, limit: int
) -> list[Agent]:
    """Up to ``limit`` agents in ``scope`` by name after ``after``, optionally with a capability."""
    query = _in_scope(select(Agent).order_by(Agent.name), scope)
    if capability:
        query = query.join(AgentCapability).where(AgentCapability.capability == capability)
    if after is not None:
        query = query.where(Agent.name > after)
    return list(session.scalars(query.limit(limit)))


def revisions(session: Session, agent: Agent, *, before: int | None, limit: int) -> list[AgentInfo]:
    """Up to ``limit`` revisions of ``agent``, newest first, below revision ``before``."""
    query = (
        select(AgentRevision)
        .where(AgentRevision.agent_id == agent.id)
        .order_by(AgentRevision.revision.desc())
    )
    if before is not None:
        query = query.where(AgentRevision.revision < before)
    return [_info(row) for row in session.scalars(query.limit(limit))]


def with_capability(session: Session, capability: str, scope: Scope) -> list[Agent]:
    """Every agent in ``scope`` with ``capability``, by name."""
    return list(
        session.scalars(
            _in_scope(select(Agent), scope)
            .join(AgentCapability)
            .where(AgentCapability.capability == capability)
            .order_by(Agent.name)
        )
    )


def delete(session: Session, agent: Agent) -> int:
    """Delete ``agent`` with its revisions; count the revisions."""
    count = session.scalar(select(func.count()).where(AgentRevision.agent_id == agent.id))
    session.delete(agent)
    return count or 0


def _info(row: AgentRevision) -> AgentInfo:
    return AgentInfo(AgentDefinition.from_canonical(row.spec_json), row.revision, row.created_at)


def _in_scope(query: Select[Agent], scope: Scope) -> Select[Agent]:
    if scope.namespaces is None:
        return query
    return query.where(Agent.namespace.in_(scope.namespaces))
