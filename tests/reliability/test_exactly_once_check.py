"""The exactly-once check itself can fail: a batch recorded straight through the repository, with
results written by hand, passes it, and each way of losing or doubling a result makes it fail.
Without this, a check that always passed would make every reliability test vacuous."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from minio import Minio

from db.records import ImageVersion
from db.repository import Repository
from harness.processor import image_bytes, put
from photoenhance.contracts.keys import output_key
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from tests.reliability.exactly_once import assert_exactly_once, image_name

pytestmark = [pytest.mark.objectstore, pytest.mark.reliability]

BATCH = "checked"
#: The check waits for the batch to complete; here it already is, so a failure must not wait long.
QUICK_S = 5


def _put_result(client: Minio, settings: Settings, name: str, source_etag: str) -> None:
    data = image_bytes(8, 8, seed=1)
    client.put_object(
        settings.s3_output_bucket, output_key(BATCH, name, "jpeg"), io.BytesIO(data), len(data),
        content_type="image/jpeg", metadata={"x-amz-meta-photoenhance-source-etag": source_etag},
    )


async def test_the_check_passes_a_clean_batch_and_fails_each_kind_of_damage(
    store_settings: Settings, repository: Repository
) -> None:
    settings = store_settings
    client = minio_client(settings)
    names = [image_name(i) for i in range(3)]
    await repository.create_batch(BATCH, input_bucket=settings.s3_input_bucket, options={}, expected_count=3)
    sources: dict[str, str] = {}
    for i, name in enumerate(names):
        etag = put(client, settings.s3_input_bucket, f"{BATCH}/{name}", image_bytes(8, 8, seed=i))
        sources[name] = etag
        registered = await repository.register_image(
            ImageVersion(settings.s3_input_bucket, BATCH, f"{BATCH}/{name}", name, etag, 1,
                         datetime(2026, 1, 1, tzinfo=UTC))
        )
        assert await repository.claim_image(registered.image.id, "hand", lease_seconds=60) is not None
        _put_result(client, settings, name, etag)
        assert await repository.complete_image(registered.image.id, "hand", output_key=output_key(BATCH, name, "jpeg"))

    await assert_exactly_once(repository, settings, BATCH, sources, timeout=QUICK_S)

    # A second result object for one input (a doubled result under another key).
    extra = f"{BATCH}/{names[0]}.jpg"
    client.put_object(settings.s3_output_bucket, extra, io.BytesIO(b"x"), 1)
    with pytest.raises(AssertionError, match="exactly one result object per input"):
        await assert_exactly_once(repository, settings, BATCH, sources, timeout=QUICK_S)
    client.remove_object(settings.s3_output_bucket, extra)

    # A lost result object.
    client.remove_object(settings.s3_output_bucket, output_key(BATCH, names[1], "jpeg"))
    with pytest.raises(AssertionError, match="exactly one result object per input"):
        await assert_exactly_once(repository, settings, BATCH, sources, timeout=QUICK_S)

    # A result made from another version of the input.
    _put_result(client, settings, names[1], "0" * 32)
    with pytest.raises(AssertionError, match="made from the uploaded version"):
        await assert_exactly_once(repository, settings, BATCH, sources, timeout=QUICK_S)
    _put_result(client, settings, names[1], sources[names[1]])
    await assert_exactly_once(repository, settings, BATCH, sources, timeout=QUICK_S)

    # An uploaded image the database never recorded (lost before it was processed).
    with pytest.raises(AssertionError, match="counters"):
        await assert_exactly_once(repository, settings, BATCH, {**sources, "lost.jpg": "1" * 32}, timeout=QUICK_S)
