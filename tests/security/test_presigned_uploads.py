"""Uploads through what the API signs, against the real object store, which enforces the signature.

A plain HTTP client (aiohttp, no S3 library) does what a browser form does: it posts the returned
fields and the file. The object must land at the exact key and be announced on the processors'
work queue; every way of stepping outside the policy must be refused by the store itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from minio.error import S3Error

from ingest.notifications import minio_client
from ingest.presign import Presigner
from photoenhance.settings import Settings
from tests.ingest.conftest import StartIngest, image_file
from tests.ingest.test_bucket_notifications import next_record, work_queue_inbox
from tests.support.objectstore import put_bytes

pytestmark = pytest.mark.objectstore

DECLARED = 1000


async def post_form(http: aiohttp.ClientSession, url: str, fields: dict[str, str], data: bytes) -> tuple[int, str]:
    """Send an HTML-form upload: the fields, then the file last, as S3 requires."""
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", data, filename="upload.bin", content_type=fields.get("Content-Type", "image/jpeg"))
    async with http.post(url, data=form) as response:
        return response.status, await response.text()


def store_code(text: str) -> str:
    """The S3 error code in an XML error body (or the body's start)."""
    start, end = text.find("<Code>"), text.find("</Code>")
    return text[start + 6 : end] if start >= 0 and end > start else text[:80]


def exists(settings: Settings, key: str) -> bool:
    try:
        minio_client(settings).stat_object(settings.s3_input_bucket, key)
        return True
    except S3Error as exc:
        if exc.code in {"NoSuchKey", "NoSuchObject"}:
            return False
        raise


async def test_post_upload_lands_at_the_exact_key_and_is_announced(
    store_settings: Settings, start_ingest: StartIngest
) -> None:
    ingest = await start_ingest(store_settings)
    created = await ingest.create([image_file("My photo (1).jpg", DECLARED)])
    [upload] = created["uploads"]
    data = bytes(range(256)) * 3 + b"x" * (DECLARED - 768)
    async with work_queue_inbox(store_settings) as inbox:
        status, text = await post_form(ingest.http, upload["url"], upload["fields"], data)
        assert status == 204, text
        _, message, record = await next_record(inbox)
    key = f"{created['batch_id']}/My_photo_1.jpg"
    assert upload["key"] == key
    assert (record.bucket, record.key, record.batch_id, record.name) == (
        store_settings.s3_input_bucket, key, created["batch_id"], "My_photo_1.jpg"
    )
    assert record.event_name == "s3:ObjectCreated:Post"
    assert record.size == DECLARED and record.etag == hashlib.md5(data).hexdigest()
    assert message.routing_key == store_settings.amqp_events_routing_key
    stored = minio_client(store_settings).get_object(store_settings.s3_input_bucket, key)
    try:
        assert stored.read() == data
        assert stored.headers["Content-Type"] == "image/jpeg"
    finally:
        stored.close()
        stored.release_conn()


def _tampered_signature(fields: dict[str, str]) -> dict[str, str]:
    sig = fields["x-amz-signature"]
    return {**fields, "x-amz-signature": ("0" if sig[0] != "0" else "1") + sig[1:]}


def _widened_policy(fields: dict[str, str]) -> dict[str, str]:
    """The policy rewritten to allow 100 MB, keeping the original signature."""
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"] = [
        ["content-length-range", 1, 100_000_000] if c[0] == "content-length-range" else c for c in policy["conditions"]
    ]
    return {**fields, "policy": base64.b64encode(json.dumps(policy).encode()).decode()}


async def test_the_store_refuses_everything_outside_the_policy(
    store_settings: Settings, start_ingest: StartIngest, record_property: pytest.RecordProperty
) -> None:
    """Each attack is refused by the store, stores nothing and announces nothing.

    "Announces nothing" is observed without waiting: the store publishes an upload's notification
    before it answers the upload, in order on one connection, so once the control upload made
    after all attacks has arrived, any notification of an attack would have arrived before it.
    """
    ingest = await start_ingest(store_settings)
    created = await ingest.create([image_file("a.jpg", DECLARED), image_file("control.jpg", DECLARED)])
    upload, control = created["uploads"]
    fields, url = upload["fields"], upload["url"]
    key = upload["key"]
    past = Presigner(
        store_settings,
        clock=lambda: datetime.now(timezone.utc) - timedelta(seconds=store_settings.presign_expiry_s + 120),
    )
    expired = past.upload_post(key, size=DECLARED, content_type="image/jpeg")
    good = b"y" * DECLARED
    attacks: dict[str, tuple[dict[str, str], bytes]] = {
        "one byte more than declared": (fields, good + b"y"),
        "far more than declared": (fields, good * 50),
        "empty file": (fields, b""),
        "another key in the batch": ({**fields, "key": f"{created['batch_id']}/other.jpg"}, good),
        "another batch's prefix": ({**fields, "key": f"01OTHERBATCH0000000000000/{key.split('/')[1]}"}, good),
        "the key of the other upload": ({**fields, "key": control["key"]}, good),
        "another content type": ({**fields, "Content-Type": "text/html"}, good),
        "expired policy": (expired.fields or {}, good),
        "tampered signature": (_tampered_signature(fields), good),
        "policy widened, signature kept": (_widened_policy(fields), good),
        "policy of the other upload": ({**fields, "policy": control["fields"]["policy"]}, good),
    }
    answers: dict[str, tuple[int, str]] = {}
    async with work_queue_inbox(store_settings) as inbox:
        for case, (form, data) in attacks.items():
            status, text = await post_form(ingest.http, url, form, data)
            answers[case] = (status, store_code(text))
        status, text = await post_form(ingest.http, control["url"], control["fields"], good)
        assert status == 204, text
        _, _, record = await next_record(inbox)
        assert record.key == control["key"], f"an attack was announced: {record.key}"
    summary = {case: f"{status} {code}" for case, (status, code) in answers.items()}
    record_property("refusals", summary)
    print("\nrefusals by the store:\n" + "\n".join(f"  {case}: {answer}" for case, answer in summary.items()))
    for case, (status, code) in answers.items():
        assert 400 <= status < 500, f"{case}: the store accepted it ({status} {code})"
    for probe in (key, f"{created['batch_id']}/other.jpg", f"01OTHERBATCH0000000000000/{key.split('/')[1]}"):
        assert not exists(store_settings, probe), probe


async def test_presigned_put_lands_and_the_store_refuses_tampered_or_expired_urls(
    store_settings: Settings, start_ingest: StartIngest
) -> None:
    ingest = await start_ingest(store_settings)
    created = await ingest.create([image_file("p.png", DECLARED, "image/png")], upload="put")
    [upload] = created["uploads"]
    data = b"p" * DECLARED

    async def put(url: str, body: bytes) -> int:
        async with ingest.http.put(url, data=body, headers=upload["headers"]) as response:
            return response.status

    tampered = upload["url"].replace("X-Amz-Signature=", "X-Amz-Signature=0")[:-1]
    past = Presigner(store_settings, clock=lambda: datetime.now(timezone.utc) - timedelta(hours=2))
    expired = past.upload_put(upload["key"], content_type="image/png").url
    other_key = upload["url"].replace("/p.png?", "/q.png?")
    assert 400 <= await put(tampered, data) < 500
    assert 400 <= await put(expired, data) < 500
    assert 400 <= await put(other_key, data) < 500
    assert not exists(store_settings, upload["key"])
    async with work_queue_inbox(store_settings) as inbox:
        assert await put(upload["url"], data) == 200
        _, _, record = await next_record(inbox)
    assert (record.key, record.size, record.event_name) == (upload["key"], DECLARED, "s3:ObjectCreated:Put")


async def test_a_presigned_put_cannot_bound_the_size(store_settings: Settings, start_ingest: StartIngest) -> None:
    """Why POST is the default: a presigned PUT signs no length, so the store takes any size."""
    ingest = await start_ingest(store_settings)
    created = await ingest.create([image_file("big.jpg", 10)], upload="put")
    [upload] = created["uploads"]
    async with ingest.http.put(upload["url"], data=b"z" * 5000, headers=upload["headers"]) as response:
        assert response.status == 200
    stat = await asyncio.to_thread(minio_client(store_settings).stat_object, store_settings.s3_input_bucket, upload["key"])
    assert stat.size == 5000


async def test_result_links_download_under_the_result_name(store_settings: Settings, start_ingest: StartIngest) -> None:
    ingest = await start_ingest(store_settings)
    presigner = Presigner(store_settings)
    key = "01RESULTBATCH000000000000/ünï_photo.jpg"
    client = minio_client(store_settings)
    await asyncio.to_thread(put_bytes, client, store_settings.s3_output_bucket, key, b"result", "image/jpeg")
    url = presigner.download_url(store_settings.s3_output_bucket, key, "ünï_photo.jpg")
    async with ingest.http.get(url) as response:
        assert response.status == 200
        assert await response.read() == b"result"
        disposition = response.headers["Content-Disposition"]
    assert disposition == "attachment; filename=\"uni_photo.jpg\"; filename*=UTF-8''%C3%BCn%C3%AF_photo.jpg"
    async with ingest.http.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=f")[:-1]) as response:
        assert response.status == 403
