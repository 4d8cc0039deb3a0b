"""``photoenhance enhance`` as a person runs it: a real process against the whole pipeline.

ingest, the notifier and a ``fast`` processor run as processes (harness/stack.py) over Ceph
RGW, RabbitMQ and the test's database; the CLI is started with the test's settings. Progress is
awaited through the CLI's own state file and output, never through fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from client.state import STATE_FILE
from db.repository import Repository
from harness.processor import REPO, WAIT_S, batch_completed, image_bytes
from harness.stack import Stack, StartStack
from photoenhance.s3 import minio_client
from photoenhance.settings import Settings

pytestmark = pytest.mark.objectstore

API_KEY = "cli-test-api-key"


def photo_folder(folder: Path, good: int) -> dict[str, tuple[int, int]]:
    """``good`` small photos plus three bad files; returns each good photo's size."""
    folder.mkdir()
    sizes = {}
    for i in range(good):
        fmt, ext = ("PNG", "png") if i % 4 == 0 else ("JPEG", "jpg")
        width, height = 64 + 2 * i, 48 + i
        (folder / f"photo {i + 1:02d}.{ext}").write_bytes(image_bytes(width, height, seed=i, fmt=fmt))
        sizes[f"photo {i + 1:02d}.{ext}"] = (width, height)
    whole = image_bytes(96, 72, seed=99)
    (folder / "damaged.jpg").write_bytes(whole[: len(whole) // 2])  # fails in the processor
    (folder / "notes.jpg").write_text("not a photo, whatever the name says\n")  # refused by the CLI
    (folder / "empty.png").write_bytes(b"")  # refused by the CLI
    return sizes


def cli_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}


def cli_args(stack: Stack, *args: str) -> list[str]:
    return [sys.executable, "-m", "photoenhance", "enhance", *args, "--server", stack.ingest_url, "--json"]


@contextlib.contextmanager
def started_cli(stack: Stack, *args: str) -> Iterator[subprocess.Popen[str]]:
    """The CLI running in the background; killed at the end of the block if still running."""
    process = subprocess.Popen(cli_args(stack, *args), env=cli_env(stack.settings), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def run_cli(stack: Stack, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run to the end; returns (exit status, JSON summary, what it said on stderr)."""
    done = subprocess.run(cli_args(stack, *args), env=cli_env(stack.settings), cwd=REPO,
                          capture_output=True, text=True, timeout=WAIT_S * 2)
    try:
        summary = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"no JSON summary (exit {done.returncode}):\n{done.stdout}\n{done.stderr}\n{stack.logs()}") from None
    return done.returncode, summary, done.stderr


def wait_for(check: Any, what: str, process: subprocess.Popen[str] | None = None) -> Any:
    """Poll ``check`` until truthy (bounded by WAIT_S); fail early when ``process`` exits."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = check()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the CLI exited ({process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def progress_of(out: Path) -> dict[str, str]:
    """Source path -> progress, from the CLI's state file ({} before it exists)."""
    try:
        doc = json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {f["source"]: f["progress"] for f in doc["files"].values()}


def notifier_metric(stack: Stack, sample: str) -> float:
    """One sample of the notifier's /metrics (0 when absent)."""
    import urllib.request

    with urllib.request.urlopen(stack.notifier_metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
    return 0.0


def by_path(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(f["path"]).name: f for f in summary["files"]}


def input_objects(settings: Settings) -> dict[str, Any]:
    """Key -> (etag, last modified) of everything in the input bucket."""
    client = minio_client(settings)
    return {o.object_name: (o.etag, o.last_modified) for o in client.list_objects(settings.s3_input_bucket, recursive=True)}


async def test_twenty_photos_three_bad_interrupted_and_run_again(start_stack: StartStack, tmp_path: Path) -> None:
    stack = await start_stack(processor=False)  # uploads land, nothing finishes until the worker starts
    folder, out = tmp_path / "photos", tmp_path / "enhanced"
    sizes = photo_folder(folder, good=17)

    # first run: uploads everything, then waits for results; interrupted while waiting
    with started_cli(stack, str(folder), "--out", str(out), "--quality", "fast") as first:
        wait_for(lambda: sorted(progress_of(out).values()) == ["uploaded"] * 18, "all 18 uploads", first)
        first.send_signal(signal.SIGINT)
        _, said = first.communicate(timeout=60)
    assert first.returncode == 130, said
    assert "interrupted; run the same command again to continue" in said
    assert "refused  " in said and "notes.jpg: the data is not a JPEG, PNG, WebP, HEIC or AVIF image" in said
    assert "empty.png: the file is empty (0 bytes)" in said
    uploaded_once = input_objects(stack.settings)
    assert len(uploaded_once) == 18

    # second run, with a worker: nothing is uploaded again, every result is downloaded
    stack.start_processor()
    status, summary, said = run_cli(stack, str(folder), "--out", str(out), "--quality", "fast")
    files = by_path(summary)
    assert status == 1, said  # some failed
    assert summary["counts"] == {
        "files": 20, "completed": 17, "failed": 1, "refused": 2, "skipped": 0, "uploaded": 0, "downloaded": 17,
    }
    assert files["damaged.jpg"]["state"] == "failed"
    assert files["damaged.jpg"]["reason"].startswith("the JPEG data is")
    assert (files["notes.jpg"]["state"], files["empty.png"]["state"]) == ("refused", "refused")
    assert input_objects(stack.settings) == uploaded_once  # same objects, not one rewritten
    for name, (width, height) in sizes.items():
        result = Path(files[name]["result"])
        # output format auto (the default): PNG stays PNG, JPEG stays JPEG
        assert result.parent == out and result.suffix == Path(name).suffix
        assert Image.open(result).format == {".png": "PNG", ".jpg": "JPEG"}[result.suffix]
        assert Image.open(result).size == (2 * width, 2 * height)
    assert len(summary["batches"]) == 1

    # third run after one result was deleted: only that one is fetched again
    lost = Path(files["photo 06.jpg"]["result"])
    kept = Path(files["photo 07.jpg"]["result"]).stat().st_mtime_ns
    lost.unlink()
    status, summary, said = run_cli(stack, str(folder), "--out", str(out), "--quality", "fast")
    assert status == 1
    counts = summary["counts"]
    assert (counts["skipped"], counts["uploaded"], counts["downloaded"], counts["failed"]) == (16, 0, 1, 1)
    assert by_path(summary)["photo 06.jpg"]["downloaded"] and lost.exists()
    assert Path(files["photo 07.jpg"]["result"]).stat().st_mtime_ns == kept
    assert "(known from an earlier run)" in said  # the failure is reported, not redone


async def test_servers_restarting_mid_batch_lose_nothing(
    start_stack: StartStack, repository: Repository, tmp_path: Path
) -> None:
    """ingest and the notifier go down while the CLI waits; it reconnects with since, downloads all."""
    stack = await start_stack(processor=False)
    folder, out = tmp_path / "photos", tmp_path / "enhanced"
    folder.mkdir()
    for i in range(5):
        (folder / f"p{i}.jpg").write_bytes(image_bytes(64, 48, seed=i))
    (folder / 'say "cheese".jpg').write_bytes(image_bytes(80, 60, seed=7))  # a name the API refuses as is
    with started_cli(stack, str(folder), "--out", str(out), "--quality", "fast") as cli:
        wait_for(lambda: sorted(progress_of(out).values()) == ["uploaded"] * 6, "all uploads", cli)
        wait_for(lambda: notifier_metric(stack, 'notifier_connections{transport="ws"}') == 1, "the CLI's stream", cli)
        stack.notifier.stop()
        stack.ingest.stop()
        stack.start_processor()  # results are made while the CLI cannot hear about them
        (batch_id,) = json.loads((out / STATE_FILE).read_text())["batches"]
        await batch_completed(repository, batch_id)
        stack.notifier.start()
        # the CLI comes back to the restarted notifier with since=<last seq>, not for a fresh snapshot
        wait_for(lambda: notifier_metric(stack, 'notifier_replays_total{mode="since",transport="ws"}') == 1,
                 "the CLI to resume its stream", cli)
        assert notifier_metric(stack, 'notifier_replays_total{mode="snapshot",transport="ws"}') == 0
        stack.ingest.start()  # result links come from the API
        stdout, said = cli.communicate(timeout=WAIT_S)
        assert cli.returncode == 0, said + stack.logs()
    summary = json.loads(stdout)
    assert summary["counts"]["completed"] == 6 and summary["counts"]["uploaded"] == 6
    assert "connection lost, reconnecting" in said and "reconnected, resuming after event 0" in said
    assert Image.open(out / 'say "cheese".jpg').size == (160, 120)


async def test_direct_upload_with_s3_credentials_and_an_api_key(start_stack: StartStack, tmp_path: Path) -> None:
    stack = await start_stack(api_keys=(API_KEY,))
    folder, out = tmp_path / "photos", tmp_path / "enhanced"
    folder.mkdir()
    for i in range(3):
        (folder / f"d{i}.jpg").write_bytes(image_bytes(40 + i, 30, seed=i))
    whole = image_bytes(64, 48, seed=5)
    (folder / "broken.jpg").write_bytes(whole[: len(whole) // 2])

    status, summary, said = run_cli(stack, str(folder), "--out", str(out), "--quality", "fast", "--upscale", "3",
                                    "--direct", "--api-key", API_KEY)
    assert status == 1, said
    assert summary["mode"] == "direct" and summary["counts"]["completed"] == 3 and summary["counts"]["failed"] == 1
    assert Image.open(out / "d1.jpg").size == (123, 90)
    (batch_id,) = summary["batches"]
    keys = sorted(input_objects(stack.settings))
    assert keys == sorted(f"{batch_id}/{n}" for n in ["_batch.json", "broken.jpg", "d0.jpg", "d1.jpg", "d2.jpg"])
    seen = stack.api(f"/api/v1/batches/{batch_id}", token=API_KEY)
    assert (seen["source"], seen["state"], seen["counts"]["expected"]) == ("direct", "completed", 4)

    again, summary, _ = run_cli(stack, str(folder), "--out", str(out), "--quality", "fast", "--upscale", "3",
                                "--direct", "--api-key", API_KEY)
    assert again == 1 and summary["counts"]["skipped"] == 3 and summary["counts"]["uploaded"] == 0


async def test_the_estimate_before_uploading_and_waiting_for_a_worker_of_the_level(
    start_stack: StartStack, tmp_path: Path
) -> None:
    """Only a fast worker runs; the deployment declares best (FLEET_LEVELS). At fast the CLI prints,
    before uploading, no estimate until the worker has measured itself, then its measured speed times
    the photos' megapixels; at best it says it has no estimate and then "waiting for a worker that
    serves best" for each photo."""
    import re

    from client.estimate import format_duration

    stack = await start_stack(fleet_levels=("best",))
    folder = tmp_path / "photos"
    folder.mkdir()
    sizes = [(320, 240), (200, 150), (64, 48)]
    for i, (w, h) in enumerate(sizes):
        (folder / f"p{i}.jpg").write_bytes(image_bytes(w, h, seed=i))
    total_mp = sum(w * h for w, h in sizes) / 1_000_000

    # The worker measures its speed on the images it processes: none yet, so no estimate.
    status, summary, said = run_cli(stack, str(folder), "--out", str(tmp_path / "first"), "--quality", "fast")
    assert status == 0 and summary["counts"]["completed"] == 3, said
    assert "estimate at fast: unknown for 3 photos" in said and "has measured its speed yet" in said

    def measured() -> float | None:
        [fast] = [lv for lv in stack.api("/api/v1/capabilities")["levels"] if lv["level"] == "fast"]
        return fast["seconds_per_megapixel"]

    wait_for(measured, "the fast worker's speed in the capabilities (next heartbeat)")
    status, summary, said = run_cli(stack, str(folder), "--out", str(tmp_path / "fast"), "--quality", "fast")
    assert status == 0 and summary["counts"]["completed"] == 3, said
    line = next((x for x in said.splitlines() if x.startswith("estimate at fast:")), None)
    assert line is not None, said
    found = re.fullmatch(r"estimate at fast: (.+) for 3 photos, ([0-9.]+) megapixels \(([0-9.e+-]+) s per megapixel\)", line)
    assert found, line
    assert found[2] == f"{total_mp:.2f}"
    speed = float(found[3])
    assert speed > 0 and found[1] == format_duration(speed * total_mp)

    errors = tmp_path / "best.err"
    args = cli_args(stack, str(folder), "--out", str(tmp_path / "best"), "--quality", "best")
    with open(errors, "w") as sink:
        process = subprocess.Popen(args, env=cli_env(stack.settings), cwd=REPO, stdout=subprocess.PIPE, stderr=sink,
                                   text=True)
        try:
            def all_waiting() -> bool:
                text = errors.read_text()
                return all(f"p{i}.jpg: waiting for a worker that serves best" in text for i in range(3))

            wait_for(all_waiting, "the CLI to say each photo waits for a best worker", process)
        finally:
            process.kill()
            process.communicate(timeout=30)
    text = errors.read_text()
    assert "estimate at best: unknown for 3 photos" in text and "no worker serving it is running now" in text
    assert text.index("estimate at best") < text.index("waiting for a worker")


def test_unusable_requests_exit_2_and_say_why(settings: Settings, tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(image_bytes(32, 32))
    env = {**os.environ, **settings.replace(api_keys=()).to_env()}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "photoenhance", "enhance", *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = run(str(photo), "--out", str(tmp_path / "o1"), "--server", closed)
    assert down.returncode == 2 and f"cannot reach the PhotoEnhance server at {closed}" in down.stderr

    direct = run(str(photo), "--out", str(tmp_path / "o2"), "--direct", "--server", closed)
    assert direct.returncode == 2 and "--direct follows progress with an API key" in direct.stderr

    bad = run(str(photo), "--out", str(tmp_path / "o3"), "--upscale", "9")
    assert bad.returncode == 2 and "upscale must be between 1 and 4" in bad.stderr

    (tmp_path / "o4").mkdir()
    state = {"version": 1, "options": {"quality": "best", "upscale": 4.0}, "batches": {}, "files": {}}
    (tmp_path / "o4" / STATE_FILE).write_text(json.dumps(state))
    other = run(str(photo), "--out", str(tmp_path / "o4"), "--quality", "fast", "--server", closed)
    assert other.returncode == 2 and "holds results made with other options" in other.stderr

    missing = run(str(tmp_path / "nowhere.jpg"), "--out", str(tmp_path / "o5"), "--server", closed, "--json")
    assert missing.returncode == 1, missing.stderr
    assert json.loads(missing.stdout)["files"][0] == {
        "path": str(tmp_path / "nowhere.jpg"), "state": "refused", "result": None,
        "reason": "no such file or folder", "code": "missing", "batch_id": None,
        "skipped": False, "uploaded": False, "downloaded": False,
    }
