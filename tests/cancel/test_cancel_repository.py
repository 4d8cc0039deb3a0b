"""Cancelling a batch in the database: what stops, what finishes, and the event that ends it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from db.cancel import BatchAlreadyCompleted
from db.records import ImageVersion
from db.repository import Repository, UnknownBatch
from photoenhance.contracts.progress import EventType
from photoenhance.contracts.states import BatchState, ImageState

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def version(name: str, etag: str = "e1") -> ImageVersion:
    return ImageVersion(bucket="in", batch_id="b1", key=f"b1/{name}", name=name, etag=etag, size=10, uploaded_at=T0)


async def test_cancel_stops_unclaimed_images_and_ends_after_the_last_in_flight(repository: Repository) -> None:
    await repository.create_batch("b1", input_bucket="in", options={}, expected_count=6)
    images = [(await repository.register_image(version(f"{i}.jpg"))).image for i in range(5)]
    done = await repository.claim_image(images[0].id, "w1", 60)
    assert done is not None
    await repository.complete_image(done.id, "w1", output_key="out/0.jpg")
    in_flight = [await repository.claim_image(images[i].id, "w1", 60) for i in (1, 2)]

    outcome = await repository.cancel_batch("b1")
    assert (outcome.batch.state, outcome.cancelled, outcome.events) == (BatchState.CANCELLING, 2, [])
    # An unclaimed image can no longer be claimed.
    assert await repository.claim_image(images[3].id, "w2", 60) is None
    assert (await repository.get_image(images[3].id)).state is ImageState.CANCELLED

    first = await repository.complete_image(in_flight[0].id, "w1", output_key="out/1.jpg")
    assert [e.type for e in first] == [EventType.IMAGE_COMPLETED]
    last = await repository.fail_image(in_flight[1].id, reason="corrupt", code="corrupt", owner="w1")
    assert [e.type for e in last] == [EventType.IMAGE_FAILED, EventType.BATCH_CANCELLED]
    counts = last[-1].counts
    assert (counts.total, counts.completed, counts.failed, counts.cancelled) == (5, 2, 1, 2)

    # A later upload under the prefix is ignored: neither processed, counted nor listed.
    late = await repository.register_image(version("late.jpg"))
    assert late.image.state is ImageState.SUPERSEDED and late.image.state.is_final
    batch = await repository.get_batch("b1")
    assert batch.state is BatchState.CANCELLED and (batch.total, batch.cancelled) == (5, 2)
    assert batch.last_seq == last[-1].seq
    snapshot = await repository.batch_snapshot("b1")
    assert "late.jpg" not in {i.name for i in snapshot.images}

    again = await repository.cancel_batch("b1")
    assert again.repeated and again.events == []
    assert (await repository.get_batch("b1")).state is BatchState.CANCELLED


async def test_cancel_with_nothing_in_flight_ends_at_once(repository: Repository) -> None:
    await repository.create_batch("b1", input_bucket="in", options={}, expected_count=3)
    for i in range(2):
        await repository.register_image(version(f"{i}.jpg"))
    outcome = await repository.cancel_batch("b1")
    assert outcome.batch.state is BatchState.CANCELLED
    assert [e.type for e in outcome.events] == [EventType.BATCH_CANCELLED]
    assert outcome.events[0].counts.cancelled == 2


async def test_cancel_of_a_completed_or_unknown_batch_is_refused(repository: Repository) -> None:
    await repository.create_batch("b1", input_bucket="in", options={}, expected_count=1)
    image = (await repository.register_image(version("a.jpg"))).image
    await repository.claim_image(image.id, "w1", 60)
    events = await repository.complete_image(image.id, "w1", output_key="out/a.jpg")
    assert events[-1].type is EventType.BATCH_COMPLETED
    with pytest.raises(BatchAlreadyCompleted):
        await repository.cancel_batch("b1")
    with pytest.raises(UnknownBatch):
        await repository.cancel_batch("nope")
