"""``photoenhance init`` against the real store, broker and database: it builds everything from
nothing, a second run changes nothing and succeeds, and changed settings are applied."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from harness.objectstore import remove_bucket
from harness.services import delete_amqp_names, unique_name
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from provision.bootstrap import LIFECYCLE_RULE_ID
from tests.provision.test_bucket_notifications import next_record, put, work_queue_inbox

pytestmark = pytest.mark.objectstore


def init(settings: Settings) -> subprocess.CompletedProcess[str]:
    """Run ``photoenhance init`` in a new process with these settings."""
    return subprocess.run(
        [sys.executable, "-m", "photoenhance", "init"],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=300,
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def fresh(store_settings: Settings) -> Iterator[Settings]:
    """The test's store and database, with buckets and AMQP names that do not exist yet.

    The events exchange and routing key stay the store fixture's: RGW publishes to one exchange
    per broker for its whole life (see harness/objectstore.py).
    """
    tag = uuid.uuid4().hex[:10]
    name = unique_name("init")
    settings = store_settings.replace(
        s3_input_bucket=f"pe-init-{tag}-in",
        s3_output_bucket=f"pe-init-{tag}-out",
        amqp_work_queue=f"{name}.work",
        amqp_dead_letter_exchange=f"{name}.dead-letter",
        amqp_progress_exchange=f"{name}.progress",
        s3_lifecycle_days=7,
    )
    try:
        yield settings
    finally:
        client = minio_client(settings)
        for bucket in (settings.s3_input_bucket, settings.s3_output_bucket):
            remove_bucket(client, bucket)
        asyncio.run(delete_amqp_names(settings.replace(amqp_events_exchange=f"{name}.never-declared")))


def lifecycle_days(settings: Settings, bucket: str) -> int | None:
    config = minio_client(settings).get_bucket_lifecycle(bucket)
    ours = [r for r in (config.rules if config else []) if r.rule_id == LIFECYCLE_RULE_ID]
    assert len(ours) <= 1
    return ours[0].expiration.days if ours and ours[0].expiration else None


async def test_init_twice_the_second_run_changes_nothing(fresh: Settings) -> None:
    first = await asyncio.to_thread(init, fresh)
    assert first.returncode == 0, first.stderr
    out = lines(first)
    print("\nfirst run:\n  " + "\n  ".join(out))
    for expected in (
        f"created  bucket {fresh.s3_input_bucket}",
        f"created  bucket {fresh.s3_output_bucket}",
        f"created  lifecycle of {fresh.s3_input_bucket} (objects expire after 7 days)",
        f"created  lifecycle of {fresh.s3_output_bucket} (objects expire after 7 days)",
        f"created  queue {fresh.amqp_work_queue}",
        f"created  exchange {fresh.amqp_progress_exchange}",
    ):
        assert expected in out
    assert any(line.startswith("created  database schema") for line in out)
    assert any(line.startswith(f"created  notifications of {fresh.s3_input_bucket}") for line in out)
    assert out[-1].startswith("init: ") and out[-1] != "init: no changes"

    second = await asyncio.to_thread(init, fresh)
    assert second.returncode == 0, second.stderr
    out = lines(second)
    print("second run:\n  " + "\n  ".join(out))
    assert out[-1] == "init: no changes"
    assert all(line.startswith("unchanged") for line in out[:-1])
    assert len(out) == len(lines(first))

    # what init built works: an upload into the input bucket reaches the work queue
    assert lifecycle_days(fresh, fresh.s3_input_bucket) == lifecycle_days(fresh, fresh.s3_output_bucket) == 7
    async with work_queue_inbox(fresh) as inbox:
        await put(fresh, "initbatch/a.jpg", b"jpeg")
        _, _, record = await next_record(inbox)
    assert (record.bucket, record.key) == (fresh.s3_input_bucket, "initbatch/a.jpg")


async def test_init_applies_changed_lifecycle_settings(fresh: Settings) -> None:
    assert (await asyncio.to_thread(init, fresh)).returncode == 0
    three = fresh.replace(s3_lifecycle_days=3)
    out = lines(await asyncio.to_thread(init, three))
    assert f"updated  lifecycle of {fresh.s3_input_bucket} (objects expire after 3 days)" in out
    assert out[-1] == "init: 2 change(s)"
    assert lifecycle_days(fresh, fresh.s3_input_bucket) == 3
    forever = fresh.replace(s3_lifecycle_days=0)
    out = lines(await asyncio.to_thread(init, forever))
    assert f"removed  lifecycle of {fresh.s3_output_bucket} (expiry rule removed (S3_LIFECYCLE_DAYS=0))" in out
    assert lifecycle_days(fresh, fresh.s3_output_bucket) is None
    assert lines(await asyncio.to_thread(init, forever))[-1] == "init: no changes"


def test_init_names_the_failed_step(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = init(settings.replace(amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/"))
    assert result.returncode == 1
    assert "init failed: AMQP: cannot connect to the broker" in result.stderr
