"""The reconciler: the database, not the event stream, decides what is done.

One pass, over every open batch:

1. list the batch's prefix in its input bucket and re-announce each object version the database
   has never seen (its notification was lost: RGW drops events while the broker is away, and
   every store may drop some), once it is older than ``RECONCILE_GRACE_S`` (younger ones may still
   be on their way, or waiting in the queue);
2. re-announce the manifest of a direct batch that has no expected count yet (its event may have
   been lost too; applying a manifest twice changes nothing);
3. re-announce images still pending ``RECONCILE_GRACE_S`` after their last change, except those
   waiting in the queue of a level no live worker serves (their message is there, waiting; a
   copy per pass would pile up). One of those that has waited longer than ``LEVEL_WAIT_MAX_S``
   (default: the upload links' lifetime plus a day) fails with ``quality_not_served``;
4. for a batch created through the ingest API, once its upload links have expired
   (``PRESIGN_EXPIRY_S``) and ``RECONCILE_GRACE_S`` more has passed, fail each declared file whose
   upload never arrived (code ``upload_missing``), so the batch reaches its end instead of staying
   open for ever; an upload that still arrives supersedes that record;
5. complete the batch if it is idle (``complete_if_idle``; batches without an expected count only
   complete this way), unless this pass found something of it the database has not seen yet: an
   object it announced, a young one still on its way, a pending image it re-announced. Completed
   then, the batch would reopen when that image arrives, and subscribers would see it finish twice;

then, over all batches, re-announce images whose processing lease expired (their worker crashed).

Re-announcing publishes a synthesised notification (``notification_body``) on the events exchange,
so everything takes the one processing path, with its idempotency. Several reconcilers (one per
worker, plus ``photoenhance reconcile``) may run at once: the worst they do is announce an object
twice, which the pipeline absorbs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from db.models import utcnow
from db.records import BatchRecord, ImageRecord
from db.repository import Repository
from photoenhance.contracts.events import notification_body
from photoenhance.contracts.failures import FailureCode
from photoenhance.contracts.keys import MANIFEST_NAME
from photoenhance.contracts.progress import EventType
from photoenhance.contracts.states import ImageState
from photoenhance.settings import Settings
from processor.publisher import Publisher
from processor.storage import Storage

__all__ = ["ReconcileReport", "Reconciler"]

log = logging.getLogger(__name__)

#: ``eventSource`` of the notifications the reconciler synthesises.
SOURCE = "photoenhance:reconciler"

#: Failure code of an image no worker served the level of within ``LEVEL_WAIT_MAX_S``.
QUALITY_NOT_SERVED = FailureCode.QUALITY_NOT_SERVED


def level_wait_reason(level: str, waited_s: int) -> str:
    """What a person reads for an image whose level nobody served in time."""
    return f"no worker serving quality {level!r} ran within {waited_s} s of the upload"


#: What a person reads for a declared file that was never uploaded.
UPLOAD_MISSING_REASON = "the upload never arrived before its upload link expired"


@dataclass
class ReconcileReport:
    """What one pass did."""

    batches: int = 0
    listed: int = 0
    #: Objects no event had announced.
    announced: int = 0
    manifests: int = 0
    pending_requeued: int = 0
    leases_requeued: int = 0
    batches_completed: int = 0
    #: Declared files failed because their upload never arrived.
    uploads_missing: int = 0
    #: Pending images waiting for a worker of their level.
    waiting_for_worker: int = 0
    #: Images failed because no worker served their level within ``LEVEL_WAIT_MAX_S``.
    level_wait_expired: int = 0
    #: ``waiting_for_worker`` by level (levels with none are absent).
    waiting_by_level: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Reconciler:
    """Compares open batches' prefixes with the database and re-announces what was missed."""

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        storage: Storage,
        publisher: Publisher,
        *,
        clock: Callable[[], datetime] = utcnow,
        served_levels: Callable[[], Awaitable[set[str]]] | None = None,
        on_pass: Callable[[ReconcileReport], None] | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.storage = storage
        self.publisher = publisher
        self._now = clock
        #: The levels live workers serve now (None: every level counts as served).
        self._served_levels = served_levels
        #: Told each completed pass's report (the worker sets its waiting-for-worker gauge from it).
        self._on_pass = on_pass

    async def run_once(self) -> ReconcileReport:
        """One full pass; see the module docstring."""
        report = ReconcileReport()
        cutoff = self._now() - timedelta(seconds=self.settings.reconcile_grace_s)
        served = await self._served_levels() if self._served_levels is not None else None
        for batch in await self.repository.open_batches():
            report.batches += 1
            await self._batch(batch, cutoff, report, served)
        for image in await self.repository.expired_leases():
            await self._announce_image(image)
            report.leases_requeued += 1
        if any((report.announced, report.pending_requeued, report.leases_requeued, report.batches_completed,
                report.uploads_missing, report.level_wait_expired)):
            log.info("reconciler: %s", report.to_dict())
        if self._on_pass is not None:
            self._on_pass(report)
        return report

    async def run_forever(self, interval_s: float) -> None:
        """Pass every ``interval_s`` until cancelled; a failed pass is logged and the next one tried."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reconciler pass failed: %r", exc)

    async def _batch(
        self, batch: BatchRecord, cutoff: datetime, report: ReconcileReport, served: set[str] | None = None
    ) -> None:
        listed = await self.storage.list_prefix(batch.input_bucket, f"{batch.id}/")
        known = await self.repository.known_versions(batch.input_bucket, batch.id)
        report.listed += len(listed)
        #: Something of this batch is on its way to the database: it is not idle, whatever its rows say.
        unsettled = False
        for obj in listed:
            is_manifest = obj.key == f"{batch.id}/{MANIFEST_NAME}"
            if is_manifest and not (batch.source == "direct" and batch.expected_count is None):
                continue
            if not is_manifest and (obj.key, obj.etag) in known:
                continue
            # A manifest may never carry an expected count, and is re-announced each pass: it would
            # keep the batch open for ever.
            unsettled = unsettled or not is_manifest
            if obj.last_modified is not None and obj.last_modified > cutoff:
                continue  # young: its notification may still be on its way
            body = notification_body(
                batch.input_bucket, obj.key, obj.etag, obj.size, obj.last_modified or self._now(), source=SOURCE
            )
            await self.publisher.announce(body)
            if is_manifest:
                report.manifests += 1
            else:
                report.announced += 1
        for image in await self.repository.unfinished_images(batch.id):
            if image.state is ImageState.PENDING and served is not None and image.level and image.level not in served:
                unsettled = True  # waiting in its level's queue: not idle, and not lost
                if self._level_wait_over(image):
                    failed = await self.repository.fail_image(
                        image.id, code=QUALITY_NOT_SERVED, reason=level_wait_reason(image.level, self._level_wait_s())
                    )
                    await self.publisher.progress(failed)
                    report.level_wait_expired += 1
                else:
                    report.waiting_for_worker += 1
                    report.waiting_by_level[image.level] = report.waiting_by_level.get(image.level, 0) + 1
                continue
            if image.state is ImageState.PENDING and image.updated_at < cutoff:
                await self._announce_image(image)
                report.pending_requeued += 1
                unsettled = True
        if unsettled:
            return  # an object announced a moment ago is not registered yet: not missing, not idle
        if self._uploads_overdue(batch):
            failed = await self.repository.fail_missing_uploads(batch.id, reason=UPLOAD_MISSING_REASON)
            report.uploads_missing += sum(1 for e in failed if e.type is EventType.IMAGE_FAILED)
            await self.publisher.progress(failed)
            if any(e.type is EventType.BATCH_COMPLETED for e in failed):
                report.batches_completed += 1
                return
        events = await self.repository.complete_if_idle(batch.id, self.settings.batch_idle_seconds)
        if events:
            report.batches_completed += 1
            await self.publisher.progress(events)

    def _level_wait_s(self) -> int:
        return self.settings.level_wait_max_s or (self.settings.presign_expiry_s + 86_400)

    def _level_wait_over(self, image: ImageRecord) -> bool:
        """Whether ``image`` has waited for a worker of its level longer than ``LEVEL_WAIT_MAX_S``."""
        return image.created_at + timedelta(seconds=self._level_wait_s()) < self._now()

    def _uploads_overdue(self, batch: BatchRecord) -> bool:
        """Whether an API batch still misses declared uploads after its upload links expired."""
        if batch.source != "api" or batch.expected_count is None or batch.total >= batch.expected_count:
            return False
        wait = timedelta(seconds=self.settings.presign_expiry_s + self.settings.reconcile_grace_s)
        return batch.created_at + wait < self._now()

    async def _announce_image(self, image: ImageRecord) -> None:
        when = image.uploaded_at or image.created_at
        await self.publisher.announce(
            notification_body(image.bucket, image.key, image.etag, image.size, when, source=SOURCE)
        )
