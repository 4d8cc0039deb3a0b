"""Status pages of completed and cancelled batches are rendered once and served from memory.

bench/status_load.py measures what this buys (16 pollers of a completed 1,000-image batch); here:
the second read of a final batch does not read its images again, answers the same bytes, and any
write to the batch (a re-upload reopening it, another image finishing) is seen at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from db.records import BatchRecord, ImageVersion
from ingest.final_pages import FinalPages, page_version
from photoenhance.contracts.states import BatchState
from photoenhance.settings import Settings
from tests.ingest.conftest import RunningIngest, StartIngest, image_file, record_result

WHEN = datetime(2026, 12, 3, tzinfo=UTC)


def batch(state: BatchState = BatchState.COMPLETED, **changes: Any) -> BatchRecord:
    values: dict[str, Any] = {
        "id": "01BX5ZZKBKACTAV9WEVGEMMVRZ", "state": state, "source": "api", "input_bucket": "in",
        "options": {}, "expected_count": 2, "token_hash": "0" * 64, "total": 2, "completed": 2, "failed": 0,
        "last_seq": 3, "created_at": WHEN, "updated_at": WHEN, "last_upload_at": WHEN, "completed_at": WHEN,
    }  # fmt: skip
    values.update(changes)
    return BatchRecord(**values)


def test_only_final_batches_have_a_version_and_any_row_change_makes_a_new_one() -> None:
    assert page_version(batch(BatchState.OPEN), None, 100, 0) is None
    assert page_version(batch(BatchState.CANCELLING), None, 100, 0) is None
    assert page_version(batch(BatchState.CANCELLED), None, 100, 0) is not None
    base = page_version(batch(), None, 100, 0)
    assert page_version(batch(), None, 100, 0) == base
    for changed in (
        page_version(batch(updated_at=WHEN + timedelta(microseconds=1)), None, 100, 0),
        page_version(batch(last_seq=4), None, 100, 0),
        page_version(batch(retried_at=WHEN), None, 100, 0),
        page_version(batch(), "d0.jpg", 100, 0),
        page_version(batch(), None, 50, 0),
        page_version(batch(), None, 100, 90),
    ):
        assert changed != base


def test_pages_past_the_budget_drop_the_least_recently_used() -> None:
    pages = FinalPages(budget_bytes=10)
    pages.put("a", b"1234")
    pages.put("b", b"5678")
    assert pages.get("a") == b"1234"  # now the most recently used
    pages.put("c", b"90ab")
    assert pages.get("b") is None
    assert (pages.get("a"), pages.get("c")) == (b"1234", b"90ab")
    pages.put("huge", b"x" * 11)  # larger than the whole budget: never stored
    assert pages.get("huge") is None and pages.get("a") == b"1234"


async def read(ingest: RunningIngest, batch_id: str, token: str) -> bytes:
    async with ingest.http.get(
        ingest.url(f"/api/v1/batches/{batch_id}"), headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 200
        return await response.read()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_completed_batch_is_read_once_and_any_change_is_seen_at_once(
    start_ingest: StartIngest, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest = await start_ingest(settings)
    created = await ingest.create([image_file("d0.jpg"), image_file("d1.jpg")])
    batch_id, token, bucket = created["batch_id"], created["token"], settings.s3_input_bucket
    await record_result(ingest.repository, batch_id, bucket, "d0.jpg", etag="e0", size=9, output_key=f"{batch_id}/d0.jpg")
    await record_result(ingest.repository, batch_id, bucket, "d1.jpg", etag="e1", size=9, output_key=None)

    page_reads = 0
    real_status_page = ingest.repository.status_page

    async def counting_status_page(*args: Any, **kwargs: Any) -> Any:
        nonlocal page_reads
        page_reads += 1
        return await real_status_page(*args, **kwargs)

    monkeypatch.setattr(ingest.repository, "status_page", counting_status_page)
    first = await read(ingest, batch_id, token)
    assert b'"state": "completed"' in first
    assert await read(ingest, batch_id, token) == first
    assert page_reads == 1

    # A re-upload of d1 reopens the batch: the next read shows it, not the stored page.
    await ingest.repository.register_image(
        ImageVersion(bucket=bucket, batch_id=batch_id, key=f"{batch_id}/d1.jpg", name="d1.jpg", etag="e1b", size=9)
    )
    reopened = await read(ingest, batch_id, token)
    assert page_reads == 2
    assert b'"state": "open"' in reopened and b'"state": "pending"' in reopened
