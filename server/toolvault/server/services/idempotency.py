"""Idempotency keys of Invoke: a retried call with the same key returns the first run.

A key is claimed before the run by inserting its row (execution id NULL: pending) in a
short transaction; the table's primary key lets only one of several concurrent duplicates
insert it, on any replica. The run's execution is bound to the key in the transaction that
records the run, so the history and the key agree even across a crash. A call that fails
before a run is recorded (bad arguments, a full queue, a cancelled caller) releases its
key, so the client's retry runs.

A pending key is a lease: its owner renews it (``renew``, every third of ``lease_s``)
for as long as the call runs, and a claim that finds it unrenewed for ``lease_s`` takes
it over, since its owner (a replica that was killed, or lost the database) is gone. So a
retry of a call that a dead replica held runs elsewhere within ``lease_s``, instead of
waiting for the longest possible run. The price: an owner cut off from the database for
``lease_s`` while still running may see its call run a second time, and the replicas'
clocks must agree to well within ``lease_s``.

Keys expire ``ttl_s`` seconds after their first use (a pending key's ``created_at`` is
its last renewal); expired rows are deleted by the next claim of any key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass

from toolvault.server.db import idempotency as queries
from toolvault.server.db.engine import Database
from toolvault.server.db.tables import utcnow
from toolvault.server.domain.errors import FailedPrecondition

MAX_KEY_LENGTH = 128


@dataclass(frozen=True)
class Claim:
    """What claiming a key found.

    Attributes:
        owned: This call holds the key and must run (and then bind or release it).
        execution_id: The run the key's first call made; None while it is pending.
    """

    owned: bool
    execution_id: uuid.UUID | None = None


def fingerprint(ref: str, args_json: str, files: list[tuple[str, str]] | None = None) -> str:
    """Hex sha256 of the request a key stands for: the ref and the arguments as sent.

    And its files' names and sha256 (in name order), when it has files; without any, the
    same as before calls had files.
    """
    request: list[object] = [ref, args_json or "{}"]
    if files:
        request.append(files)
    return hashlib.sha256(json.dumps(request).encode()).hexdigest()


class IdempotencyKeys:
    """Claims, releases and expires idempotency keys; each method is one unit of work."""

    def __init__(self, db: Database, *, ttl_s: float, lease_s: float) -> None:
        self._db = db
        self._ttl = dt.timedelta(seconds=ttl_s)
        self._lease = dt.timedelta(seconds=lease_s)
        self.renew_every_s = lease_s / 3

    def claim(self, key: str, request: str) -> Claim:
        """Take ``key`` (``NAMESPACE/KEY``) for the request ``request``, or report its state.

        Raises:
            FailedPrecondition: The key was used for a different request.
            sqlalchemy.exc.IntegrityError: A concurrent call inserted the key first;
                claiming again reports its state.
        """
        now = utcnow()
        with self._db.write.begin() as session:
            queries.delete_expired(session, now - self._ttl)
            row = queries.locked(session, key)
            if row is None:
                queries.add(session, key, request, now)
                return Claim(owned=True)
            if row.fingerprint != request:
                raise FailedPrecondition(
                    f"idempotency_key {key.partition('/')[2]!r} was first used for a different "
                    "request (another ref or other arguments); use a new key for a new request"
                )
            if row.execution_id is None and row.created_at < now - self._lease:
                queries.take_over(row, now)
                return Claim(owned=True)
            return Claim(owned=False, execution_id=row.execution_id)

    def renew(self, key: str) -> None:
        """Extend the lease of a pending key that this call owns."""
        with self._db.write.begin() as session:
            queries.renew(session, key, utcnow())

    def release(self, key: str) -> None:
        """Give up a pending key whose call recorded no run, so that a retry may run."""
        with self._db.write.begin() as session:
            queries.release(session, key)
