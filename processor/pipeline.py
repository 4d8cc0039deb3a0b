"""One announced object, from its notification record to a recorded outcome.

Steps, in order: find or create the batch → register the version (idempotent by bucket, key and
etag) → claim it (lease) → fetch exactly that version → options (batch, then object metadata) →
reserve the result key → decode → enhance (micro-batched) → encode → store the result → record it
(completed) → publish the progress events. Object I/O, decoding and encoding run on the I/O
thread pool, inference on the engine's thread; the event loop only coordinates.

Every path ends in an :class:`Outcome`; the caller acknowledges the message once every record of
it has one. Failures go through :mod:`processor.failures`. A completed image's report carries its
:mod:`processor.timeline` (wall-clock marks of each step, for benchmarks).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

from db.records import BatchRecord, ImageRecord, ImageVersion
from db.repository import Repository
from photoenhance.contracts.failures import FailureCode
from photoenhance.contracts.events import ObjectCreated, notification_body
from photoenhance.contracts.keys import output_key, output_key_by_full_name
from photoenhance.contracts.options import EnhanceOptions
from photoenhance.contracts.progress import EventType, ProgressEvent
from photoenhance.contracts.states import ImageState
from photoenhance.settings import Settings
from processor.batches import Batches
from processor.engine.errors import ImageError
from processor.engine.imageio import decode_image, encode_image
from processor.engine.records import EnhanceRequest
from processor.engine.version import ENGINE_VERSION
from processor.failures import Failure, PermanentFailure, RetryPolicy, classify
from processor.leases import held_lease
from processor.metrics import ProcessorMetrics
from processor.publisher import Publisher
from processor.storage import Storage
from processor.timeline import Timeline

__all__ = ["Attempt", "ImagePipeline", "Outcome", "result_key_candidates"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The engine call the pipeline hands decoded images to (a micro-batcher's ``submit``).
Enhance = Callable[[Any], Awaitable[Any]]


class Outcome(str, Enum):
    """What became of one announced object."""

    #: The result is stored and recorded; its events are published.
    COMPLETED = "completed"
    #: Failed for good, recorded with a reason; its events are published.
    FAILED = "failed"
    #: Already final (a duplicate notification or an identical re-upload); its latest event re-published.
    DUPLICATE = "duplicate"
    #: A newer version of the key is known; this one needs nothing.
    SUPERSEDED = "superseded"
    #: Another worker holds a live claim; re-announced after a back-off.
    DEFERRED = "deferred"
    #: A transient failure; re-announced after a back-off.
    RETRY = "retry"
    #: Another worker took the claim over meanwhile; the work is theirs.
    LOST_CLAIM = "lost_claim"
    #: A manifest was applied to its batch.
    MANIFEST = "manifest"


@dataclass(frozen=True)
class Attempt:
    """How often the announcement being handled has been tried before (from its headers), and
    when this delivery of it reached the worker."""

    #: Transient failures so far.
    failures: int = 0
    #: Times it was put off for reasons not its own: another worker held the image, or a service
    #: was down (an outage); they set the back-off but never use up the image's attempts.
    deferrals: int = 0
    #: When the worker's handler started on this delivery (UTC); None: when processing starts.
    received_at: datetime | None = None


class _LostClaim(Exception):
    """This worker no longer holds the image."""


def result_key_candidates(batch_id: str, name: str, options: EnhanceOptions) -> list[str]:
    """Result keys for an input, in order of preference.

    First the contract's :func:`output_key` (``a.png`` → ``a.jpg``); if another input of the batch
    holds it (``a.jpg`` itself), the input's full name plus the output extension (``a.png.jpg``).
    """
    first = output_key(batch_id, name, options.output_format.value)
    second = output_key_by_full_name(batch_id, name, options.output_format.value)
    return [first] if second == first else [first, second]


class ImagePipeline:
    """Processes announced objects; one instance per worker, shared by all its in-flight messages."""

    def __init__(
        self,
        *,
        settings: Settings,
        worker_id: str,
        repository: Repository,
        storage: Storage,
        publisher: Publisher,
        enhance: Enhance,
        executor: Executor,
        metrics: ProcessorMetrics,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.repository = repository
        self.storage = storage
        self.publisher = publisher
        self.batches = Batches(repository, storage)
        self.policy = RetryPolicy.from_settings(settings)
        self._enhance = enhance
        self._executor = executor
        self.metrics = metrics

    # -- entry point -----------------------------------------------------------------------

    async def process(self, record: ObjectCreated, attempt: Attempt = Attempt()) -> Outcome:
        """Take one announced object to an outcome. Raises only when even a retry cannot be
        scheduled (the broker is gone): the message must then stay unacknowledged."""
        if record.is_manifest:
            await self.publisher.progress(await self.batches.apply_manifest(record))
            return Outcome.MANIFEST
        claimed: ImageRecord | None = None
        #: The image this attempt may hold a claim on, to hand back if it is cancelled.
        holding: int | None = None
        timeline = Timeline(attempt.received_at)
        try:
            batch = await self.batches.ensure(record.batch_id, record.bucket)
            registration = await self.repository.register_image(ImageVersion.of(record))
            image = registration.image
            if image.state.is_final:
                return await self._already_final(image)
            # Set before the claim: a cancellation may cut off its answer after it has committed.
            holding = image.id
            claimed = await self.repository.claim_image(image.id, self.worker_id, self.settings.lease_seconds)
            if claimed is None:
                holding = None
                current = await self.repository.get_image(image.id)
                if current is not None and current.state.is_final:
                    return await self._already_final(current)
                await self._later(record, attempt.failures, attempt.deferrals + 1, "deferred",
                                  backoff=attempt.deferrals + 1)
                return Outcome.DEFERRED
            timeline.mark("claimed")
            async with held_lease(self.repository, image.id, self.worker_id, self.settings.lease_seconds):
                return await self._enhance_and_store(claimed, batch, record, timeline)
        except _LostClaim:
            return Outcome.LOST_CLAIM
        except asyncio.CancelledError:
            if holding is not None:  # shutdown past its grace: hand the image back for redelivery
                await asyncio.shield(self._release(holding))
            raise
        except Exception as exc:
            return await self._on_failure(record, claimed, attempt, classify(exc), exc)

    # -- the steps -------------------------------------------------------------------------

    async def _enhance_and_store(
        self, image: ImageRecord, batch: BatchRecord, record: ObjectCreated, timeline: Timeline
    ) -> Outcome:
        if record.size > self.settings.max_file_bytes:
            raise PermanentFailure(
                FailureCode.TOO_LARGE, f"the object is {record.size} bytes, more than the limit of {self.settings.max_file_bytes}"
            )
        with self.metrics.step("fetch"):
            source = await self.storage.get(
                record.bucket, record.key, etag=record.etag, max_bytes=self.settings.max_file_bytes
            )
        timeline.mark("fetched")
        options = EnhanceOptions.from_metadata(source.metadata, base=EnhanceOptions.from_dict(batch.options or {}))
        result_key = await self.repository.reserve_output_key(
            image.id, self.worker_id, result_key_candidates(record.batch_id, record.name, options)
        )
        if result_key is None:
            await self._check_still_mine(image.id)
            raise PermanentFailure(
                FailureCode.OUTPUT_KEY_CONFLICT,
                "every result key for this name is taken by another input of the batch "
                f"({', '.join(result_key_candidates(record.batch_id, record.name, options))})",
            )
        timeline.mark("reserved")
        with self.metrics.step("decode"):
            decoded = await self._in_thread(partial(decode_image, source.data, max_pixels=self.settings.max_input_pixels))
        timeline.mark("decoded")
        with self.metrics.step("enhance"):
            enhanced = await self._enhance(EnhanceRequest(decoded, options))
        if isinstance(enhanced, ImageError):
            raise enhanced
        timeline.mark("enhanced")
        with self.metrics.step("encode"):
            encoded = await self._in_thread(partial(encode_image, enhanced.pixels, options))
        timeline.mark("encoded")
        with self.metrics.step("store"):
            await self.storage.put(
                self.settings.s3_output_bucket,
                result_key,
                encoded.data,
                content_type=encoded.content_type,
                metadata={
                    "photoenhance-source-etag": record.etag,
                    "photoenhance-source-key": quote(record.key, safe="/"),
                    "photoenhance-options": json.dumps(options.to_dict(), separators=(",", ":")),
                    "photoenhance-engine-version": ENGINE_VERSION,
                },
            )
        timeline.mark("stored")
        report = {
            **enhanced.report,
            "worker": self.worker_id,
            "source_etag": record.etag,
            "timeline": timeline.as_report(),
        }
        with self.metrics.step("commit"):
            events = await self.repository.complete_image(
                image.id, self.worker_id, output_key=result_key, report=report
            )
        if not events:
            return Outcome.LOST_CLAIM
        await self._publish(events)
        self.metrics.processed.inc()
        self.metrics.upload_to_result.observe(
            max(0.0, (datetime.now(timezone.utc) - record.event_time).total_seconds())
        )
        return Outcome.COMPLETED

    async def _on_failure(
        self, record: ObjectCreated, claimed: ImageRecord | None, attempt: Attempt, failure: Failure, exc: Exception
    ) -> Outcome:
        if failure.permanent:
            log.info("%s/%s failed for good: %s", record.bucket, record.key, failure.reason)
            if claimed is None:
                raise exc  # permanent before any claim cannot happen on this path; let the caller see it
            events = await self.repository.fail_image(
                claimed.id, reason=failure.reason, code=failure.code, owner=self.worker_id
            )
            if not events:
                return Outcome.LOST_CLAIM
            await self._publish(events)
            self.metrics.failed.labels(failure.code).inc()
            return Outcome.FAILED
        if claimed is not None:
            await self._release(claimed.id)
        if failure.outage:
            # The service's condition, not the image's: wait it out without spending an attempt.
            waits = attempt.deferrals + 1
            log.warning("%s/%s: %s, waiting (%d): %s", record.bucket, record.key, failure.code, waits, failure.reason)
            await self._later(record, attempt.failures, waits, failure.code, backoff=waits)
            return Outcome.RETRY
        failures = attempt.failures + 1
        log.warning("%s/%s: transient failure %d (%s): %s", record.bucket, record.key, failures, failure.code,
                    failure.reason, exc_info=failure.code == FailureCode.INTERNAL_ERROR)
        if self.policy.exhausted(failures):
            return await self._give_up(record, failures, failure)
        await self._later(record, failures, attempt.deferrals, failure.code, backoff=failures)
        return Outcome.RETRY

    async def _give_up(self, record: ObjectCreated, failures: int, failure: Failure) -> Outcome:
        """Record an image that failed transiently too often (raises if the database is away too:
        the caller then dead-letters the message and the dead-letter watch records it later)."""
        image = await self.repository.find_image(record.bucket, record.key, record.etag)
        if image is None:
            raise RuntimeError(f"{record.key}: retries exhausted before the image could be registered")
        events = await self.repository.fail_image(
            image.id, code=FailureCode.RETRIES_EXHAUSTED, reason=f"gave up after {failures} attempts: {failure.reason}"
        )
        await self._publish(events)
        self.metrics.failed.labels(FailureCode.RETRIES_EXHAUSTED).inc()
        return Outcome.FAILED

    async def _already_final(self, image: ImageRecord) -> Outcome:
        """Publish the image's latest event again (a crash may have come between commit and publish)."""
        if image.state is ImageState.SUPERSEDED:
            return Outcome.SUPERSEDED
        latest = await self.repository.latest_event_for(image.id)
        if latest is not None:
            following = await self.repository.events_since(image.batch_id, latest.seq, limit=1)
            await self._publish([latest, *(e for e in following if e.type is EventType.BATCH_COMPLETED)])
        return Outcome.DUPLICATE

    # -- helpers ---------------------------------------------------------------------------

    async def _later(
        self, record: ObjectCreated, failures: int, deferrals: int, reason: str, *, backoff: int
    ) -> None:
        """Re-announce through a delay queue after the back-off for the ``backoff``-th wait."""
        delay = self.policy.delay_ms(max(backoff, 1))
        body = notification_body(
            record.bucket, record.key, record.etag, record.size, record.event_time, record.event_name,
            source="photoenhance:retry",
        )
        await self.publisher.later(body, delay, attempt=failures, deferrals=deferrals)
        self.metrics.retried.labels(reason).inc()

    async def _release(self, image_id: int) -> None:
        try:
            await self.repository.release_image(image_id, self.worker_id)
        except Exception as exc:  # the lease runs out on its own; releasing only makes it quicker
            log.warning("image %d: could not hand the claim back: %s", image_id, exc)

    async def _check_still_mine(self, image_id: int) -> None:
        current = await self.repository.get_image(image_id)
        if current is None or current.state is not ImageState.PROCESSING or current.lease_owner != self.worker_id:
            raise _LostClaim()

    async def _publish(self, events: list[ProgressEvent]) -> None:
        with self.metrics.step("publish"):
            await self.publisher.progress(events)

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
