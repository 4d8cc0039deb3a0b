"""Decompression bombs are refused from their headers, before any pixel is decoded.

The limit (``MAX_INPUT_PIXELS``, 50 MP by default) is checked against the dimensions the header
announces (processor/engine/imageio.py), and formats the engine does not decode are refused from
their signature (photoenhance/formats.py) before any parser opens them. "Before decoding" is
shown three ways: spies on every decoder (Pillow's ``load`` and OpenCV's ``imdecode``) see no
call, the peak memory of a fresh interpreter refusing every bomb does not grow, and a real worker
process handed the bombs through the bucket fails each with its code, keeps its peak memory and
goes on to the next photo.

zlib bombs behind small, honest headers are the other kind: what matters is that neither memory
nor CPU grows with what the data would inflate to. Pillow stops at the last row the header
announces; OpenCV (the 16-bit colour path) inflated everything, about 5 s of CPU per GB, which
is why the engine now measures the data first and refuses an overrun.

tests/processor/test_bad_input.py already runs a 30000x30000 PNG through an in-process worker;
this adds the other formats, the proofs above, and a worker process of its own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from db.repository import Repository
from harness.bombs import (
    HEADER_BOMBS,
    UNDECODED_BOMBS,
    ZLIB_BOMBS,
    jpeg_claiming,
    png,
    png_claiming,
    webp_lossy_claiming,
)
from harness.processor import (
    REPO,
    WorkerProcess,
    eventually,
    image_bytes,
    put_async,
)
from photoenhance.contracts.states import ImageState
from photoenhance.settings import Settings
from processor.engine import imageio
from processor.engine.errors import CorruptImage, TooManyPixels, UnsupportedImage
from processor.engine.imageio import decode_image

pytestmark = pytest.mark.security

#: The limit in force by default (MAX_INPUT_PIXELS).
MAX_PIXELS = Settings.from_env(environ={}).max_input_pixels

#: CPU seconds a bomb may cost to refuse; inflating one of these bombs takes ~5 s here.
CPU_BOUND_S = 1.0

#: Peak memory a refusal may add, in KiB. Decoding the smallest header bomb (60 MP RGB) would
#: take 176 MiB; the bombs themselves are built before the baseline.
PEAK_GROWTH_KIB = 32 * 1024

#: What each zlib bomb must end as: decoded to its small header's size, or refused as corrupt.
ZLIB_OUTCOMES = {
    "8-bit PNG 64x64, 1 GiB of IDAT": "decoded",  # Pillow reads the 64 rows and stops
    "16-bit PNG 64x64, 1 GiB of IDAT": "corrupt_image",  # the overrun is measured before OpenCV
    "PNG with a 1 GiB ICC profile": "corrupt_image",  # Pillow's cap on compressed chunks
    "PNG with a 1 GiB text chunk": "corrupt_image",
}

#: Per-image option: the test workers serve the fast level only.
FAST = {"photoenhance-quality": "fast"}


@pytest.fixture
def decoders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call into a pixel decoder during the test (spies that still decode)."""
    calls: list[str] = []
    pillow_load = ImageFile.ImageFile.load
    opencv_decode = imageio.cv2.imdecode

    def load(self: ImageFile.ImageFile) -> Any:
        calls.append(f"Pillow load ({self.format})")
        return pillow_load(self)

    def imdecode(*args: Any) -> Any:
        calls.append("cv2.imdecode")
        return opencv_decode(*args)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    monkeypatch.setattr(imageio.cv2, "imdecode", imdecode)
    return calls


@pytest.mark.parametrize("name", list(HEADER_BOMBS))
def test_header_bombs_are_refused_before_any_pixel_is_decoded(name: str, decoders: list[str]) -> None:
    data = HEADER_BOMBS[name]
    assert len(data) < 1024
    with pytest.raises(TooManyPixels) as refused:
        decode_image(data, max_pixels=MAX_PIXELS)
    assert refused.value.code == "too_many_pixels"
    assert decoders == []


@pytest.mark.parametrize("name", list(UNDECODED_BOMBS))
def test_formats_not_decoded_are_refused_before_any_parser_opens_them(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened.append(args))
    with pytest.raises(UnsupportedImage) as refused:
        decode_image(UNDECODED_BOMBS[name], max_pixels=MAX_PIXELS)
    assert refused.value.code == "unsupported_format"
    assert opened == []


@pytest.mark.parametrize("name", list(ZLIB_BOMBS))
def test_zlib_bombs_cost_only_what_the_header_announces(name: str, decoders: list[str]) -> None:
    started = time.process_time()
    try:
        decoded = decode_image(ZLIB_BOMBS[name], max_pixels=MAX_PIXELS)
        outcome = "decoded"
        assert (decoded.width, decoded.height) == (64, 64)
    except CorruptImage as exc:
        outcome = exc.code
    cpu = time.process_time() - started
    assert outcome == ZLIB_OUTCOMES[name]
    assert cpu < CPU_BOUND_S, f"{cpu:.2f} s of CPU"
    assert "cv2.imdecode" not in decoders


@pytest.mark.parametrize(("width", "height", "channels"), [(13, 7, 3), (1, 1, 3), (9, 3, 4), (16, 16, 4)])
@pytest.mark.parametrize("interlace", [0, 1])
def test_sixteen_bit_pngs_holding_exactly_their_rows_still_decode(
    width: int, height: int, channels: int, interlace: int
) -> None:
    """The overrun check counts rows as the format does (filter bytes, Adam7 passes, empty passes)."""
    pixels = np.random.default_rng(width * height).integers(0, 65536, (height, width, channels), dtype=np.uint16)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    rows = b"".join(
        b"\x00" + row.astype(">u2").tobytes()  # filter "none", samples big-endian
        for x0, y0, dx, dy in (passes if interlace else [(0, 0, 1, 1)])
        for row in pixels[y0::dy, x0::dx]
        if row.size
    )
    data = png(width, height, zlib.compress(rows), depth=16, colour=6 if channels == 4 else 2, interlace=interlace)
    decoded = decode_image(data, max_pixels=MAX_PIXELS)
    assert decoded.bit_depth == 16
    np.testing.assert_array_equal(decoded.pixels, pixels)


#: Run in a fresh interpreter: its peak memory is its own, not the test run's high-water mark.
PROBE = """
import json, resource, sys
from processor.engine.imageio import decode_image
from harness.bombs import HEADER_BOMBS, UNDECODED_BOMBS, ZLIB_BOMBS
from harness.processor import image_bytes

for fmt in ("JPEG", "PNG", "WEBP"):  # first decodes load codecs and tables: keep them out of the count
    decode_image(image_bytes(32, 24, fmt=fmt), max_pixels=int(sys.argv[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcomes = {}
for name, data in {**HEADER_BOMBS, **UNDECODED_BOMBS, **ZLIB_BOMBS}.items():
    try:
        decode_image(data, max_pixels=int(sys.argv[1]))
        outcomes[name] = "decoded"
    except Exception as exc:
        outcomes[name] = getattr(exc, "code", type(exc).__name__)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"outcomes": outcomes, "grew_kib": grew}))
"""


def test_peak_memory_stays_flat_while_every_bomb_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(MAX_PIXELS)], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {
        **{name: "too_many_pixels" for name in HEADER_BOMBS},
        **{name: "unsupported_format" for name in UNDECODED_BOMBS},
        **ZLIB_OUTCOMES,
    }
    assert report["outcomes"] == expected
    assert report["grew_kib"] < PEAK_GROWTH_KIB, f"peak memory grew by {report['grew_kib']} KiB"


# -- end to end ------------------------------------------------------------------------------------
#: Uploaded into one batch: name -> (file, the failure code it must end with).
BUCKET_BOMBS: dict[str, tuple[bytes, str]] = {
    "jpeg-60mp.jpg": (jpeg_claiming(10_000, 6_000), "too_many_pixels"),
    "jpeg-65000.jpg": (jpeg_claiming(65_000, 65_000), "too_many_pixels"),
    "webp-16383.webp": (webp_lossy_claiming(16_383, 16_383), "too_many_pixels"),
    "png-65000.png": (png_claiming(65_000, 65_000), "too_many_pixels"),
    "png16-zlib-bomb.png": (ZLIB_BOMBS["16-bit PNG 64x64, 1 GiB of IDAT"], "corrupt_image"),
    "gif-65000.gif": (UNDECODED_BOMBS["GIF 65000x65000"], "unsupported_format"),
}


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for process {pid}")


@pytest.mark.objectstore
async def test_bombs_in_the_bucket_fail_with_their_code_and_the_worker_process_goes_on(
    processor_settings: Settings, repository: Repository, worker_processes: Callable[..., WorkerProcess]
) -> None:
    settings = processor_settings
    worker = worker_processes(settings, "bomb-worker")
    await asyncio.to_thread(worker.wait_healthy)
    batch_id = "bombs"

    async def final(name: str) -> Any:
        snapshot = await repository.batch_snapshot(batch_id)
        found = [i for i in snapshot.images if i.name == name and i.state.is_final] if snapshot else []
        return found[0] if found else None

    # A photo first, so the worker's first-use allocations are behind the baseline.
    await put_async(settings, f"{batch_id}/before.jpg", image_bytes(seed=1), FAST)
    assert (await eventually(lambda: final("before.jpg"), what="the first photo")).state is ImageState.COMPLETED
    baseline = peak_rss_kib(worker.process.pid)

    for name, (data, _) in BUCKET_BOMBS.items():
        await put_async(settings, f"{batch_id}/{name}", data, FAST)
    for name, (_, code) in BUCKET_BOMBS.items():
        image = await eventually(lambda name=name: final(name), what=f"{name} to be final")
        assert (image.state, image.code, image.attempts) == (ImageState.FAILED, code, 1), image.reason
    await put_async(settings, f"{batch_id}/after.jpg", image_bytes(seed=2), FAST)
    assert (await eventually(lambda: final("after.jpg"), what="the next photo")).state is ImageState.COMPLETED

    grew = peak_rss_kib(worker.process.pid) - baseline
    assert grew < PEAK_GROWTH_KIB, f"the worker's peak memory grew by {grew} KiB:\n{worker.log()}"
    assert (worker.health() or {}).get("ok"), worker.log()
    metrics = worker.metrics()
    assert 'photoenhance_images_failed_total{code="too_many_pixels"} 4.0' in metrics
