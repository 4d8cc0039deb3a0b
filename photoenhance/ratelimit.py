"""Fixed-window rate limits: the charges of a request and the window arithmetic (pure).

The counting itself happens in the database (:mod:`db.quotas`); this module only says which
window a moment falls in, how long until it ends, and what a request costs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DAY", "HOUR", "OPEN_BATCHES_RETRY_S", "Charge", "QuotaPlan", "retry_after_s", "window_start"]

HOUR = 3600
DAY = 86_400

#: Seconds a client refused for too many open batches is told to wait: batches close as their
#: images finish or their upload links expire, which no window predicts.
OPEN_BATCHES_RETRY_S = 60


@dataclass(frozen=True)
class Charge:
    """What one request adds to one counter, and the most that counter may reach in its window."""

    #: ``batches``, ``files`` or ``bytes``.
    counter: str
    amount: int
    #: 0 means no limit (the row is still counted, so every creation of a subject meets on it).
    limit: int
    window_s: int

    @property
    def code(self) -> str:
        """The error ``code`` answered when this charge does not fit."""
        per = "hour" if self.window_s == HOUR else "day"
        return f"quota_{self.counter}_per_{per}"


@dataclass(frozen=True)
class QuotaPlan:
    """Everything one batch creation is checked against."""

    subject: str
    charges: tuple[Charge, ...]
    #: Most batches of this subject open at once; 0 means no limit.
    open_batches: int


def window_start(now_s: float, window_s: int) -> int:
    """Start of the fixed window holding ``now_s`` (seconds since the epoch)."""
    return int(now_s // window_s) * window_s


def retry_after_s(now_s: float, window_s: int) -> int:
    """Whole seconds until the window holding ``now_s`` ends (at least 1), for ``Retry-After``."""
    remaining = window_start(now_s, window_s) + window_s - now_s
    return max(1, int(-(-remaining // 1)))
