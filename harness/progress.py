"""Driving a batch's progress the way the processor does, until tests can run the real one.

``seed_batch`` creates a batch with a token and registers its images; ``finish`` claims and
completes (or fails) one image through the repository, which appends its events in the same
transaction; ``ProgressPublisher`` publishes the returned events exactly as the processor does:
persistent messages on the progress exchange with routing key ``batch.<id>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aio_pika

from db.records import ImageVersion
from db.repository import Repository
from photoenhance.contracts.progress import ProgressEvent, progress_routing_key
from photoenhance.contracts.tokens import new_batch_token
from photoenhance.settings import Settings
from photoenhance.topology import declare_progress_exchange


@dataclass(frozen=True)
class SeededBatch:
    """A batch made for a test: its id, its token and its image ids in name order."""

    batch_id: str
    token: str
    image_ids: list[int]


async def seed_batch(repository: Repository, batch_id: str, count: int, *, expected: bool = True) -> SeededBatch:
    """A batch with ``count`` pending images ``img000.jpg``...; expecting exactly them by default."""
    token, token_hash = new_batch_token()
    await repository.create_batch(
        batch_id,
        input_bucket="in",
        options={"quality": "fast"},
        expected_count=count if expected else None,
        token_hash=token_hash,
    )
    ids = []
    for i in range(count):
        name = f"img{i:03d}.jpg"
        registration = await repository.register_image(
            ImageVersion(
                bucket="in",
                batch_id=batch_id,
                key=f"{batch_id}/{name}",
                name=name,
                etag=f"etag{i}",
                size=100,
                uploaded_at=datetime.now(UTC),
            )
        )
        ids.append(registration.image.id)
    return SeededBatch(batch_id=batch_id, token=token, image_ids=ids)


async def finish(
    repository: Repository, image_id: int, *, fail: bool = False, report: dict[str, Any] | None = None
) -> list[ProgressEvent]:
    """Claim and complete (or fail) one image as a worker would; returns the events committed."""
    owner = "test-worker"
    claimed = await repository.claim_image(image_id, owner, lease_seconds=60)
    assert claimed is not None, f"image {image_id} could not be claimed"
    if fail:
        return await repository.fail_image(image_id, reason="not an image", code="not_an_image", owner=owner)
    return await repository.complete_image(
        image_id, owner, output_key=f"out/{claimed.name}", report=report or {"faces": 0}
    )


class ProgressPublisher:
    """Publishes progress events as the processor does (use as ``async with``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def __aenter__(self) -> ProgressPublisher:
        self._connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self._connection.channel()
        self._exchange = await declare_progress_exchange(channel, self.settings)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def publish(self, events: Iterable[ProgressEvent]) -> None:
        """Publish each event: persistent, JSON, routed by its batch."""
        assert self._exchange is not None, "use ProgressPublisher as an async context manager"
        for event in events:
            await self._exchange.publish(
                aio_pika.Message(
                    event.to_json(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=progress_routing_key(event.batch_id),
            )

    async def finish_all(self, repository: Repository, image_ids: Sequence[int]) -> list[ProgressEvent]:
        """Finish each image and publish its events right after its commit; returns all events."""
        published: list[ProgressEvent] = []
        for image_id in image_ids:
            events = await finish(repository, image_id)
            await self.publish(events)
            published += events
        return published
