"""The repository's operations, against SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from db.models import Image
from db.records import ImageVersion
from db.repository import BatchExists, DeclaredFile, Repository, UnknownBatch
from db.webhooks import NewSubscription
from photoenhance.contracts.progress import EventType
from photoenhance.contracts.states import BatchState, ImageState

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def version(batch: str, name: str, etag: str = "e1", at: datetime = T0, bucket: str = "in") -> ImageVersion:
    return ImageVersion(
        bucket=bucket, batch_id=batch, key=f"{batch}/{name}", name=name, etag=etag, size=10, uploaded_at=at
    )


async def new_batch(repo: Repository, batch_id: str = "b1", expected: int | None = None) -> None:
    await repo.create_batch(batch_id, input_bucket="in", options={"quality": "fast"}, expected_count=expected)


async def finish(repo: Repository, image_id: int, owner: str = "w1") -> list:
    claimed = await repo.claim_image(image_id, owner, lease_seconds=60)
    assert claimed is not None
    return await repo.complete_image(image_id, owner, output_key=f"out/{image_id}.jpg", report={"faces": 0})


async def test_create_batch_refuses_a_taken_id(repository: Repository) -> None:
    await new_batch(repository)
    with pytest.raises(BatchExists):
        await new_batch(repository)
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.state is BatchState.OPEN and batch.last_seq == 0


async def test_create_batch_stores_declared_files(repository: Repository) -> None:
    files = [DeclaredFile("a.jpg", "A.JPG", 100, "image/jpeg"), DeclaredFile("b.png", "b.png", 5, "image/png")]
    await repository.create_batch("b1", input_bucket="in", options={}, expected_count=2, files=files)
    assert await repository.declared_files("b1") == files


async def test_ensure_batch_creates_once(repository: Repository) -> None:
    first, created = await repository.ensure_batch("d1", input_bucket="in", options={})
    again, created_again = await repository.ensure_batch("d1", input_bucket="in", options={"x": 1})
    assert created and not created_again
    assert first.source == "direct" and again.options == {}


async def test_register_is_idempotent_by_version(repository: Repository) -> None:
    await new_batch(repository)
    first = await repository.register_image(version("b1", "a.jpg"))
    second = await repository.register_image(version("b1", "a.jpg"))
    assert first.created and not second.created
    assert first.image.id == second.image.id
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.total == 1


async def test_register_into_unknown_batch_fails(repository: Repository) -> None:
    with pytest.raises(UnknownBatch):
        await repository.register_image(version("nope", "a.jpg"))


async def test_new_etag_supersedes_and_takes_back_counters(repository: Repository) -> None:
    await new_batch(repository)
    old = (await repository.register_image(version("b1", "a.jpg", "e1"))).image
    await finish(repository, old.id)
    newer = await repository.register_image(version("b1", "a.jpg", "e2", at=T0 + timedelta(seconds=5)))
    assert newer.created and newer.superseded == (old.id,)
    batch = await repository.get_batch("b1")
    assert batch is not None
    assert (batch.total, batch.completed, batch.failed) == (1, 0, 0)
    snapshot = await repository.batch_snapshot("b1")
    assert snapshot is not None and [i.etag for i in snapshot.images] == ["e2"]
    assert (await repository.get_image(old.id)).state is ImageState.SUPERSEDED


async def test_a_late_older_version_is_recorded_as_superseded(repository: Repository) -> None:
    await new_batch(repository)
    await repository.register_image(version("b1", "a.jpg", "new", at=T0 + timedelta(seconds=5)))
    late = await repository.register_image(version("b1", "a.jpg", "old", at=T0))
    assert late.created and late.image.state is ImageState.SUPERSEDED
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.total == 1


async def test_a_superseded_claim_cannot_complete(repository: Repository) -> None:
    await new_batch(repository)
    old = (await repository.register_image(version("b1", "a.jpg", "e1"))).image
    assert await repository.claim_image(old.id, "w1", 60) is not None
    await repository.register_image(version("b1", "a.jpg", "e2", at=T0 + timedelta(seconds=1)))
    assert await repository.complete_image(old.id, "w1", output_key="x") == []
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.completed == 0


async def test_claim_is_exclusive_until_the_lease_expires(database, repository: Repository) -> None:
    await new_batch(repository)
    image = (await repository.register_image(version("b1", "a.jpg"))).image
    assert await repository.claim_image(image.id, "w1", lease_seconds=60) is not None
    assert await repository.claim_image(image.id, "w2", lease_seconds=60) is None
    later = Repository(database, clock=lambda: datetime.now(UTC) + timedelta(seconds=120))
    assert [i.id for i in await later.expired_leases()] == [image.id]
    taken = await later.claim_image(image.id, "w2", lease_seconds=60)
    assert taken is not None and taken.lease_owner == "w2" and taken.attempts == 2
    # The first worker lost its claim: its completion does not count.
    assert await repository.complete_image(image.id, "w1", output_key="x") == []
    assert len(await later.complete_image(image.id, "w2", output_key="x")) == 1


async def test_completion_counts_once_and_logs_events(repository: Repository) -> None:
    await new_batch(repository, expected=2)
    a = (await repository.register_image(version("b1", "a.jpg"))).image
    b = (await repository.register_image(version("b1", "b.jpg"))).image
    events = await finish(repository, a.id)
    assert [(e.seq, e.type) for e in events] == [(1, EventType.IMAGE_COMPLETED)]
    assert events[0].image is not None and events[0].image.name == "a.jpg"
    assert events[0].counts.completed == 1 and events[0].counts.expected == 2
    assert await repository.complete_image(a.id, "w1", output_key="again") == []
    assert await repository.claim_image(a.id, "w1", 60) is None
    events = await finish(repository, b.id)
    assert [(e.seq, e.type) for e in events] == [(2, EventType.IMAGE_COMPLETED), (3, EventType.BATCH_COMPLETED)]
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.state is BatchState.COMPLETED
    assert (batch.total, batch.completed, batch.failed, batch.last_seq) == (2, 2, 0, 3)


async def test_failure_is_recorded_with_reason(repository: Repository) -> None:
    await new_batch(repository, expected=1)
    image = (await repository.register_image(version("b1", "notes.jpg"))).image
    events = await repository.fail_image(image.id, reason="the file is text, not an image", code="not_an_image")
    assert [e.type for e in events] == [EventType.IMAGE_FAILED, EventType.BATCH_COMPLETED]
    assert events[0].image is not None and events[0].image.code == "not_an_image"
    stored = await repository.get_image(image.id)
    assert stored is not None and stored.state is ImageState.FAILED and stored.reason.startswith("the file")
    # A final image is left alone.
    assert await repository.fail_image(image.id, reason="again", code="x") == []


async def test_fail_with_owner_needs_the_claim(repository: Repository) -> None:
    await new_batch(repository)
    image = (await repository.register_image(version("b1", "a.jpg"))).image
    await repository.claim_image(image.id, "w1", 60)
    assert await repository.fail_image(image.id, reason="r", code="c", owner="w2") == []
    assert len(await repository.fail_image(image.id, reason="r", code="c", owner="w1")) == 1


async def test_events_since_returns_exactly_the_missed_ones(repository: Repository) -> None:
    await new_batch(repository)
    ids = [(await repository.register_image(version("b1", f"{n}.jpg"))).image.id for n in range(5)]
    for image_id in ids:
        await finish(repository, image_id)
    assert [e.seq for e in await repository.events_since("b1")] == [1, 2, 3, 4, 5]
    assert [e.seq for e in await repository.events_since("b1", since=3)] == [4, 5]
    assert [e.seq for e in await repository.events_since("b1", since=1, limit=2)] == [2, 3]
    assert await repository.events_since("b1", since=5) == []
    latest = await repository.latest_event_for(ids[2])
    assert latest is not None and latest.seq == 3


async def test_batch_without_expected_count_completes_when_idle(database, repository: Repository) -> None:
    await repository.ensure_batch("d1", input_bucket="in", options={})
    image = (await repository.register_image(version("d1", "a.jpg", at=datetime.now(UTC)))).image
    assert [e.type for e in await finish(repository, image.id)] == [EventType.IMAGE_COMPLETED]
    assert await repository.complete_if_idle("d1", idle_seconds=3600) == []
    events = await repository.complete_if_idle("d1", idle_seconds=0)
    assert [e.type for e in events] == [EventType.BATCH_COMPLETED]
    assert await repository.complete_if_idle("d1", idle_seconds=0) == []


async def test_a_new_upload_reopens_a_completed_batch(repository: Repository) -> None:
    await new_batch(repository, expected=1)
    a = (await repository.register_image(version("b1", "a.jpg"))).image
    await finish(repository, a.id)
    await repository.register_image(version("b1", "b.jpg"))
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.state is BatchState.OPEN and batch.total == 2


async def test_retry_failed_reopens_and_resets(repository: Repository) -> None:
    await new_batch(repository, expected=1)
    image = (await repository.register_image(version("b1", "a.jpg"))).image
    await repository.fail_image(image.id, reason="storage down", code="storage")
    retried = (await repository.retry_failed("b1")).retried
    assert [i.id for i in retried] == [image.id] and retried[0].state is ImageState.PENDING
    batch = await repository.get_batch("b1")
    assert batch is not None and batch.state is BatchState.OPEN and batch.failed == 0
    events = await finish(repository, image.id)
    assert [e.type for e in events] == [EventType.IMAGE_COMPLETED, EventType.BATCH_COMPLETED]


async def test_manifest_count_can_complete_a_batch(repository: Repository) -> None:
    await repository.ensure_batch("d1", input_bucket="in", options={})
    image = (await repository.register_image(version("d1", "a.jpg"))).image
    await finish(repository, image.id)
    updated, appended = await repository.update_batch_plan("d1", options={"quality": "fast"}, expected_count=1)
    assert updated.state is BatchState.COMPLETED and updated.options == {"quality": "fast"}
    assert [e.type for e in await repository.events_since("d1")][-1] is EventType.BATCH_COMPLETED
    assert [(e.type, e.seq) for e in appended] == [(EventType.BATCH_COMPLETED, updated.last_seq)]


async def test_a_manifest_webhook_is_subscribed_once_and_a_refusal_gives_way_to_it(repository: Repository) -> None:
    first = NewSubscription(url="https://a.example/hook", events=("batch.completed",), sealed_secret="sealed-a")
    _, created = await repository.ensure_batch("d1", input_bucket="in", options={}, webhook=first)
    assert created and (await repository.subscription("d1")).url == first.url
    assert not await repository.subscribe("d1", NewSubscription(url="https://b.example/", events=(), sealed_secret="b"))
    assert (await repository.subscription("d1")).url == first.url  # the first webhook stays

    await repository.ensure_batch("d2", input_bucket="in", options={})
    await repository.refuse_webhook("d2", "webhook_url_scheme", "the webhook URL must use https")
    await repository.refuse_webhook("d2", "webhook_url_not_public", "10.0.0.7 is private")
    refused = await repository.webhook_refusal("d2")
    assert refused is not None and refused.to_dict() == {"code": "webhook_url_not_public", "reason": "10.0.0.7 is private"}
    assert await repository.subscribe("d2", first)  # a corrected manifest: the refusal is gone
    assert await repository.webhook_refusal("d2") is None and await repository.subscription("d2") is not None


async def test_release_hands_an_image_back(repository: Repository) -> None:
    await new_batch(repository)
    image = (await repository.register_image(version("b1", "a.jpg"))).image
    await repository.claim_image(image.id, "w1", 60)
    assert not await repository.release_image(image.id, "w2")
    assert await repository.release_image(image.id, "w1")
    assert await repository.claim_image(image.id, "w2", 60) is not None
    assert await repository.extend_lease(image.id, "w2", 120)
    assert not await repository.extend_lease(image.id, "w1", 120)


async def test_known_versions_lists_every_registered_version(repository: Repository) -> None:
    await new_batch(repository)
    await repository.register_image(version("b1", "a.jpg", "e1"))
    await repository.register_image(version("b1", "a.jpg", "e2", at=T0 + timedelta(seconds=1)))
    await repository.register_image(version("b1", "b.jpg", "e1"))
    assert await repository.known_versions("in", "b1") == {("b1/a.jpg", "e1"), ("b1/a.jpg", "e2"), ("b1/b.jpg", "e1")}
    assert [i.name for i in await repository.unfinished_images("b1")] == ["a.jpg", "b.jpg"]


async def test_a_consistent_read_keeps_one_snapshot_while_others_commit(database, repository: Repository) -> None:
    """What batch_snapshot relies on: counters and images read in one consistent read agree even
    when a writer commits between the two statements (PostgreSQL needs REPEATABLE READ for this)."""
    await new_batch(repository)
    await repository.register_image(version("b1", "a.jpg"))
    count = select(func.count()).select_from(Image).where(Image.batch_id == "b1")
    async with database.read(consistent=True) as conn:
        before = (await conn.execute(count)).scalar_one()
        await repository.register_image(version("b1", "b.jpg"))
        during = (await conn.execute(count)).scalar_one()
    async with database.read() as conn:
        after = (await conn.execute(count)).scalar_one()
    assert (before, during, after) == (1, 1, 2)


async def test_missing_uploads_fail_once_and_a_late_upload_supersedes_them(repository: Repository) -> None:
    files = [DeclaredFile(n, n, 100, "image/jpeg") for n in ("a.jpg", "b.jpg", "c.jpg")]
    await repository.create_batch("b1", input_bucket="in", options={}, source="api", expected_count=3, files=files)
    registered = await repository.register_image(version("b1", "a.jpg"))
    await finish(repository, registered.image.id)

    events = await repository.fail_missing_uploads("b1", reason="never came")
    assert [(e.type, e.image.name if e.image else None, e.seq) for e in events] == [
        (EventType.IMAGE_FAILED, "b.jpg", 2),
        (EventType.IMAGE_FAILED, "c.jpg", 3),
        (EventType.BATCH_COMPLETED, None, 4),
    ]
    assert events[0].image.code == "upload_missing" and events[0].image.reason == "never came"
    assert await repository.fail_missing_uploads("b1", reason="never came") == []
    outcome = await repository.retry_failed("b1")
    assert outcome.retried == [], "nothing to process: a retry cannot help"
    assert outcome.skipped == {"upload_missing": 2}

    late = await repository.register_image(version("b1", "c.jpg", "e7", at=T0 + timedelta(minutes=30)))
    assert late.created and len(late.superseded) == 1
    batch = await repository.get_batch("b1")
    assert (batch.state, batch.total, batch.completed, batch.failed) == (BatchState.OPEN, 3, 1, 1)
    await finish(repository, late.image.id)
    batch = await repository.get_batch("b1")
    assert (batch.total, batch.completed, batch.failed) == (3, 2, 1)


async def test_a_released_image_gives_its_result_key_back(repository: Repository) -> None:
    # a.png and a.jpg both want a.jpg. The first to claim it hands its claim back (a retry later):
    # the key is free for the other meanwhile, and the first takes the fallback when it comes back.
    await new_batch(repository)
    first = (await repository.register_image(version("b1", "a.png"))).image
    second = (await repository.register_image(version("b1", "a.jpg"))).image
    candidates = ["b1/a.jpg", "b1/a.png.jpg"]
    await repository.claim_image(first.id, "w1", 60)
    assert await repository.reserve_output_key(first.id, "w1", candidates) == "b1/a.jpg"
    assert await repository.release_image(first.id, "w1")
    await repository.claim_image(second.id, "w2", 60)
    assert await repository.reserve_output_key(second.id, "w2", ["b1/a.jpg", "b1/a.jpg.jpg"]) == "b1/a.jpg"
    again = await repository.claim_image(first.id, "w1", 60)
    assert again is not None and again.output_key is None
    assert await repository.reserve_output_key(first.id, "w1", candidates) == "b1/a.png.jpg"
