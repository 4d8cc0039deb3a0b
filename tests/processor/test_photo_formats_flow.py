"""HEIC and AVIF photos through a plain S3 upload into the real store (Ceph RGW), its notifications,
RabbitMQ and a running worker: results are JPEG (output format ``auto``) with the EXIF carried and
sRGB embedded; the bad HEIC/AVIF inputs of issue 16 each end with a clear outcome and the worker
goes on. Inputs come from real encoders (harness/pictures.py).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageCms

from db.repository import Repository
from harness.pictures import avif_bytes, display_p3_icc, heic_bytes
from harness.processor import eventually, output_keys, put_async, running_worker
from photoenhance.contracts.states import ImageState
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings
from tests.processor.test_bad_input import check_worker_goes_on, image_state

pytestmark = pytest.mark.objectstore

FAST = {"photoenhance-quality": "fast"}


def photo(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 4 % 256, y * 5 % 256, (x + 2 * y) % 256], axis=2)
    return np.clip(base + rng.integers(-8, 8, base.shape), 0, 255).astype(np.uint8)


def camera_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010F] = "Apple"
    exif[0x0110] = "iPhone 15"
    exif.get_ifd(0x8769)[0x9003] = "2025:07:14 18:30:00"
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 30.0)})
    return exif.tobytes()


def truncated_heic() -> bytes:
    data = heic_bytes(photo(96, 128, seed=5))
    return data[: len(data) * 2 // 3]


def avif_claiming_60000_square() -> bytes:
    data = bytearray(avif_bytes(photo(), quality=50))
    at = data.index(b"ispe") + 8
    data[at:at + 8] = (60000).to_bytes(4, "big") * 2
    return bytes(data)


def heic_with_corrupt_profile() -> bytes:
    broken = bytearray(display_p3_icc())
    broken[128:] = b"\xff" * (len(broken) - 128)
    return heic_bytes(photo(seed=6), icc_profile=bytes(broken))


async def read_result(settings: Settings, key: str) -> tuple[bytes, dict[str, str]]:
    client = minio_client(settings)
    response = client.get_object(settings.s3_output_bucket, key)
    try:
        data = response.read()
    finally:
        response.close()
        response.release_conn()
    stat = client.stat_object(settings.s3_output_bucket, key)
    return data, {k.lower(): v for k, v in stat.metadata.items()}


async def test_heic_and_avif_uploads_become_jpeg_results_with_their_exif(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    batch_id = "heic-avif"
    inputs = {
        "IMG_0001.HEIC": heic_bytes(photo(seed=1), icc_profile=display_p3_icc(), exif=camera_exif()),
        "IMG_0002.avif": avif_bytes(photo(seed=2), icc_profile=display_p3_icc(), exif=camera_exif()),
    }
    async with running_worker(processor_settings, fast_engine):
        for name, data in inputs.items():
            await put_async(processor_settings, f"{batch_id}/{name}", data, FAST)
        images = {name: await eventually(lambda n=name: image_state(repository, batch_id, n), what=name)
                  for name in inputs}
    assert output_keys(processor_settings, f"{batch_id}/") == [f"{batch_id}/IMG_0001.jpg", f"{batch_id}/IMG_0002.jpg"]
    for name, image in images.items():
        assert image.state is ImageState.COMPLETED, image.reason
        assert image.report["source"]["format"] == ("heic" if name.endswith("HEIC") else "avif")
        assert image.report["source"]["colour_profile"] == "converted"
        data, meta = await read_result(processor_settings, image.output_key)
        result = Image.open(io.BytesIO(data))
        assert result.format == "JPEG" and result.size == (128, 96)
        exif = result.getexif()
        assert (exif[0x010F], exif[0x0110], exif[0x0112]) == ("Apple", "iPhone 15", 1)
        assert exif.get_ifd(0x8769)[0x9003] == "2025:07:14 18:30:00"
        assert 0x8825 not in exif, "GPS removed by default"
        # The photo holds colours outside sRGB: the result is in the input's Display P3, those kept.
        profile = ImageCms.ImageCmsProfile(io.BytesIO(result.info["icc_profile"]))
        assert ImageCms.getProfileDescription(profile).startswith("Display P3")
        assert image.report["source"]["result_profile"].startswith("the input's")
        # the result's user metadata still names its source and options, as before
        assert meta["x-amz-meta-photoenhance-source-etag"] == image.etag
        assert json.loads(meta["x-amz-meta-photoenhance-options"])["output_format"] == "auto"


BAD = {
    "truncated.heic": (truncated_heic, ImageState.FAILED, "corrupt_image"),
    "huge.avif": (avif_claiming_60000_square, ImageState.FAILED, "too_many_pixels"),
    "burst.heic": (lambda: heic_bytes([photo(seed=7), photo(seed=8), photo(seed=9)]), ImageState.COMPLETED, None),
    "badprofile.heic": (heic_with_corrupt_profile, ImageState.COMPLETED, None),
    "dot.avif": (lambda: avif_bytes(np.full((1, 1, 3), 90, np.uint8)), ImageState.COMPLETED, None),
}


async def test_bad_heic_and_avif_inputs_end_clearly_and_the_worker_goes_on(
    processor_settings: Settings, repository: Repository, fast_engine
) -> None:
    batch_id = "bad-heif"
    async with running_worker(processor_settings, fast_engine) as worker:
        for name, (make, _, _) in BAD.items():
            await put_async(processor_settings, f"{batch_id}/{name}", make(), FAST)
        found = {name: await eventually(lambda n=name: image_state(repository, batch_id, n), what=name)
                 for name in BAD}
        await check_worker_goes_on(processor_settings, repository, batch_id)
        assert worker.status()["ok"]
    for name, (_, state, code) in BAD.items():
        image = found[name]
        assert image.state is state, (name, image.reason)
        assert image.attempts == 1
        if code is not None:
            assert image.code == code and image.reason
    assert "HEIC" in found["truncated.heic"].reason
    assert "60000x60000" in found["huge.avif"].reason
    assert found["burst.heic"].report["source"]["images_in_file"] == 3
    assert found["badprofile.heic"].report["source"]["colour_profile"] == "ignored"
    assert found["dot.avif"].report["output"] == {"width": 2, "height": 2}
