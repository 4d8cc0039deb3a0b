"""Batch tokens and API keys: how ingest hands out access and how every service checks it.

A batch token is a random secret given once to the batch's creator; only its SHA-256 is stored, so
a leaked database does not leak access. API keys come from the settings and may read any batch.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

__all__ = ["bearer_credential", "hash_token", "is_api_key", "may_open", "may_read_batch", "new_batch_token"]

#: Random bytes in a batch token (256 bits; guessing is hopeless).
TOKEN_BYTES = 32


def new_batch_token() -> tuple[str, str]:
    """A fresh token and the hash to store for it."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    """The stored form of a token (hex SHA-256)."""
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).hexdigest()


def is_api_key(candidate: str | None, api_keys: Iterable[str]) -> bool:
    """Whether ``candidate`` is one of the configured API keys (constant-time per key)."""
    if not candidate:
        return False
    encoded = candidate.encode("utf-8", errors="surrogatepass")
    matched = False
    for key in api_keys:
        matched |= hmac.compare_digest(encoded, key.encode())
    return matched


def may_read_batch(candidate: str | None, token_hash: str | None, api_keys: Iterable[str]) -> bool:
    """Whether ``candidate`` (a batch token or an API key) opens a batch stored with ``token_hash``.

    Callers answer a refusal exactly as they answer an unknown batch, so nothing leaks.
    """
    if not candidate:
        return False
    if is_api_key(candidate, api_keys):
        return True
    return token_hash is not None and hmac.compare_digest(hash_token(candidate), token_hash)


#: Compared against when no batch is stored under the id, so an unknown batch costs the same hashing.
_ABSENT_HASH = hash_token("no batch is stored under this id")


def bearer_credential(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header value, else None."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def may_open(candidate: str | None, token_hash: str | None, api_keys: Iterable[str], *, exists: bool) -> bool:
    """The one check ingest and the notifier make before answering about a batch: whether
    ``candidate`` opens it. For a batch that does not exist (``exists=False``) the same hashing is
    done and the answer is no, so timing tells a caller nothing either."""
    allowed = may_read_batch(candidate, token_hash if exists else _ABSENT_HASH, api_keys)
    return allowed and exists
