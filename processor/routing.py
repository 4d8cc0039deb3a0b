"""Routing: every announced object goes, once, to the work queue of the quality level it resolves to.

Who routes: every worker (``PROCESSOR_ROUTES``, on by default) consumes the shared announcements
queue (``AMQP_WORK_QUEUE``) beside its level queues. For each object it finds the batch (creating
an implicit one, with its manifest, as the pipeline always did), reads the object's user metadata
(from the store's event; a notification the pipeline synthesised carries none, so the object is
asked with a HEAD), resolves the level (:func:`photoenhance.contracts.levels.resolve_level`),
registers the image with its level (so the batch counts it, and its status can say it waits for
a worker of that level, before any such worker runs), publishes one notification into that
level's queue and waits for the broker's confirm, and only then acknowledges the announcement.
Why not a router role of its own: any worker is already
connected to the database, the store and the broker, so routing needs no extra process to deploy,
scale or keep alive, and a fleet with one live worker of any level routes everything. A dedicated
router would add a deployment that must never scale to zero; ``PROCESSOR_ROUTES=false`` gives
that split where it is wanted.

A worker that serves the level itself processes the object at once instead of queueing it: the
announcement is then settled like a level queue's message (acknowledged after the outcome is
durable; a retry goes to the level's delay queue). Queueing every object cost a registration
transaction, a confirmed publish, a second delivery and a HEAD for the metadata the router's copy
leaves out: at full load on one ``fast`` worker, 45-50 images/s before levels had queues, 29-36
with every object queued (bench/pipeline.py, docs/BENCHMARKS.md). Objects of levels this worker
does not serve are queued as described, and still wait there for a worker of their level.
The router remembers the batches it has read (the most recent :data:`REMEMBERED_BATCHES`): the
level of an object processed here is resolved from the remembered batch without a read, and the
start transaction checks it against the batch as locked (a manifest may have changed its options
since); if it no longer holds, nothing is written and the level is resolved again from the batch
as found. An object queued for another level is always resolved from the batch read then.

Guarantees, unchanged: an announcement is acknowledged only after its level copy is confirmed
(a crash in between redelivers it and the copy is made twice, which the pipeline's idempotency
by (bucket, key, etag) absorbs). Manifests are applied here, by the router (they have no level).
An object whose metadata names an unknown level (or another unusable option) fails here at once
with ``bad_options`` (the pipeline's code for unusable options) and the valid levels in the reason. An
outage while routing (database, store) is waited out through the announcement delay queues, like
the pipeline's own outages.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial

from db.records import BatchRecord, ImageVersion
from db.repository import LevelChanged
from photoenhance.contracts.events import ObjectCreated, notification_body
from photoenhance.contracts.failures import FailureCode
from photoenhance.contracts.levels import resolve_level
from photoenhance.contracts.options import OptionsError
from processor.failures import RetryPolicy, classify
from processor.pipeline import Attempt, ImagePipeline

__all__ = ["ROUTED", "Router"]

log = logging.getLogger(__name__)

#: ``eventSource`` of the notifications the router puts into level queues.
SOURCE = "photoenhance:router"
#: Outcome of a routed object (a ``photoenhance_messages_total`` label).
ROUTED = "routed"
#: Outcome of an object put off because a service was down while routing it.
ROUTE_WAIT = "route_wait"
#: Batches a router remembers (a few hundred bytes each).
REMEMBERED_BATCHES = 4096


class Router:
    """Resolves announced objects' levels and queues them; the per-record step of the
    announcements queue's :class:`~processor.handler.MessageHandler`."""

    def __init__(self, pipeline: ImagePipeline) -> None:
        self.pipeline = pipeline
        self.publisher = pipeline.publisher
        self.policy = RetryPolicy.from_settings(pipeline.settings)
        self.metrics = pipeline.metrics
        #: Levels this worker processes itself when it routes an object of one.
        self.serves = frozenset(pipeline.settings.processor_qualities)
        #: Batches read before, most recently used last: the level of an object processed here is
        #: resolved from them without a read, and checked in the start transaction.
        self._batches: OrderedDict[str, BatchRecord] = OrderedDict()

    async def route(self, record: ObjectCreated, attempt: Attempt) -> object:
        """Queue ``record`` at its level (or process it here, if this worker serves the level);
        returns what became of it."""
        if record.is_manifest:
            return await self.pipeline.process(record, attempt)
        try:
            metadata = await self._metadata(record)
            batch, remembered = await self._batch(record, fresh=False)
            level = _level(batch, metadata)
        except OptionsError as exc:
            return await self._refuse(record, attempt, exc)
        except Exception as exc:
            return await self._wait(record, attempt, exc)
        if level in self.serves:
            # From a remembered batch: its level is checked again in the start transaction.
            holds = partial(_resolves_to, metadata=metadata, level=level) if remembered else None
            try:
                return await self._here(record, attempt, level, holds)
            except LevelChanged as changed:  # the batch's options changed: resolve from it as it is now
                self._remember(changed.batch)
                remembered = False
                try:
                    level = _level(changed.batch, metadata)
                except OptionsError as exc:
                    return await self._refuse(record, attempt, exc)
                if level in self.serves:
                    return await self._here(record, attempt, level, None)
        if remembered:
            # Queued elsewhere only from the batch as it is now: no check would follow there.
            try:
                level = _level((await self._batch(record, fresh=True))[0], metadata)
            except OptionsError as exc:
                return await self._refuse(record, attempt, exc)
            except Exception as exc:
                return await self._wait(record, attempt, exc)
            if level in self.serves:
                return await self._here(record, attempt, level, None)
        try:
            registration = await self.pipeline.repository.register_image(ImageVersion.of(record, level))
        except Exception as exc:
            return await self._wait(record, attempt, exc)
        if registration.image.state.is_final:  # a duplicate: the pipeline re-publishes its outcome
            return await self.pipeline.process(record, attempt)
        await self.publisher.route(_body(record), level, attempt=attempt.failures, deferrals=attempt.deferrals)
        self.metrics.routed.labels(level).inc()
        return ROUTED

    async def _here(
        self, record: ObjectCreated, attempt: Attempt, level: str, holds: Callable[[BatchRecord], bool] | None
    ) -> object:
        """Process ``record`` in this worker, no queue between it and itself."""
        outcome = await self.pipeline.process(record, dataclasses.replace(attempt, level=level), level_holds=holds)
        self.metrics.routed.labels(level).inc()
        return outcome

    async def _refuse(self, record: ObjectCreated, attempt: Attempt, refused: OptionsError) -> object:
        """Fail an object whose options are unusable at once (``bad_options``), the reason naming
        the valid levels: no queue would ever have a worker for it."""
        try:
            registration = await self.pipeline.repository.register_image(ImageVersion.of(record))
            if registration.image.state.is_final:
                return await self.pipeline.process(record, attempt)
            events = await self.pipeline.repository.fail_image(
                registration.image.id, code=FailureCode.BAD_OPTIONS, reason=f"the options are unusable: {refused}"
            )
        except Exception as exc:
            return await self._wait(record, attempt, exc)
        await self.publisher.progress(events)
        self.metrics.failed.labels(FailureCode.BAD_OPTIONS).inc()
        return "failed"

    async def _wait(self, record: ObjectCreated, attempt: Attempt, exc: Exception) -> str:
        """Put the announcement off through a delay queue while a service is down."""
        failure = classify(exc)
        if not failure.outage:
            raise exc  # the handler returns the message to the queue; the delivery limit bounds it
        waits = attempt.deferrals + 1
        log.warning("routing %s/%s: %s, waiting (%d): %s", record.bucket, record.key, failure.code, waits,
                    failure.reason)
        await self.publisher.later(_body(record), self.policy.delay_ms(waits), attempt=attempt.failures, deferrals=waits)
        self.metrics.retried.labels(failure.code).inc()
        return ROUTE_WAIT

    async def _metadata(self, record: ObjectCreated) -> dict[str, str]:
        """The object's user metadata: from the store's event, or (a notification the pipeline
        synthesised carries none) from a HEAD."""
        if record.from_store:
            return dict(record.user_metadata)
        return await self.pipeline.storage.user_metadata(record.bucket, record.key) or {}

    async def _batch(self, record: ObjectCreated, *, fresh: bool) -> tuple[BatchRecord, bool]:
        """The record's batch (created implicitly when unknown), and whether it is a remembered
        copy rather than read now. ``fresh``: read it now."""
        if not fresh:
            batch = self._batches.get(record.batch_id)
            if batch is not None:
                self._batches.move_to_end(record.batch_id)
                return batch, True
        batch = await self.pipeline.batches.ensure(record.batch_id, record.bucket)
        self._remember(batch)
        return batch, False

    def _remember(self, batch: BatchRecord) -> None:
        self._batches[batch.id] = batch
        self._batches.move_to_end(batch.id)
        while len(self._batches) > REMEMBERED_BATCHES:
            self._batches.popitem(last=False)


def _level(batch: BatchRecord, metadata: Mapping[str, str]) -> str:
    """The level the object resolves to in ``batch`` (:class:`OptionsError` for an unknown one)."""
    return resolve_level(batch.options, metadata).value


def _resolves_to(batch: BatchRecord, *, metadata: Mapping[str, str], level: str) -> bool:
    """Whether ``batch`` (as the start transaction locked it) still resolves the object to ``level``."""
    try:
        return _level(batch, metadata) == level
    except OptionsError:
        return False


def _body(record: ObjectCreated) -> bytes:
    """The record as a notification of the router's own (no metadata: whoever reads it next asks
    the store, and its key encoding is the AWS one whatever store announced it)."""
    return notification_body(
        record.bucket, record.key, record.etag, record.size, record.event_time, record.event_name, source=SOURCE
    )
