"""The engine in its own process: the frame contract, the engine server and the worker's client
over a real Unix socket, a server that goes away, hostile frames, and workers feeding one engine
process through the whole pipeline (real RGW, RabbitMQ and database)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from db.repository import Repository
from harness.processor import REPO, eventually, image_bytes, put_async, running_worker
from photoenhance.contracts.failures import FailureCode, QualityNotLoaded, TooManyPixels
from photoenhance.contracts.options import EnhanceOptions, Quality
from photoenhance.contracts.states import ImageState
from photoenhance.settings import Settings
from processor.engine import Engine
from processor.engine.errors import ImageError
from processor.engine.imageio import DecodedImage
from processor.engine.records import EnhanceRequest, EnhanceResult
from processor.engine.resize import lanczos_resize
from processor.engine_service.client import RemoteEngine, VersionMismatch
from processor.engine_service.server import EngineServer
from processor.engine_service.wire import (
    PREFIX,
    EngineUnavailable,
    FrameError,
    Hello,
    encode_frame,
    outcome_from,
    read_frame,
    request_frame,
    request_from,
    result_frame,
)
from processor.failures import classify

FAST = EnhanceOptions(quality=Quality.FAST, upscale=2.0)


def _image(height: int = 20, width: int = 30, channels: int = 3, dtype: type = np.uint8) -> DecodedImage:
    top = 65535 if dtype == np.uint16 else 255
    pixels = np.random.default_rng(height * width).integers(0, top + 1, (height, width, channels)).astype(dtype)
    return DecodedImage(pixels, "png", width, height, channels == 4, 16 if dtype == np.uint16 else 8,
                        notes={"colour_profile": "none"})


# -- the frames, without a socket ------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "dtype"), [(1, np.uint8), (3, np.uint8), (4, np.uint16)])
def test_a_request_comes_out_as_it_went_in(channels: int, dtype: type) -> None:
    image = _image(channels=channels, dtype=dtype)
    faces = [np.arange(10, dtype=np.float32).reshape(5, 2)]
    header, payload = request_frame(7, EnhanceRequest(image, FAST, faces=faces))
    again = request_from(header, bytes(payload))
    np.testing.assert_array_equal(again.image.pixels, image.pixels)
    assert again.image.pixels.dtype == dtype and again.image.pixels.flags.writeable
    assert (again.image.width, again.image.height, again.image.bit_depth, again.image.has_alpha) == (
        image.width, image.height, image.bit_depth, image.has_alpha)
    assert again.image.notes == image.notes and again.options == FAST
    np.testing.assert_array_equal(again.faces[0], faces[0])


def test_a_result_and_each_error_class_come_back_as_they_were() -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    header, payload = result_frame(1, EnhanceResult(pixels, {"quality": "fast"}))
    back = outcome_from(header, bytes(payload))
    assert isinstance(back, EnhanceResult) and back.report == {"quality": "fast"}
    np.testing.assert_array_equal(back.pixels, pixels)
    for error in (QualityNotLoaded("not here"), TooManyPixels("too many"), ImageError("odd", code="some_new_code")):
        header, payload = result_frame(2, error)
        back = outcome_from(header, bytes(payload))
        assert type(back) is type(error) and (back.code, back.reason) == (error.code, error.reason)


@pytest.mark.parametrize(
    ("image", "payload_len", "why"),
    [
        ({"shape": [2, 3, 3], "dtype": "float64"}, 18, "uint8 or uint16"),
        ({"shape": [2, 3, 2], "dtype": "uint8"}, 12, "channels"),
        ({"shape": [2, -3, 3], "dtype": "uint8"}, 18, "shape"),
        ({"shape": [2, 3, 3], "dtype": "uint8"}, 17, "17 bytes"),
        ({"shape": "big", "dtype": "uint8"}, 18, "shape"),
    ],
)
def test_a_request_that_breaks_the_contract_is_refused_with_the_reason(image: dict, payload_len: int, why: str) -> None:
    header = {"id": 1, "options": FAST.to_dict(), "image": {**image, "source_format": "png", "width": 3,
                                                             "height": 2, "has_alpha": False, "bit_depth": 8}}
    with pytest.raises(FrameError, match=why):
        request_from(header, b"\0" * payload_len)


async def _reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_frame_sizes_are_checked_before_anything_is_read() -> None:
    with pytest.raises(FrameError, match="payload of 1000 bytes"):
        await read_frame(await _reader_of(PREFIX.pack(2, 1000) + b"{}"), max_payload=999)
    with pytest.raises(FrameError, match="header of"):
        await read_frame(await _reader_of(PREFIX.pack(1 << 30, 0)), max_payload=10)
    with pytest.raises(FrameError, match="not JSON"):
        await read_frame(await _reader_of(PREFIX.pack(3, 0) + b"\xff{x"), max_payload=10)
    with pytest.raises(FrameError, match="not a JSON object"):
        await read_frame(await _reader_of(PREFIX.pack(2, 0) + b"[]"), max_payload=10)
    parts = encode_frame({"id": 3}, b"abc")
    header, payload = await read_frame(await _reader_of(b"".join(bytes(p) for p in parts)), max_payload=3)
    assert header == {"id": 3} and payload == b"abc"


# -- server and client over a real Unix socket -------------------------------------------------------


@pytest.fixture
def fast_only(tmp_path: Path) -> Any:
    engine = Engine.load(Settings(weights_dir=tmp_path / "none", device="cpu"), qualities=[Quality.FAST])
    yield engine
    engine.close()


@pytest.fixture
async def served(fast_only: Any, tmp_path: Path) -> AsyncIterator[EngineServer]:
    server = EngineServer(fast_only, Settings(microbatch_window_ms=5, max_input_pixels=100_000), tmp_path / "e.sock")
    await server.start()
    yield server
    await server.close()


async def test_images_through_the_engine_process_match_the_resident_engine(
    served: EngineServer, fast_only: Any, tmp_path: Path
) -> None:
    path = str(tmp_path / "e.sock")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # owner-only: no other local user can feed it
    remote = await RemoteEngine.connect(path, max_output_pixels=1_000_000)
    try:
        assert remote.qualities == frozenset({Quality.FAST}) and remote.device == "cpu"
        images = [_image(20 + i, 30 + i) for i in range(6)]
        outcomes = await remote.enhance_batch_async([EnhanceRequest(image, FAST) for image in images])
        for image, outcome in zip(images, outcomes):
            assert isinstance(outcome, EnhanceResult)
            np.testing.assert_array_equal(outcome.pixels, lanczos_resize(image.pixels, (image.width * 2, image.height * 2)))
            assert outcome.report["quality"] == "fast" and outcome.report["source"]["colour_profile"] == "none"
        # A level the engine did not load comes back as the class the pipeline re-routes on.
        [wrong] = await remote.enhance_batch_async([EnhanceRequest(images[0], EnhanceOptions(quality=Quality.BEST))])
        assert isinstance(wrong, QualityNotLoaded)
        assert served.served == 7
    finally:
        remote.close()


async def test_two_workers_share_one_engine_process_and_each_gets_its_own_answers(served: EngineServer, tmp_path: Path) -> None:
    path = str(tmp_path / "e.sock")
    first, second = [await RemoteEngine.connect(path, max_output_pixels=1_000_000) for _ in range(2)]
    try:
        a, b = _image(10, 12), _image(14, 9)
        out_a, out_b = await asyncio.gather(first.enhance(EnhanceRequest(a, FAST)), second.enhance(EnhanceRequest(b, FAST)))
        assert out_a.pixels.shape == (20, 24, 3) and out_b.pixels.shape == (28, 18, 3)
        assert served.connections == 2
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("frame", [PREFIX.pack(2, 1 << 40) + b"{}", PREFIX.pack(1 << 30, 0), PREFIX.pack(4, 0) + b"[1]\n"],
                         ids=["terabyte-payload", "gigabyte-header", "header-not-an-object"])
async def test_a_hostile_frame_closes_only_its_own_connection(served: EngineServer, tmp_path: Path, frame: bytes) -> None:
    path = str(tmp_path / "e.sock")
    reader, writer = await asyncio.open_unix_connection(path)
    Hello.from_header((await read_frame(reader, 0))[0])
    writer.write(frame)  # refused from the prefix or the header: nothing more is read
    await writer.drain()
    assert await reader.read() == b""  # closed by the server
    writer.close()
    remote = await RemoteEngine.connect(path, max_output_pixels=1_000_000)
    try:  # everyone else is still served
        assert isinstance(await remote.enhance(EnhanceRequest(_image(), FAST)), EnhanceResult)
    finally:
        remote.close()


async def test_a_request_over_the_engine_limit_fails_that_image_only(served: EngineServer, tmp_path: Path) -> None:
    remote = await RemoteEngine.connect(str(tmp_path / "e.sock"), max_output_pixels=1_000_000)
    try:
        header, payload = request_frame(1, EnhanceRequest(_image(), FAST))
        header["image"]["shape"] = [10, 10, 3]  # does not match its payload
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "e.sock"))
        await read_frame(reader, 0)
        writer.writelines(encode_frame(header, payload))
        await writer.drain()
        answer, _ = await read_frame(reader, 1 << 20)
        assert answer["id"] == 1 and answer["error"]["code"] == FailureCode.PROCESSING_FAILED
        assert "bytes of pixels" in answer["error"]["reason"]
        writer.close()
        assert isinstance(await remote.enhance(EnhanceRequest(_image(), FAST)), EnhanceResult)
    finally:
        remote.close()


async def test_a_picture_over_the_engine_process_limit_fails_that_image_for_good(served: EngineServer, tmp_path: Path) -> None:
    # This worker allows larger pictures than the engine process (MAX_INPUT_PIXELS 100,000 there).
    remote = await RemoteEngine.connect(str(tmp_path / "e.sock"), max_output_pixels=1_000_000)
    try:
        big = await remote.enhance(EnhanceRequest(_image(300, 400, channels=4, dtype=np.uint16), FAST))
        assert isinstance(big, TooManyPixels) and "MAX_INPUT_PIXELS" in big.reason
        assert classify(big).permanent  # an ending with the reason, never a loop of retries
        assert isinstance(await remote.enhance(EnhanceRequest(_image(), FAST)), EnhanceResult)  # same link
    finally:
        remote.close()


async def test_a_worker_waits_for_an_engine_process_that_is_still_starting(fast_only: Any, tmp_path: Path) -> None:
    path = tmp_path / "e.sock"
    server = EngineServer(fast_only, Settings(), path)

    async def start_later() -> None:
        await asyncio.sleep(1.5)
        await server.start()

    starting = asyncio.create_task(start_later())
    remote = await RemoteEngine.connect(str(path), max_output_pixels=1_000_000, connect_timeout_s=1, wait_s=30)
    try:
        await starting
        assert isinstance(await remote.enhance(EnhanceRequest(_image(), FAST)), EnhanceResult)
    finally:
        remote.close()
        await server.close()


def test_a_worker_without_its_engine_process_exits_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "ENGINE_SOCKET": str(tmp_path / "nobody.sock"), "ENGINE_WAIT_S": "1"}
    done = subprocess.run([sys.executable, "-m", "photoenhance", "processor"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "engine process" in done.stderr and "nobody.sock" in done.stderr


async def test_no_engine_process_is_an_outage_and_a_restarted_one_is_found_again(fast_only: Any, tmp_path: Path) -> None:
    path = tmp_path / "e.sock"
    with pytest.raises(EngineUnavailable) as nobody:
        await RemoteEngine.connect(str(path), max_output_pixels=1_000_000, connect_timeout_s=1)
    failure = classify(nobody.value)
    assert failure.code == FailureCode.ENGINE_UNAVAILABLE and failure.outage and not failure.permanent
    server = EngineServer(fast_only, Settings(), path)
    await server.start()
    remote = await RemoteEngine.connect(str(path), max_output_pixels=1_000_000)
    try:
        await server.close()  # the engine process goes away
        with pytest.raises(EngineUnavailable):
            await remote.enhance(EnhanceRequest(_image(), FAST))
        server = EngineServer(fast_only, Settings(), path)
        await server.start()  # and comes back: the next request reconnects
        assert isinstance(await remote.enhance(EnhanceRequest(_image(), FAST)), EnhanceResult)
    finally:
        remote.close()
        await server.close()


async def test_an_engine_process_of_another_version_is_refused(fast_only: Any, tmp_path: Path, monkeypatch) -> None:
    import processor.engine_service.server as server_module

    monkeypatch.setattr(server_module, "ENGINE_VERSION", "0.0.1")
    server = EngineServer(fast_only, Settings(), tmp_path / "e.sock")
    await server.start()
    try:
        with pytest.raises(VersionMismatch, match="0.0.1"):
            await RemoteEngine.connect(str(tmp_path / "e.sock"), max_output_pixels=1_000_000)
    finally:
        await server.close()


def test_the_engine_command_serves_until_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "run" / "engine.sock"
    env = {**os.environ, "PROCESSOR_QUALITIES": "fast", "WEIGHTS_DIR": str(tmp_path), "DEVICE": "cpu"}
    process = subprocess.Popen([sys.executable, "-m", "photoenhance", "engine", "--socket", str(path)], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert path.exists(), process.stdout.read().decode() if process.poll() is not None else "no socket"

        async def one() -> Any:
            remote = await RemoteEngine.connect(str(path), max_output_pixels=1_000_000)
            try:
                return await remote.enhance(EnhanceRequest(_image(), FAST))
            finally:
                remote.close()

        assert isinstance(asyncio.run(one()), EnhanceResult)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert not path.exists()  # the socket is removed at a clean stop
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_engine_command_without_a_socket_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_SOCKET"}
    done = subprocess.run([sys.executable, "-m", "photoenhance", "engine"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "ENGINE_SOCKET" in done.stderr


# -- workers feeding one engine process, through the pipeline ----------------------------------------


@pytest.mark.objectstore
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_two_workers_feed_one_engine_process_through_the_pipeline(
    processor_settings: Settings, repository: Repository, fast_only: Any, tmp_path: Path
) -> None:
    path = tmp_path / "engine.sock"
    server = EngineServer(fast_only, processor_settings, path)
    await server.start()
    # PROCESSOR_QUALITIES says balanced: the workers serve what the engine process loaded instead.
    settings = processor_settings.replace(engine_socket=str(path), processor_qualities=("balanced",),
                                          default_quality="fast")
    try:
        async with running_worker(settings, None, worker_id="feed-1") as one, \
                running_worker(settings.replace(processor_port=0), None, worker_id="feed-2") as two:
            assert one.settings.processor_qualities == ("fast",) == two.settings.processor_qualities
            batch = "enginefeed"
            keys = [f"{batch}/photo-{i}.jpg" for i in range(8)]
            await asyncio.gather(*(put_async(settings, key, image_bytes(40, 30, seed=i))
                                   for i, key in enumerate(keys)))


            async def all_final() -> Any:
                snapshot = await repository.batch_snapshot(batch)
                done = snapshot is not None and len(snapshot.images) == len(keys)
                return snapshot.images if done and all(i.state.is_final for i in snapshot.images) else None

            images = await eventually(all_final, what="every image final")
        assert sorted(f"{batch}/{i.name}" for i in images) == sorted(keys)
        assert {i.state for i in images} == {ImageState.COMPLETED}
        assert {i.report["output"]["width"] for i in images} == {80}
        assert server.served >= 8
    finally:
        await server.close()


# -- the process group: photoenhance processor --workers N ---------------------------------------------


def _children(pid: int) -> dict[int, str]:
    """The child processes of ``pid``, by pid, with their command lines."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found[int(child)] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return found


def _group(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "photoenhance", "processor", "--workers", "2",
                                 "--worker-id", "grp"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.objectstore
async def test_a_process_group_feeds_one_engine_from_two_workers_and_stops_as_one(
    processor_settings: Settings, repository: Repository, database, tmp_path: Path
) -> None:
    from db.workers import WorkerRegistry

    settings = processor_settings.replace(processor_port=0, default_quality="fast")
    registry = WorkerRegistry(database, gone_after_s=settings.worker_gone_after_s)
    group = _group(settings, tmp_path / "group.log")
    try:
        rows = await eventually(lambda: _live_ids(registry, 2), what="two workers of the group")
        assert rows == {"grp-w1", "grp-w2"}
        assert sum("engine --socket" in line for line in _children(group.pid).values()) == 1
        keys = [f"grouped/p{i}.jpg" for i in range(8)]
        await asyncio.gather(*(put_async(settings, key, image_bytes(40, 30, seed=i)) for i, key in enumerate(keys)))

        async def all_done() -> Any:
            snapshot = await repository.batch_snapshot("grouped")
            images = snapshot.images if snapshot else []
            return images if len(images) == len(keys) and all(i.state.is_final for i in images) else None

        images = await eventually(all_done, what="every image final")
        assert {i.state for i in images} == {ImageState.COMPLETED}
        assert {i.report["worker"] for i in images} <= {"grp-w1", "grp-w2"}
        group.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(group.wait, 90) == 0
        assert await registry.live() == []  # each worker stopped cleanly, its row removed
    finally:
        if group.poll() is None:
            group.kill()
            group.wait()


@pytest.mark.objectstore
async def test_a_process_group_whose_engine_process_dies_stops_and_says_so(
    processor_settings: Settings, database, tmp_path: Path
) -> None:
    from db.workers import WorkerRegistry

    settings = processor_settings.replace(processor_port=0)
    registry = WorkerRegistry(database, gone_after_s=settings.worker_gone_after_s)
    group = _group(settings, tmp_path / "group.log")
    try:
        await eventually(lambda: _live_ids(registry, 2), what="two workers of the group")
        children = _children(group.pid)
        [engine] = [pid for pid, line in children.items() if "engine --socket" in line]
        os.kill(engine, signal.SIGKILL)
        status = await asyncio.to_thread(group.wait, 90)
        assert status != 0  # for the service manager to restart the group
        assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in children)
        assert "the engine process exited" in (tmp_path / "group.log").read_text()
    finally:
        if group.poll() is None:
            group.kill()
            group.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


async def _live_ids(registry: Any, count: int) -> set[str] | None:
    ids = {row.id for row in await registry.live()}
    return ids if len(ids) >= count else None


@pytest.mark.objectstore
async def test_no_child_outlives_a_killed_process_group(processor_settings: Settings, database, tmp_path: Path) -> None:
    from db.workers import WorkerRegistry

    settings = processor_settings.replace(processor_port=0)
    registry = WorkerRegistry(database, gone_after_s=settings.worker_gone_after_s)
    group = _group(settings, tmp_path / "group.log")
    try:
        await eventually(lambda: _live_ids(registry, 2), what="two workers of the group")
        children = list(_children(group.pid))
        assert len(children) == 3
        group.kill()  # SIGKILL: the group cannot stop anyone itself
        await asyncio.to_thread(group.wait, 30)

        async def all_gone() -> bool:
            return all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in children)

        await eventually(all_gone, timeout=60, what="the children to stop with their group")
    finally:
        if group.poll() is None:
            group.kill()
            group.wait()
