"""One announced object, from its notification record to a recorded outcome.

Steps, in order: one write transaction before the work (under the batch lock: register the
version, idempotent by bucket, key and etag; claim it with a lease; reserve its result key from
the batch's options; an unknown batch is created first) → fetch exactly that version → options
(batch, then object metadata) → admission (:mod:`processor.admission`: the header against the
output limit, then a wait for the image's share of the memory budget) → the result key again if the
options or the input's format changed it → decode → enhance (micro-batched) → encode → store the
result → record it (completed: completions and starts arriving together share one transaction, see
:meth:`db.worker_path.WorkerPath.complete_image`) → publish the progress events. Object I/O,
decoding and encoding run on the I/O
thread pool, inference on the engine's thread; the event loop only coordinates.

Every path ends in an :class:`Outcome`; the caller acknowledges the message once every record of
it has one. Failures go through :mod:`processor.failures`. A completed image's report carries its
:mod:`processor.timeline` (wall-clock marks of each step, for benchmarks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

from db.records import BatchRecord, ImageRecord, ImageVersion, StartedImage
from db.repository import LevelChanged, Repository, UnknownBatch
from photoenhance.contracts.events import ObjectCreated, notification_body
from photoenhance.contracts.failures import FailureCode
from photoenhance.contracts.formats import format_suggested_by_name, resolve_output_format
from photoenhance.contracts.keys import output_key, output_key_by_full_name
from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.contracts.progress import EventType, ProgressEvent
from photoenhance.contracts.states import ImageState
from photoenhance.formats import sniff_format
from photoenhance.settings import Settings
from processor.admission import Admission, Slot
from processor.batches import Batches
from processor.engine.errors import ImageError, QualityNotLoaded
from processor.engine.imageio import decode_image, encode_image
from processor.engine.records import EnhanceRequest
from processor.engine.version import ENGINE_VERSION
from processor.failures import Failure, PermanentFailure, RetryPolicy, classify
from processor.leases import held_lease
from processor.metrics import ProcessorMetrics
from processor.publisher import Publisher
from processor.speeds import SpeedMeter, engine_seconds
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
    #: The level the router resolved and queued it at (None: not routed, e.g. a manifest); the
    #: image is processed at this level, whatever its metadata says now.
    level: str | None = None


class _LostClaim(Exception):
    """This worker no longer holds the image."""


class _NotMyLevel(Exception):
    """The image's level is not loaded here (it reached this worker unrouted)."""

    def __init__(self, level: str) -> None:
        super().__init__(level)
        self.level = level


def result_key_candidates(batch_id: str, name: str, options: EnhanceOptions, source_format: str | None = None) -> list[str]:
    """Result keys for an input, in order of preference.

    First the contract's :func:`output_key` (``a.png`` → ``a.jpg``); if another input of the batch
    holds it (``a.jpg`` itself), the input's full name plus the output extension (``a.png.jpg``).
    The extension is the resolved output format's: ``auto`` follows ``source_format`` (sniffed
    from the bytes), as :func:`~processor.engine.imageio.encode_image` does.
    """
    fmt = resolve_output_format(options.output_format.value, source_format)
    first = output_key(batch_id, name, fmt)
    second = output_key_by_full_name(batch_id, name, fmt)
    return [first] if second == first else [first, second]


def _sniffed(data: bytes) -> str | None:
    """The input's format for resolving ``auto``; None for bytes that are no image (decoding
    then fails them with the reason)."""
    try:
        return sniff_format(data)
    except ImageError:
        return None


def _pixels(decoded: Any) -> int:
    """Input pixels of a decoded image (an array, or a record holding one as ``pixels``)."""
    array = getattr(decoded, "pixels", decoded)
    shape = getattr(array, "shape", ())
    return int(shape[0] * shape[1]) if len(shape) >= 2 else 0


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
        admission: Admission | None = None,
        speeds: SpeedMeter | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.repository = repository
        self.storage = storage
        self.publisher = publisher
        self.batches = Batches(repository, storage, settings)
        self.policy = RetryPolicy.from_settings(settings)
        self._enhance = enhance
        self._executor = executor
        self.metrics = metrics
        self.admission = admission or Admission.for_worker(settings, executor)
        self.speeds = speeds or SpeedMeter()

    # -- entry point -----------------------------------------------------------------------

    async def process(
        self, record: ObjectCreated, attempt: Attempt = Attempt(),
        level_holds: Callable[[BatchRecord], bool] | None = None,
    ) -> Outcome:
        """Take one announced object to an outcome. Raises only when even a retry cannot be
        scheduled (the broker is gone): the message must then stay unacknowledged.

        ``level_holds`` (the router's, for a level it resolved from a remembered batch): checked
        against the batch in the start transaction; :class:`~db.repository.LevelChanged` is
        raised, with nothing done, when the batch resolves the object to another level now.
        """
        if record.is_manifest:
            await self.publisher.progress(await self.batches.apply_manifest(record))
            return Outcome.MANIFEST
        claimed: ImageRecord | None = None
        #: The image this attempt may hold a claim on, to hand back if it is cancelled.
        holding: int | None = None
        #: While the one transaction before the work runs: a cancellation may cut off its answer
        #: after it has committed a claim, which is then found by version and handed back.
        starting = True
        timeline = Timeline(attempt.received_at)
        try:
            started = await self._start(record, attempt.level, level_holds)
            starting = False
            image = started.image
            if started.claimed is None:
                if image.state.is_final:
                    return await self._already_final(image)
                await self._later(record, attempt.failures, attempt.deferrals + 1, "deferred",
                                  backoff=attempt.deferrals + 1, level=attempt.level)
                return Outcome.DEFERRED
            claimed = started.claimed
            holding = claimed.id
            timeline.mark("claimed")
            async with held_lease(self.repository, claimed.id, self.worker_id, self.settings.lease_seconds), \
                    self.admission.slot() as memory:
                return await self._enhance_and_store(claimed, started, record, timeline, memory, attempt.level)
        except _LostClaim:
            return Outcome.LOST_CLAIM
        except LevelChanged:
            raise  # nothing was written: the router resolves the level again
        except _NotMyLevel as wrong:
            # Never an ending: hand the image back and queue it where a worker of its level takes it.
            if claimed is not None:
                await self._release(claimed.id)
            await self.publisher.route(
                notification_body(record.bucket, record.key, record.etag, record.size, record.event_time,
                                  record.event_name, source="photoenhance:router"),
                wrong.level, attempt=attempt.failures, deferrals=attempt.deferrals,
            )
            self.metrics.retried.labels("not_my_level").inc()
            return Outcome.RETRY
        except asyncio.CancelledError:
            if holding is not None:  # shutdown past its grace: hand the image back for redelivery
                await asyncio.shield(self._release(holding))
            elif starting:
                await asyncio.shield(self._release_version(record))
            raise
        except Exception as exc:
            return await self._on_failure(record, claimed, attempt, classify(exc), exc)

    # -- the steps -------------------------------------------------------------------------

    async def _start(
        self, record: ObjectCreated, level: str | None = None, level_holds: Callable[[BatchRecord], bool] | None = None
    ) -> StartedImage:
        """Register (at ``level``, when routed), claim and reserve the result key in one
        transaction (:meth:`start_image`); an unknown batch is created first (implicitly, with its
        prefix's manifest), once."""
        version = ImageVersion.of(record, level)

        def candidates(batch: BatchRecord) -> list[str]:
            # From the batch's options and, for ``auto``, the format the name suggests: the object's
            # metadata and bytes are read only with the object. If they change the result's
            # format, the key is reserved again after the fetch.
            try:
                options = EnhanceOptions.from_dict(batch.options or {})
                return result_key_candidates(record.batch_id, record.name, options, format_suggested_by_name(record.name))
            except Exception:  # noqa: BLE001 - bad options fail the image after the fetch, as before
                return []

        owner, lease = self.worker_id, self.settings.lease_seconds
        try:
            return await self.repository.start_image(version, owner, lease, candidates, level_holds)
        except UnknownBatch:
            await self.batches.ensure(record.batch_id, record.bucket)
            return await self.repository.start_image(version, owner, lease, candidates, level_holds)

    async def _enhance_and_store(
        self, image: ImageRecord, started: StartedImage, record: ObjectCreated, timeline: Timeline, memory: Slot,
        level: str | None = None,
    ) -> Outcome:
        batch = started.batch
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
        if level is not None and options.quality.value != level:
            # Routed once: the queue it came from decides (a manifest may have changed since).
            options = dataclasses.replace(options, quality=Quality(level))
        options = await memory.admit(source.data, options)  # sized from the header; waits until its memory fits
        candidates = result_key_candidates(record.batch_id, record.name, options, _sniffed(source.data))
        if started.output_key is not None and tuple(candidates) == started.candidates:
            result_key: str | None = started.output_key  # reserved before the work
        else:
            result_key = await self.repository.reserve_output_key(image.id, self.worker_id, candidates)
        if result_key is None:
            await self._check_still_mine(image.id)
            raise PermanentFailure(
                FailureCode.OUTPUT_KEY_CONFLICT,
                "every result key for this name is taken by another input of the batch "
                f"({', '.join(candidates)})",
            )
        timeline.mark("reserved")
        with self.metrics.step("decode"):
            decoded = await self._in_thread(partial(decode_image, source.data, max_pixels=self.settings.max_input_pixels))
        timeline.mark("decoded")
        enhance_began = time.perf_counter()
        with self.metrics.step("enhance"):
            enhanced = await self._enhance(EnhanceRequest(decoded, options))
        if isinstance(enhanced, QualityNotLoaded):
            raise _NotMyLevel(options.quality.value)
        if isinstance(enhanced, ImageError):
            raise enhanced
        waited_s = time.perf_counter() - enhance_began
        self.speeds.observe(options.quality.value, engine_seconds(enhanced.report, waited_s), _pixels(decoded))
        timeline.mark("enhanced")
        with self.metrics.step("encode"):
            encoded = await self._in_thread(partial(encode_image, enhanced.pixels, options, decoded))
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
                image.id, self.worker_id, output_key=result_key, report=report, batch_id=image.batch_id,
                name=image.name,
            )
        if not events:
            return Outcome.LOST_CLAIM
        await self._publish(events)
        self.metrics.processed.inc()
        self.metrics.upload_to_result.observe(
            max(0.0, (datetime.now(UTC) - record.event_time).total_seconds())
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
            await self._later(record, attempt.failures, waits, failure.code, backoff=waits, level=attempt.level)
            return Outcome.RETRY
        failures = attempt.failures + 1
        log.warning("%s/%s: transient failure %d (%s): %s", record.bucket, record.key, failures, failure.code,
                    failure.reason, exc_info=failure.code == FailureCode.INTERNAL_ERROR)
        if self.policy.exhausted(failures):
            return await self._give_up(record, failures, failure)
        await self._later(record, failures, attempt.deferrals, failure.code, backoff=failures, level=attempt.level)
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
            ends = (EventType.BATCH_COMPLETED, EventType.BATCH_CANCELLED)
            await self._publish([latest, *(e for e in following if e.type in ends)])
        return Outcome.DUPLICATE

    # -- helpers ---------------------------------------------------------------------------

    async def _later(
        self, record: ObjectCreated, failures: int, deferrals: int, reason: str, *, backoff: int,
        level: str | None = None,
    ) -> None:
        """Re-announce through a delay queue after the back-off for the ``backoff``-th wait."""
        delay = self.policy.delay_ms(max(backoff, 1))
        body = notification_body(
            record.bucket, record.key, record.etag, record.size, record.event_time, record.event_name,
            source="photoenhance:retry",
        )
        await self.publisher.later(body, delay, attempt=failures, deferrals=deferrals, level=level)
        self.metrics.retried.labels(reason).inc()

    async def _release(self, image_id: int) -> None:
        try:
            await self.repository.release_image(image_id, self.worker_id)
        except Exception as exc:  # the lease runs out on its own; releasing only makes it quicker
            log.warning("image %d: could not hand the claim back: %s", image_id, exc)

    async def _release_version(self, record: ObjectCreated) -> None:
        """Hand back a claim this worker may have taken on ``record``'s version."""
        try:
            image = await self.repository.find_image(record.bucket, record.key, record.etag)
        except Exception as exc:  # noqa: BLE001 - the lease runs out on its own
            log.warning("%s: could not look the claim up to hand it back: %s", record.key, exc)
            return
        if image is not None and image.lease_owner == self.worker_id:
            await self._release(image.id)

    async def _check_still_mine(self, image_id: int) -> None:
        current = await self.repository.get_image(image_id)
        if current is None or current.state is not ImageState.PROCESSING or current.lease_owner != self.worker_id:
            raise _LostClaim()

    async def _publish(self, events: list[ProgressEvent]) -> None:
        with self.metrics.step("publish"):
            await self.publisher.progress(events)

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
