"""Every database operation the services need, each one transaction.

Exactness under concurrent writers (several processes, several machines) rests on three rules:

1. Every write that touches a batch first locks the batch row (``SELECT ... FOR UPDATE`` on
   PostgreSQL; SQLite serialises writers with ``BEGIN IMMEDIATE``), then the image rows. One lock
   order means no deadlocks, and counter and sequence updates of one batch never interleave.
   One exception, for the batch lock's sake: the worker's common path (new keys started, claims
   completed) writes its own image rows first and locks the batch last, in the statement that
   moves its counters (and, on PostgreSQL, logs its events), then checks what it decided before
   against the batch as locked (:mod:`db.worker_path`); unique indexes keep two such
   transactions from both taking one key or one result key (migration 0007).
   The one cycle that order allows is broken by PostgreSQL's deadlock detection and retried.
2. State changes are compare-and-set updates (``WHERE state = ... AND lease_owner = ...``): a
   completion counts only if this call moved the image out of ``processing``.
3. An event is inserted in the same transaction as the change it reports, with
   ``seq = last_seq + 1`` of its batch, so sequence numbers are gapless and never reused.

The operations live in parts along the domain's seams: :mod:`db.batches`, :mod:`db.images`
(with the worker's grouped path, :mod:`db.worker_path`) and :mod:`db.event_log`, on the shared
machinery of :mod:`db.transactions`.
"""

from __future__ import annotations

from db.access_lookup import AccessLookup
from db.batches import BatchOperations, DeclaredFile
from db.cancel import CancelOperations
from db.status_pages import StatusPages
from db.transactions import RETRY_ATTEMPTS, BatchExists, LevelChanged, UnknownBatch
from db.webhooks import WebhookOperations
from db.worker_path import WorkerPath

__all__ = ["RETRY_ATTEMPTS", "BatchExists", "DeclaredFile", "LevelChanged", "Repository", "UnknownBatch"]


class Repository(BatchOperations, WorkerPath, CancelOperations, WebhookOperations, StatusPages, AccessLookup):
    """Batches, images and events; every method is one transaction (retried on lock races)."""
