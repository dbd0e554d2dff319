"""Secrets: setting, listing and deleting them, the values a call gets, and key rotation.

Values are stored encrypted with Fernet (AES-128-CBC with HMAC-SHA256, from
``cryptography``) under the keys of ``TOOLVAULT_SECRETS_KEY``, through a MultiFernet:
the first key encrypts, every key decrypts. So a key is rotated by putting a new one
first, re-encrypting every row with it (:meth:`Secrets.rotate`, ``toolvault secrets
rotate``), then dropping the old one. Each token holds the secret's full name beside its
value, checked on decryption, so that a token copied into another row (another
namespace's secret) does not decrypt there.

No method returns a value to a caller of the API: :meth:`Secrets.values` hands them to
the invocation that runs a version declaring them, and nothing else reads them.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.exc import IntegrityError

from toolvault.server.db import audit, secrets
from toolvault.server.db.engine import Database
from toolvault.server.db.tables import Secret
from toolvault.server.domain.audit import Actor
from toolvault.server.domain.errors import FailedPrecondition, not_found
from toolvault.server.domain.names import (
    DEFAULT_NAMESPACE,
    EVERYWHERE,
    Scope,
    check_namespace,
)
from toolvault.server.domain.paging import decode_token, encode_token, page_size
from toolvault.server.domain.secrets import SecretInfo, check_secret_name, check_value

SETTING = "TOOLVAULT_SECRETS_KEY"


class Secrets:
    """Stores secrets encrypted and hands their values to the calls that declared them."""

    def __init__(self, db: Database, keys: list[str]) -> None:
        self._db = db
        self._fernet = MultiFernet([Fernet(key) for key in keys]) if keys else None

    def set(self, name: str, value: str, *, actor: Actor) -> tuple[SecretInfo, bool]:
        """Create or replace the secret ``name``; returns it and whether it is new."""
        check_secret_name(name)
        check_value(value)
        ciphertext = self._cipher().encrypt(_plaintext(name, value)).decode()
        try:
            return self._put(name, ciphertext, actor)
        except IntegrityError:
            # A concurrent set inserted the same new name first: replace its value.
            return self._put(name, ciphertext, actor)

    def _put(self, name: str, ciphertext: str, actor: Actor) -> tuple[SecretInfo, bool]:
        with self._db.write.begin() as session:
            info, created = secrets.put(session, name, ciphertext, actor.key)
            # The value stays out of the log, and so does its length.
            audit.record(session, actor, "secret.set", name, created=created)
            return info, created

    def secrets(
        self, *, scope: Scope = EVERYWHERE, namespace: str = "", size: int, token: str
    ) -> tuple[list[SecretInfo], str]:
        """A page of the secrets in ``scope`` (and ``namespace``) by name, and the next token."""
        if namespace:
            check_namespace(namespace)
        key = decode_token(token, str)
        limit = page_size(size)
        with self._db.read.begin() as session:
            rows = secrets.page(
                session,
                scope=scope,
                namespace=namespace,
                after=key[0] if key else None,
                limit=limit + 1,
            )
        more = len(rows) > limit
        return rows[:limit], encode_token([rows[limit - 1].name]) if more else ""

    def delete(self, name: str, *, actor: Actor) -> None:
        """Delete the secret ``name``."""
        check_secret_name(name)
        with self._db.write.begin() as session:
            row = secrets.find(session, name, lock=True)
            if row is None:
                raise not_found("secret", name)
            secrets.delete(session, row)
            audit.record(session, actor, "secret.delete", name)

    def values(self, namespace: str, names: Collection[str]) -> dict[str, str]:
        """The values of the secrets ``names`` of ``namespace``, by local name.

        Raises:
            FailedPrecondition: One of them is not set (naming every missing one), or no
                key configured decrypts it.
        """
        qualified = {_qualified(namespace, name): name for name in names}
        with self._db.read.begin() as session:
            rows = secrets.named(session, qualified)
        found = {row.name: row for row in rows}
        missing = sorted(qualified[q] for q in qualified if q not in found)
        if missing:
            raise FailedPrecondition(
                f"the version declares secrets that are not set in namespace {namespace!r}: "
                f"{', '.join(missing)} (set them with `toolvault secrets set`)"
            )
        return {qualified[q]: self._decrypt(found[q]) for q in qualified}

    def rotate(self) -> int:
        """Re-encrypt every secret with the first key; returns how many were rewritten.

        Rows are locked while they are rewritten, so a concurrent set waits for it.
        """
        cipher = self._cipher()
        with self._db.write.begin() as session:
            rows = secrets.all_rows(session)
            for row in rows:
                self._decrypt(row)  # fails on a token of another row, as a call would
                row.ciphertext = cipher.rotate(row.ciphertext.encode()).decode()
            return len(rows)

    def _cipher(self) -> MultiFernet:
        if self._fernet is None:
            raise FailedPrecondition(
                f"this server stores no secrets: it has no {SETTING} (generate one with "
                "`toolvault secrets generate-key`)"
            )
        return self._fernet

    def _decrypt(self, row: Secret) -> str:
        try:
            data = json.loads(self._cipher().decrypt(row.ciphertext.encode()))
        except InvalidToken:
            raise FailedPrecondition(
                f"secret {row.name!r} cannot be decrypted with the keys of {SETTING}: was the "
                "key it was set with dropped before `toolvault secrets rotate` ran?"
            ) from None
        if data.get("name") != row.name:
            raise FailedPrecondition(
                f"secret {row.name!r} holds the value of another secret: set it again"
            )
        return str(data["value"])


def _qualified(namespace: str, name: str) -> str:
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}"


def _plaintext(name: str, value: str) -> bytes:
    return json.dumps({"name": name, "value": value}).encode()
