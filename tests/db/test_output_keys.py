"""Reserving result keys: two inputs of one batch never share a result object."""

from __future__ import annotations

import pytest

from db.records import ImageVersion
from db.repository import Repository

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


async def claimed(repo: Repository, name: str, etag: str = "e1", owner: str = "w1") -> int:
    registration = await repo.register_image(
        ImageVersion(bucket="in", batch_id="b", key=f"b/{name}", name=name, etag=etag, size=1)
    )
    assert await repo.claim_image(registration.image.id, owner, lease_seconds=60)
    return registration.image.id


async def test_the_second_input_gets_the_next_candidate(repository: Repository) -> None:
    await repository.create_batch("b", input_bucket="in", options={})
    png = await claimed(repository, "a.png")
    jpg = await claimed(repository, "a.jpg")
    assert await repository.reserve_output_key(jpg, "w1", ["b/a.jpg"]) == "b/a.jpg"
    assert await repository.reserve_output_key(png, "w1", ["b/a.jpg", "b/a.png.jpg"]) == "b/a.png.jpg"
    # asking again (a retry) keeps what the image holds
    assert await repository.reserve_output_key(jpg, "w1", ["b/a.jpg"]) == "b/a.jpg"
    assert (await repository.get_image(png)).output_key == "b/a.png.jpg"


async def test_every_candidate_taken_gives_none(repository: Repository) -> None:
    await repository.create_batch("b", input_bucket="in", options={})
    first = await claimed(repository, "x.png")
    second = await claimed(repository, "x.webp")
    assert await repository.reserve_output_key(first, "w1", ["b/x.jpg"]) == "b/x.jpg"
    assert await repository.reserve_output_key(second, "w1", ["b/x.jpg"]) is None


async def test_a_new_version_of_the_same_key_reuses_its_result_key(repository: Repository) -> None:
    await repository.create_batch("b", input_bucket="in", options={})
    old = await claimed(repository, "a.jpg", "e1")
    assert await repository.reserve_output_key(old, "w1", ["b/a.jpg"]) == "b/a.jpg"
    assert await repository.complete_image(old, "w1", output_key="b/a.jpg")
    new = await claimed(repository, "a.jpg", "e2")
    assert await repository.reserve_output_key(new, "w1", ["b/a.jpg"]) == "b/a.jpg"


async def test_only_the_claim_holder_reserves_and_a_failure_frees_the_key(repository: Repository) -> None:
    await repository.create_batch("b", input_bucket="in", options={})
    first = await claimed(repository, "a.png")
    assert await repository.reserve_output_key(first, "someone-else", ["b/a.jpg"]) is None
    assert await repository.reserve_output_key(first, "w1", ["b/a.jpg"]) == "b/a.jpg"
    events = await repository.fail_image(first, reason="broken", code="corrupt_image", owner="w1")
    assert events[0].image.output_key is None
    second = await claimed(repository, "a.jpg")
    assert await repository.reserve_output_key(second, "w1", ["b/a.jpg"]) == "b/a.jpg"
