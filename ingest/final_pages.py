"""Rendered status pages of batches that are final, kept so that polling them costs a lookup.

Clients poll: a script waits for a batch and forgets to stop, a dashboard refreshes every few
seconds, sixteen of them read the same 1,000-image batch. Once a batch is completed or cancelled
its pages change only if something writes the batch row again (a retry, a re-upload reopening it),
and every such write changes the row's ``updated_at``, ``last_seq`` or counts. So a page is
stored under the batch row's version, the page's cursor and size, and the result links' signing
window (:meth:`ingest.presign.Presigner.link_window`): a changed row, a new page or a new window
misses and renders afresh, and nothing is ever served that the current row would not produce.
Pages of open batches are never stored: a claim or an upload changes them without the batch row.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from db.records import BatchRecord
from photoenhance.contracts.states import BatchState

__all__ = ["FINAL_STATES", "FinalPages", "page_version"]

#: States whose pages are stored.
FINAL_STATES = frozenset({BatchState.COMPLETED, BatchState.CANCELLED})

#: Bytes of rendered pages one ingest process keeps (a 500-image page is ~300 KB).
DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024


def page_version(batch: BatchRecord, after: str | None, limit: int, link_window: int) -> Hashable | None:
    """What a stored page of ``batch`` is filed under; None when the batch's pages are not stored."""
    if batch.state not in FINAL_STATES:
        return None
    row = (batch.state, batch.last_seq, batch.updated_at, batch.total, batch.completed, batch.failed,
           batch.cancelled, batch.retried_at)  # fmt: skip
    return (batch.id, row, after, limit, link_window)


class FinalPages:
    """Least recently used rendered pages, within a byte budget."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self._budget = budget_bytes
        self._used = 0
        self._pages: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: Hashable) -> bytes | None:
        """The page stored under ``version``, if any."""
        with self._lock:
            body = self._pages.get(version)
            if body is not None:
                self._pages.move_to_end(version)
            return body

    def put(self, version: Hashable, body: bytes) -> None:
        """Store ``body``, dropping the least recently used pages past the budget."""
        if len(body) > self._budget:
            return
        with self._lock:
            old = self._pages.pop(version, None)
            if old is not None:
                self._used -= len(old)
            self._pages[version] = body
            self._used += len(body)
            while self._used > self._budget:
                _, dropped = self._pages.popitem(last=False)
                self._used -= len(dropped)
