"""The CLI's estimate: sizes read from real files' headers, durations in words."""

from __future__ import annotations

from pathlib import Path

from client.estimate import describe, format_duration, megapixels, seconds_for
from harness.processor import image_bytes


def test_megapixels_come_from_the_headers_and_unreadable_files_count_as_none(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(image_bytes(400, 250, seed=1))
    (tmp_path / "b.png").write_bytes(image_bytes(100, 100, seed=2, fmt="PNG"))
    (tmp_path / "c.jpg").write_text("not a photo")
    sizes = [megapixels(tmp_path / n) for n in ("a.jpg", "b.png", "c.jpg")]
    assert sizes == [0.1, 0.01, None]
    assert seconds_for(20.0, sizes) == 20.0 * 0.11
    assert seconds_for(None, sizes) is None


def test_durations_and_the_sentence() -> None:
    assert [format_duration(s) for s in (0.4, 42.4, 180, 4800, 6000)] == [
        "under a second", "about 42 s", "about 3 min", "about 80 min", "about 1 h 40 min"
    ]
    entry = {"level": "balanced", "workers": 1, "seconds_per_megapixel": 30.0}
    assert describe("balanced", entry, [2.0, None]) == (
        "estimate at balanced: about 60 s for 2 photos, 2.00 megapixels (30 s per megapixel)"
    )
    assert describe("best", {"level": "best", "workers": 0, "seconds_per_megapixel": None}, [1.0]) == (
        "estimate at best: unknown for 1 photo, 1.00 megapixels (no worker serving it is running now)"
    )


def test_the_images_bar_is_described_by_the_level_and_its_estimate(tmp_path: Path) -> None:
    from client.enhance import Enhancer, Item, Job
    from client.inputs import LocalFile
    from client.report import Reporter
    from photoenhance.settings import Settings

    photo = tmp_path / "a.jpg"
    photo.write_bytes(image_bytes(1000, 600, seed=3))
    caps = {"levels": [{"level": "fast", "workers": 1, "seconds_per_megapixel": 100.0}]}
    job = Job(paths=[str(photo)], out=tmp_path / "out", options={"quality": "fast"}, server="http://unused",
              capabilities=caps)
    reporter = Reporter(json_mode=True, bars=True)
    enhancer = Enhancer(job, Settings(), reporter)
    enhancer.items = [Item(str(photo), local=LocalFile(photo, "a.jpg", photo.stat().st_size, "0" * 64, "image/jpeg"))]
    label = enhancer._estimate_label()
    assert label == "images (fast, about 60 s)"  # 0.6 megapixels x 100 s
    reporter.start(upload_bytes=1, images=1, done=0, label=label)
    try:
        assert reporter.images is not None and reporter.images.desc == label
    finally:
        reporter.close()
