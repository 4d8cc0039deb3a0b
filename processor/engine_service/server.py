"""The engine process's side: one engine, many worker processes feeding it over a Unix socket.

Each worker connection gets the ``hello``, then sends request frames as its images become ready;
every request of every connection joins one :class:`~processor.microbatch.MicroBatcher`, so
images of several workers share a micro-batch, and results go back on each request's connection as
they are done (in any order, by id). The engine stays the only thing this process does: fetching,
decoding, encoding, the database and the broker are the workers' work.

A frame that breaks the contract closes its connection (logged; the worker's requests on it fail
as :class:`~processor.engine_service.wire.EngineUnavailable` and are retried); every other
connection goes on. The socket is created owner-only (0600) in a folder the operator chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from photoenhance.contracts.failures import ImageError, TooManyPixels
from photoenhance.contracts.options import OptionsError
from photoenhance.settings import Settings
from processor.engine.errors import ProcessingFailed, as_image_error
from processor.engine.records import EnhanceRequest, EnhanceResult, gains_from_batching
from processor.engine.version import ENGINE_VERSION
from processor.engine_service.wire import (
    FrameError,
    Hello,
    PayloadTooLarge,
    error_header,
    max_pixel_bytes,
    read_frame,
    request_from,
    result_frame,
    write_frame,
)
from processor.microbatch import MicroBatcher

__all__ = ["EngineServer"]

log = logging.getLogger(__name__)

#: Payloads up to this many times the limit are read and dropped, answered with the image's error;
#: larger ones cannot come from a worker and close the connection.
SKIP_OVER = 4


def _request_id(header: dict[str, Any]) -> int:
    request_id = header.get("id")
    if not isinstance(request_id, int):
        raise FrameError("a request without an integer id")
    return request_id


class EngineServer:
    """Serves ``engine`` (anything with ``qualities``, ``device`` and ``enhance_batch_async``) on
    the Unix socket ``path``."""

    def __init__(self, engine: Any, settings: Settings, path: str | os.PathLike[str]) -> None:
        self._engine = engine
        self._path = Path(path)
        self._hello = Hello(
            levels=sorted(q.value for q in engine.qualities),
            device=str(getattr(engine, "device", "cpu")),
            engine_version=ENGINE_VERSION,
            max_request_bytes=max_pixel_bytes(settings.max_input_pixels),
        )
        self._batcher: MicroBatcher[EnhanceRequest, EnhanceResult | ImageError] = MicroBatcher(
            engine.enhance_batch_async,
            max_images=settings.microbatch_max_images,
            window_ms=settings.microbatch_window_ms,
            wants_company=gains_from_batching,
        )
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()
        #: Images enhanced and connections served so far (the health of the engine process).
        self.served = 0
        self.connections = 0

    async def start(self) -> None:
        """Listen on the socket (a stale one left by a crash is replaced)."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        old = os.umask(0o177)  # the socket is born owner-only: no window with wider permissions
        try:
            self._server = await asyncio.start_unix_server(self._accept, path=str(self._path))
        finally:
            os.umask(old)
        log.info("engine serving %s on %s (%s)", ",".join(self._hello.levels), self._path, self._hello.device)

    async def close(self) -> None:
        """Stop accepting, end every connection (requests in flight are cut off: their workers
        retry them), stop the batcher and remove the socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self._batcher.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections += 1
        try:
            await self._serve(reader, writer)
        finally:
            self._connections.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests: set[asyncio.Task[None]] = set()
        try:
            await write_frame(writer, self._hello.to_header())
            while True:
                try:
                    header, payload = await read_frame(reader, self._hello.max_request_bytes,
                                                       skip_over=SKIP_OVER * self._hello.max_request_bytes)
                except asyncio.IncompleteReadError:
                    return  # the worker closed its end
                except PayloadTooLarge as big:
                    # A worker whose MAX_INPUT_PIXELS is larger than this process's: that image
                    # fails for good with the reason (retrying it here would loop).
                    request_id = _request_id(big.header)
                    limit = self._hello.max_request_bytes
                    await write_frame(writer, error_header(request_id, TooManyPixels(
                        f"the engine process takes pictures of at most {limit} bytes of pixels "
                        f"(MAX_INPUT_PIXELS there); this one has more: {big}")))
                    continue
                request_id = _request_id(header)
                task = asyncio.create_task(self._answer(writer, request_id, header, payload))
                requests.add(task)
                task.add_done_callback(requests.discard)
        except FrameError as exc:
            log.warning("engine: closing a connection that sent a malformed frame: %s", exc)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for task in requests:
                task.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, request_id: int, header: dict[str, Any], payload: bytes) -> None:
        try:
            request = request_from(header, payload)
        except (FrameError, OptionsError) as exc:
            # A worker never sends these; answered per request so one bad frame costs one image.
            outcome: EnhanceResult | ImageError = ProcessingFailed(f"the engine could not read the request: {exc}")
        else:
            del payload
            try:
                outcome = await self._batcher.submit(request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: each image says so
                outcome = as_image_error(exc, "enhancement")
        self.served += 1
        try:
            frame, data = result_frame(request_id, outcome)
            await write_frame(writer, frame, data)
        except (ConnectionError, RuntimeError) as exc:
            log.info("engine: result %d could not be sent, the worker went away: %r", request_id, exc)
        except (TypeError, ValueError) as exc:  # a report that is no JSON: the image fails, the link stays
            await write_frame(writer, error_header(request_id, ProcessingFailed(f"unsendable result: {exc}")))
