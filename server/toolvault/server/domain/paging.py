"""Opaque page tokens: the sort key of the last item of a page, base64url-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from toolvault.server.domain.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """The page size to use for a request's ``page_size`` (0 means the default)."""
    return DEFAULT_PAGE_SIZE if requested <= 0 else min(requested, MAX_PAGE_SIZE)


def encode_token(key: list[Any]) -> str:
    """A token that resumes after the item with this sort key."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def decode_token(token: str, *types: type) -> list[Any] | None:
    """The sort key in ``token`` (one item of each of ``types``), or None for the first page."""
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, RecursionError) as e:
        raise InvalidArgument("page_token is not a token this server issued") from e
    if (
        not isinstance(key, list)
        or [type(item) for item in key] != list(types)
        or not all(_comparable(item) for item in key)
    ):
        raise InvalidArgument("page_token is not a token this server issued")
    return key


def _comparable(item: int | str) -> bool:
    """Whether a sort key's item can be compared in SQL: a forged token's may not be.

    The database driver would fail on it (an integer beyond 64 bits, a lone surrogate,
    or a NUL for PostgreSQL), which the caller would see as INTERNAL.
    """
    if isinstance(item, int):
        return -(2**63) <= item < 2**63
    try:
        item.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in item
