"""Pure parts of the processor: failure policy, manifests, result keys, micro-batching."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from minio.error import S3Error
from sqlalchemy.exc import OperationalError

from photoenhance.contracts.options import EnhanceOptions, OptionsError, OutputFormat, Quality
from processor.engine.errors import CorruptImage, TooManyPixels
from processor.failures import PermanentFailure, RetryPolicy, Verdict, classify
from processor.manifest import Manifest, ManifestError, parse_manifest
from processor.microbatch import MicroBatcher
from processor.pipeline import result_key_candidates


def s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message", "/b/k", "req", "host")


@pytest.mark.parametrize(
    ("exc", "verdict", "code"),
    [
        (CorruptImage("cut short"), Verdict.PERMANENT, "corrupt_image"),
        (TooManyPixels("big"), Verdict.PERMANENT, "too_many_pixels"),
        (PermanentFailure("too_large", "big"), Verdict.PERMANENT, "too_large"),
        (OptionsError("upscale must be between 1 and 4"), Verdict.PERMANENT, "bad_options"),
        (s3_error("NoSuchKey"), Verdict.PERMANENT, "source_missing"),
        (s3_error("PreconditionFailed"), Verdict.PERMANENT, "source_replaced"),
        (s3_error("SlowDown"), Verdict.TRANSIENT, "storage_unavailable"),
        (OperationalError("SELECT 1", {}, Exception("connection refused")), Verdict.TRANSIENT, "database_unavailable"),
        (ConnectionResetError("reset"), Verdict.TRANSIENT, "io_error"),
        (KeyError("bug"), Verdict.TRANSIENT, "internal_error"),
    ],
)
def test_classify(exc: Exception, verdict: Verdict, code: str) -> None:
    failure = classify(exc)
    assert (failure.verdict, failure.code) == (verdict, code)
    assert failure.reason
    # Only unexpected errors spend an image's attempts; a service's outage is waited out.
    assert failure.outage is (verdict is Verdict.TRANSIENT and code != "internal_error")


def test_retry_policy_backs_off_exponentially_and_gives_up() -> None:
    policy = RetryPolicy(base_delay_ms=100, max_delay_ms=1000, max_attempts=3)
    assert [policy.delay_ms(n) for n in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]
    assert policy.delays() == [100, 200, 400, 800, 1000]
    assert not policy.exhausted(2) and policy.exhausted(3)


def test_manifest_reads_count_and_options() -> None:
    manifest = parse_manifest(b'{"expected_count": 3, "options": {"quality": "fast", "output_format": "png"}}')
    assert manifest.expected_count == 3
    assert manifest.options == EnhanceOptions.from_dict({"quality": "fast", "output_format": "png"}).to_dict()
    assert parse_manifest(b"{}") == Manifest()


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"expected_count": -1}', b'{"expected_count": true}', b'{"count": 3}',
     b'{"options": {"upscale": 9}}', b"{" + b" " * 70_000 + b"}",
     # issue 17: JSON numbers only, a bounded tile, and no parser error escaping as something else
     b'{"options": {"upscale": "4"}}', b'{"options": {"tile": 1000000000000000000000000000000}}',
     b'{"expected_count": 1' + b"0" * 5000 + b"}", b'{"options": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"],
)
def test_manifest_refuses_what_it_cannot_use(body: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(body)


def test_result_keys_prefer_the_contract_then_keep_the_source_extension() -> None:
    jpeg = EnhanceOptions(output_format=OutputFormat.JPEG)
    assert result_key_candidates("b", "a.png", jpeg) == ["b/a.jpg", "b/a.png.jpg"]
    assert result_key_candidates("b", "dir/x y.webp", jpeg) == ["b/dir/x y.jpg", "b/dir/x y.webp.jpg"]
    assert result_key_candidates("b", "noext", jpeg) == ["b/noext.jpg"]


async def test_microbatcher_groups_what_arrives_within_the_window() -> None:
    seen: list[list[int]] = []

    async def run(batch: list[int]) -> list[int]:
        seen.append(batch)
        await asyncio.sleep(0.05)
        return [x * 10 for x in batch]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_images=3, window_ms=200)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(7)))
    await batcher.close()
    assert results == [i * 10 for i in range(7)]
    assert [len(b) for b in seen] == [3, 3, 1]
    assert sorted(x for b in seen for x in b) == list(range(7))


async def test_microbatcher_does_not_wait_past_its_window() -> None:
    sizes: list[int] = []

    async def run(batch: list[str]) -> list[str]:
        return batch

    batcher: MicroBatcher[str, str] = MicroBatcher(run, max_images=4, window_ms=10, on_batch=sizes.append)
    assert await batcher.submit("alone") == "alone"
    await asyncio.sleep(0.05)
    assert await batcher.submit("later") == "later"
    await batcher.close()
    assert sizes == [1, 1]


async def test_microbatcher_opens_no_window_for_a_request_that_gains_nothing_from_company() -> None:
    """A ``fast`` image runs at once; a network-level image still waits its window for company.
    The window is 30 s: a request that waited for it would hit the 10 s bound."""
    sizes: list[int] = []

    async def run(batch: list[str]) -> list[str]:
        return batch

    batcher: MicroBatcher[str, str] = MicroBatcher(
        run, max_images=2, window_ms=30_000, on_batch=sizes.append, wants_company=lambda r: r != "fast"
    )
    assert await asyncio.wait_for(batcher.submit("fast"), 10) == "fast"
    first = asyncio.create_task(batcher.submit("best-1"))
    await asyncio.sleep(0.2)
    assert not first.done(), "a network-level request waits for company"
    assert await asyncio.wait_for(batcher.submit("best-2"), 10) == "best-2"
    assert await first == "best-1"
    await batcher.close()
    assert sizes == [1, 2]


def test_only_the_network_levels_gain_from_micro_batching() -> None:
    from processor.engine.imageio import DecodedImage
    from processor.engine.records import EnhanceRequest, gains_from_batching

    image = DecodedImage(np.zeros((4, 4, 3), np.uint8), "jpeg", width=4, height=4, has_alpha=False, bit_depth=8)
    gains = {q: gains_from_batching(EnhanceRequest(image, EnhanceOptions(quality=q))) for q in Quality}
    assert gains == {Quality.FAST: False, Quality.BALANCED: True, Quality.BEST: True}


async def test_microbatcher_failure_reaches_every_caller_and_it_goes_on() -> None:
    calls = 0

    async def run(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("engine broke")
        return batch

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_images=2, window_ms=50)
    outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert await batcher.submit(3) == 3
    await batcher.close()
