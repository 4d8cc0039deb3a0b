"""Batch ids for API-created batches: ULIDs (time-ordered, 26 Crockford base-32 characters).

A ULID sorts by creation time, which keeps listings of the input bucket (and the reconciler's
walks over them) in creation order, and its 80 random bits make ids unguessable enough that
a batch id alone never becomes a credential by accident (the batch token is the credential).
Written here because the format is 20 lines and needs no dependency.
"""

from __future__ import annotations

import secrets
import time

__all__ = ["CROCKFORD_ALPHABET", "new_ulid"]

#: Crockford's base-32 alphabet: no I, L, O or U, so ids survive being read aloud or retyped.
CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

#: Bits of the millisecond timestamp and of the random part.
_TIME_BITS = 48
_RANDOM_BITS = 80


def new_ulid(now_ms: int | None = None) -> str:
    """A new ULID for the given Unix time in milliseconds (default: now).

    Ids made in the same millisecond are not ordered among themselves (no monotonic counter):
    nothing relies on that, and a counter would need shared state across processes.
    """
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if not 0 <= ms < 1 << _TIME_BITS:
        raise ValueError(f"timestamp {ms} ms does not fit in {_TIME_BITS} bits")
    value = (ms << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS)
    chars = []
    for _ in range(26):  # 26 characters x 5 bits = 130 bits; the top 2 are always zero
        chars.append(CROCKFORD_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
