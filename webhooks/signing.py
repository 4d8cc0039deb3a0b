"""Webhook secrets and signatures (Standard Webhooks: ``webhook-id``, ``-timestamp``, ``-signature``).

A secret is ``whsec_`` + base64 of 32 random bytes, shown once to the batch's creator. It must be
stored so the sender can sign with it, so it is kept sealed: AES-GCM under a key derived from
``WEBHOOK_SECRETS_KEY`` (a deployment secret, never in the database), with the batch id as
associated data, so a sealed secret copied onto another batch's row does not open. A database
dump alone therefore does not let anyone forge deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from datetime import UTC, datetime

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from standardwebhooks.webhooks import Webhook

__all__ = ["new_secret", "open_secret", "seal_secret", "signature_headers"]

_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form."""
    return _PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _aead(key: str) -> AESGCM:
    if not key:
        raise ValueError("WEBHOOK_SECRETS_KEY is empty: webhooks are off")
    return AESGCM(hashlib.sha256(b"photoenhance webhook secrets\0" + key.encode()).digest())


def seal_secret(secret: str, key: str, batch_id: str) -> str:
    """The secret sealed for storage (base64 of nonce + ciphertext)."""
    nonce = os.urandom(12)
    return base64.b64encode(nonce + _aead(key).encrypt(nonce, secret.encode(), batch_id.encode())).decode()


def open_secret(sealed: str, key: str, batch_id: str) -> str:
    """The secret back from :func:`seal_secret` (raises if the key or the batch differ)."""
    raw = base64.b64decode(sealed)
    return _aead(key).decrypt(raw[:12], raw[12:], batch_id.encode()).decode()


def signature_headers(secret: str, webhook_id: str, body: bytes, when: datetime | None = None) -> dict[str, str]:
    """The three headers of a delivery, signed with the library receivers verify with."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    signature = Webhook(secret).sign(webhook_id, when, body.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }
