"""``POST /api/v1/batches/{id}/cancel`` through the HTTP API: answers, codes, and the event."""

from __future__ import annotations

import asyncio

from harness.processor import ProgressRecorder
from photoenhance.contracts.progress import EventType
from photoenhance.settings import Settings
from tests.ingest.conftest import StartIngest, image_file, record_result


async def test_cancel_answers_and_the_batch_cancelled_event(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    created = await ingest.create([image_file("a.jpg"), image_file("b.jpg")])
    batch_id, auth = created["batch_id"], {"Authorization": f"Bearer {created['token']}"}
    cancel = ingest.url(f"/api/v1/batches/{batch_id}/cancel")

    async with ProgressRecorder(settings) as progress:
        async with ingest.http.post(cancel) as response:  # no credential: the unknown-batch answer
            no_token = (response.status, await response.json())
        async with ingest.http.post(ingest.url("/api/v1/batches/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel"), headers=auth) as response:
            unknown = (response.status, await response.json())
        assert no_token == unknown == (404, {"error": {"code": "batch_not_found", "message": "no such batch"}})

        async with ingest.http.post(cancel, headers=auth) as response:
            first = await response.json()
        assert response.status == 202 and first["state"] == "cancelled" and first["cancelled_now"] == 2, first
        async with ingest.http.post(cancel, headers=auth) as response:
            again = await response.json()
        assert response.status == 202 and again["state"] == "cancelled" and again["cancelled_now"] == 0
        async with ingest.http.post(ingest.url(f"/api/v1/batches/{batch_id}/retry"), headers=auth) as response:
            assert (response.status, (await response.json())["error"]["code"]) == (409, "batch_cancelled")
        for _ in range(50):
            if len([e for e in progress.events if e.batch_id == batch_id]) >= 2:
                break
            await asyncio.sleep(0.1)
    published = [e for e in progress.events if e.batch_id == batch_id]
    # Published on the cancel, and again on the repeated cancel (same seq: subscribers drop it).
    assert [(e.seq, e.type) for e in published] == [(1, EventType.BATCH_CANCELLED)] * 2
    assert published[0].counts.cancelled == 2

    async with ingest.http.get(ingest.url(f"/api/v1/batches/{batch_id}"), headers=auth) as response:
        status = await response.json()
    assert status["state"] == "cancelled" and [i["state"] for i in status["images"]] == ["cancelled", "cancelled"]
    assert status["counts"]["cancelled"] == 2 and status["counts"]["pending"] == 0


async def test_cancel_of_a_completed_batch_is_a_clear_409(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    created = await ingest.create([image_file("a.jpg")])
    batch_id = created["batch_id"]
    await record_result(ingest.repository, batch_id, settings.s3_input_bucket, "a.jpg", etag="e1", size=10,
                        output_key=f"{batch_id}/a.jpg")
    async with ingest.http.post(ingest.url(f"/api/v1/batches/{batch_id}/cancel"),
                                headers={"Authorization": f"Bearer {created['token']}"}) as response:
        body = await response.json()
    assert (response.status, body["error"]["code"]) == (409, "batch_completed"), body
