"""Retry: failed images go back to pending and are re-announced on the processors' work queue,
as a bucket notification the processor parses like any other."""

from __future__ import annotations

import socket

from photoenhance.contracts.states import ImageState
from photoenhance.settings import Settings
from tests.ingest.conftest import StartIngest, image_file, record_result
from tests.provision.test_bucket_notifications import next_record, work_queue_inbox


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_retry_reannounces_failed_images(start_ingest: StartIngest, settings: Settings) -> None:
    ingest = await start_ingest(settings)
    created = await ingest.create([image_file("ok.jpg"), image_file("bad one.jpg")])
    batch_id, bucket = created["batch_id"], settings.s3_input_bucket
    await record_result(ingest.repository, batch_id, bucket, "ok.jpg", etag="e-ok", size=10, output_key=f"{batch_id}/ok.jpg")
    failed = await record_result(ingest.repository, batch_id, bucket, "bad_one.jpg", etag="e-bad", size=1234, output_key=None)
    headers = {"Authorization": f"Bearer {created['token']}"}

    async with work_queue_inbox(settings) as inbox:
        async with ingest.http.post(ingest.url(f"/api/v1/batches/{batch_id}/retry"), headers=headers) as response:
            assert response.status == 202
            assert await response.json() == {"batch_id": batch_id, "retried": 1, "announced": 1}
        _, message, record = await next_record(inbox)
    assert message.routing_key == settings.amqp_events_routing_key
    assert message.delivery_mode == 2  # persistent
    assert (record.bucket, record.key, record.batch_id, record.name) == (bucket, failed.key, batch_id, "bad_one.jpg")
    assert (record.etag, record.size) == ("e-bad", 1234)
    image = await ingest.repository.get_image(failed.id)
    assert image is not None and image.state is ImageState.PENDING and image.reason is None
    batch = await ingest.repository.get_batch(batch_id)
    assert batch is not None and (batch.completed, batch.failed) == (1, 0)


async def test_a_retry_that_could_not_publish_is_completed_by_the_next(
    start_ingest: StartIngest, settings: Settings
) -> None:
    broken = await start_ingest(settings.replace(amqp_url=f"amqp://guest:guest@127.0.0.1:{closed_port()}/"))
    created = await broken.create([image_file("x.jpg")])
    batch_id = created["batch_id"]
    failed = await record_result(
        broken.repository, batch_id, settings.s3_input_bucket, "x.jpg", etag="e-x", size=5, output_key=None
    )
    headers = {"Authorization": f"Bearer {created['token']}"}
    async with broken.http.post(broken.url(f"/api/v1/batches/{batch_id}/retry"), headers=headers) as response:
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "broker_unavailable"

    # the image is pending now and no longer failed; retrying again must still announce it
    working = await start_ingest(settings)
    async with work_queue_inbox(settings) as inbox:
        async with working.http.post(working.url(f"/api/v1/batches/{batch_id}/retry"), headers=headers) as response:
            assert await response.json() == {"batch_id": batch_id, "retried": 0, "announced": 1}
        _, _, record = await next_record(inbox)
    assert (record.key, record.etag) == (failed.key, "e-x")
