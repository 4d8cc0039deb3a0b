"""Batches as the worker meets them: known (ingest API), implicit (first event under a new prefix),
planned by a manifest, and refusals recorded against them.

An implicit batch (``source = direct``) is created by the first event under an unknown prefix. If
the prefix already holds a manifest (``<batch_id>/_batch.json``), the batch starts with its
expected count and options; a manifest arriving later is applied when its own event comes.
Manifests are ignored for batches the ingest API created: the API's plan is the batch's plan.

A manifest's ``webhook`` (:mod:`processor.manifest_webhook`) is subscribed in the transaction that
creates the batch, or by a later manifest while the batch has none (the first webhook stays). A
refused one loses nothing: the batch goes on without a webhook, with its count and options, and
the reason is logged and recorded for ``GET /api/v1/batches/{id}/deliveries``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from db.records import BatchRecord, ImageVersion
from db.repository import Repository
from db.webhooks import NewSubscription
from photoenhance.contracts.events import InvalidKey, ObjectCreated
from photoenhance.contracts.keys import manifest_key
from photoenhance.contracts.progress import ProgressEvent
from photoenhance.settings import Settings
from processor.failures import PermanentFailure
from processor.manifest import MAX_MANIFEST_BYTES, Manifest, ManifestError, parse_manifest
from processor.manifest_webhook import manifest_subscription
from processor.storage import Storage
from webhooks.subscriptions import WebhookRequestError

__all__ = ["Batches"]

log = logging.getLogger(__name__)


class Batches:
    """Finds or creates the batch of an event, applies manifests, records refused keys."""

    def __init__(
        self,
        repository: Repository,
        storage: Storage,
        settings: Settings,
        default_level: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self._repository = repository
        self._storage = storage
        #: What manifest webhooks are checked and sealed with.
        self._settings = settings
        #: The level of an implicit batch that names none (``DEFAULT_QUALITY``, ``auto`` resolved
        #: against the fleet), recorded on the batch when it is created so all its images agree.
        self.default_level = default_level

    async def ensure(self, batch_id: str, bucket: str) -> BatchRecord:
        """The batch, created implicitly (with the prefix's manifest, if any) when unknown."""
        batch, _ = await self._ensure(batch_id, bucket)
        return batch

    async def _ensure(self, batch_id: str, bucket: str) -> tuple[BatchRecord, bool]:
        batch = await self._repository.get_batch(batch_id)
        if batch is not None:
            return batch, False
        manifest = await self._read_manifest(batch_id, bucket)
        options = dict(manifest.options) if manifest and manifest.options is not None else {}
        if "quality" not in options and self.default_level is not None:
            options["quality"] = await self.default_level()
        webhook, refused = await self._check_webhook(batch_id, manifest)
        batch, created = await self._repository.ensure_batch(
            batch_id,
            input_bucket=bucket,
            options=options,
            expected_count=manifest.expected_count if manifest else None,
            webhook=webhook,
        )
        if created:
            log.info("batch %s created by its first upload (manifest: %s, webhook: %s)",
                     batch_id, manifest is not None, webhook is not None)
            if refused is not None:  # recorded once the batch exists (the refusal row refers to it)
                await self._repository.refuse_webhook(batch_id, refused.code, refused.reason)
        return batch, created

    async def apply_manifest(self, record: ObjectCreated) -> list[ProgressEvent]:
        """Apply a manifest announced by an event; returns the events it appended (it may complete the batch).

        A broken manifest raises :class:`~processor.manifest.ManifestError`.
        """
        batch, created = await self._ensure(record.batch_id, record.bucket)
        if batch.source != "direct":
            log.info("batch %s: manifest ignored, the batch was created by the API", batch.id)
            return []
        manifest = await self._read_manifest(batch.id, record.bucket, strict=True)
        if manifest is None:  # deleted since it was announced
            return []
        options = manifest.options
        if options is not None and "quality" not in options and "quality" in (batch.options or {}):
            options = {**options, "quality": batch.options["quality"]}  # the level chosen at creation stays
        _, events = await self._repository.update_batch_plan(
            batch.id, options=options, expected_count=manifest.expected_count
        )
        if not created:  # creating the batch just now handled its webhook already
            await self._subscribe_later(batch.id, manifest)
        return events

    async def refuse_key(self, refused: InvalidKey) -> list[ProgressEvent]:
        """Record an object whose key is refused as a failed image of its batch; returns the events."""
        assert refused.batch_id is not None
        await self.ensure(refused.batch_id, refused.bucket)
        registration = await self._repository.register_image(ImageVersion.of(refused))
        return await self._repository.fail_image(registration.image.id, code=refused.code, reason=refused.reason)

    async def _check_webhook(
        self, batch_id: str, manifest: Manifest | None
    ) -> tuple[NewSubscription | None, WebhookRequestError | None]:
        """The manifest's webhook as a subscription, or why it is refused (logged); (None, None)
        when it names none."""
        if manifest is None or manifest.webhook is None:
            return None, None
        try:
            return await manifest_subscription(manifest.webhook, self._settings, batch_id), None
        except WebhookRequestError as refused:
            log.warning("batch %s: the manifest's webhook is refused, the batch goes on without one: %s (%s)",
                        batch_id, refused.reason, refused.code)
            return None, refused

    async def _subscribe_later(self, batch_id: str, manifest: Manifest) -> None:
        """A manifest read after its batch was created: its webhook, if the batch has none yet."""
        if manifest.webhook is None or await self._repository.subscription(batch_id) is not None:
            return
        webhook, refused = await self._check_webhook(batch_id, manifest)
        if webhook is not None:
            await self._repository.subscribe(batch_id, webhook)
        elif refused is not None:
            await self._repository.refuse_webhook(batch_id, refused.code, refused.reason)

    async def _read_manifest(self, batch_id: str, bucket: str, *, strict: bool = False) -> Manifest | None:
        try:
            data = await self._storage.get_if_exists(
                bucket, manifest_key(batch_id), max_bytes=MAX_MANIFEST_BYTES
            )
            return None if data is None else parse_manifest(data)
        except (ManifestError, PermanentFailure) as exc:
            if strict:
                raise ManifestError(str(exc)) from exc
            log.warning("batch %s: unusable manifest ignored; its own event records why", batch_id)
            return None
