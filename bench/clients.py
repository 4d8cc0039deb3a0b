"""The benchmark's clients of the pipeline, each recording when things happened (``time.time()``).

- :func:`create_batch`: ``POST /api/v1/batches`` (ingest), as the web page and the CLI do;
- :func:`upload_all`: one upload per file, sent by the project's own upload code
  (:func:`client.uploads.upload`), ``concurrency`` at a time: the POST policies the API
  signed, or presigned PUTs of the same keys (:func:`with_presigned_puts`, signed here with the
  services' S3 credentials, as server-side uploaders do);
- :class:`WebSocketSubscriber`: follows ``/ws/batches/{id}`` (notifier) from before the first
  upload until ``end``, timing each event's arrival;
- :class:`Poller`: the origin design's client, ``GET /api/v1/batches/{id}`` every ``interval_s``,
  noting when it first sees each image completed.

All of them run on this process's one event loop, so an arrival time includes waiting for the
loop; on a loaded machine that is part of what a real client would see too.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from client.api import Api
from client.uploads import upload
from ingest.presign import Presigner
from photoenhance.settings import Settings

__all__ = [
    "CreatedBatch",
    "Poller",
    "UploadTimes",
    "WebSocketSubscriber",
    "create_batch",
    "upload_all",
    "with_presigned_puts",
]

#: Upper bound on waiting for a batch to finish; exceeding it fails the run.
WAIT_S = 900


@dataclass(frozen=True)
class CreatedBatch:
    """What the API answered: the batch, its token, one signed upload per file, the WebSocket URL."""

    batch_id: str
    token: str
    uploads: dict[str, dict[str, Any]]
    websocket_url: str


async def create_batch(api: Api, files: dict[str, bytes], options: dict[str, Any] | None = None) -> CreatedBatch:
    """Declare ``files`` (name -> JPEG bytes) as a batch with ``options`` (default: ``fast``, upscale 2)."""
    declared = [{"name": name, "size": len(data), "content_type": "image/jpeg"} for name, data in files.items()]
    body = await api.create_batch(declared, options or {"quality": "fast", "upscale": 2})
    return CreatedBatch(
        batch_id=body["batch_id"],
        token=body["token"],
        uploads={u["name"]: u for u in body["uploads"]},
        websocket_url=f"{body['progress']['websocket']}?token={body['token']}",
    )


def with_presigned_puts(batch: CreatedBatch, settings: Settings) -> CreatedBatch:
    """The same batch with a presigned PUT for each key instead of the API's POST policy."""
    presigner = Presigner(settings)
    puts = {
        name: presigner.upload_put(request["key"], content_type="image/jpeg").to_dict()
        for name, request in batch.uploads.items()
    }
    return replace(batch, uploads=puts)


@dataclass(frozen=True)
class UploadTimes:
    """When one upload request was sent and when the store's answer arrived."""

    started: float
    finished: float


async def upload_all(
    session: aiohttp.ClientSession, batch: CreatedBatch, files: dict[str, bytes], *, concurrency: int, rate: float = 0
) -> dict[str, UploadTimes]:
    """Upload every file; ``rate`` > 0 paces the starts at that many per second."""
    slots = asyncio.Semaphore(concurrency)
    times: dict[str, UploadTimes] = {}
    first = time.monotonic()

    async def one(index: int, name: str, data: bytes) -> None:
        if rate > 0:
            await asyncio.sleep(max(0.0, first + index / rate - time.monotonic()))
        async with slots:
            started = time.time()
            await upload(session, batch.uploads[name], data, len(data), lambda _n: None)
            times[name] = UploadTimes(started, time.time())

    try:
        async with asyncio.TaskGroup() as group:  # the first failure cancels the uploads still going
            for i, (name, data) in enumerate(files.items()):
                group.create_task(one(i, name, data))
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from group_error
    return times


@dataclass
class WebSocketSubscriber:
    """Follows one batch's WebSocket stream: each event's arrival time and content, by image name."""

    url: str
    #: name -> (arrival time, the event as JSON) for ``image.completed`` / ``image.failed``.
    images: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    completed_at: float | None = None
    close_code: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Read until the server closes the stream (after ``end``)."""
        async with session.ws_connect(self.url, heartbeat=None, max_msg_size=0) as ws:
            async for msg in ws:
                arrived = time.time()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                self._record(json.loads(msg.data), arrived)
        self.close_code = ws.close_code

    def _record(self, message: dict[str, Any], arrived: float) -> None:
        kind = message.get("kind")
        if kind == "snapshot":
            self.ready.set()  # bound to the batch: nothing published from now on is missed
        elif kind == "event" and message.get("image") and message["type"] != "batch.completed":
            self.images.setdefault(message["image"]["name"], (arrived, message))
        elif kind == "event" and message["type"] == "batch.completed":
            self.completed_at = arrived


@dataclass
class Poller:
    """Reads the batch's status every ``interval_s`` until it is completed."""

    api: Api
    batch_id: str
    token: str
    interval_s: float
    #: name -> when a status answer first showed the image completed (the answer's arrival).
    learned: dict[str, float] = field(default_factory=dict)
    #: Seconds each status request took.
    request_s: list[float] = field(default_factory=list)
    #: Size of each answer, bytes of JSON.
    answer_bytes: list[int] = field(default_factory=list)

    async def run(self) -> None:
        """Poll on a fixed schedule (a slow answer delays the next poll, it does not add one)."""
        deadline = time.monotonic() + WAIT_S
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            sent = time.time()
            body = await self.api.get_batch(self.batch_id, self.token)
            arrived = time.time()
            self.request_s.append(arrived - sent)
            self.answer_bytes.append(len(json.dumps(body)))
            for image in body["images"]:
                if image["state"] == "completed":
                    self.learned.setdefault(image["name"], arrived)
            if body["state"] == "completed":
                return
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        raise TimeoutError(f"batch {self.batch_id} did not complete within {WAIT_S} s")
