"""The worker's side: an engine that lives in another process, used like the resident one.

:class:`RemoteEngine` has what the worker takes from :class:`~processor.engine.Engine` (its
``qualities``, ``device``, ``enhance_batch_async`` and ``close``) plus :meth:`RemoteEngine.enhance`
for one image, which the worker hands the pipeline instead of its own micro-batcher: the engine
process batches the images of every worker together.

If the engine process is away (not started yet, restarting, crashed mid-request), the requests
concerned fail with :class:`~processor.engine_service.wire.EngineUnavailable`, an outage: the
pipeline hands the image back and re-announces it after a back-off, spending none of its
attempts. The next request connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence

from photoenhance.contracts.failures import ImageError
from photoenhance.contracts.options import Quality
from processor.engine.records import EnhanceRequest, EnhanceResult
from processor.engine.version import ENGINE_VERSION
from processor.engine_service.wire import (
    EngineUnavailable,
    FrameError,
    Hello,
    max_pixel_bytes,
    outcome_from,
    read_frame,
    request_frame,
    write_frame,
)

__all__ = ["RemoteEngine", "VersionMismatch"]

log = logging.getLogger(__name__)

Outcome = EnhanceResult | ImageError


class VersionMismatch(RuntimeError):
    """The engine process runs another engine version than this worker's code."""


class _Link:
    """One open connection: its writer, the reader task and the requests awaiting answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: Hello) -> None:
        self.reader, self.writer, self.hello = reader, writer, hello
        self.pending: dict[int, asyncio.Future[Outcome]] = {}
        self.task: asyncio.Task[None] | None = None

    def fail_all(self, why: str) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(EngineUnavailable(why))
        self.pending.clear()


class RemoteEngine:
    """An engine process reached through the Unix socket ``path``."""

    def __init__(self, path: str, *, max_output_pixels: int, connect_timeout_s: float = 5.0) -> None:
        self._path = path
        self._max_result_bytes = max_pixel_bytes(max_output_pixels)
        self._timeout = connect_timeout_s
        self._link: _Link | None = None
        self._connecting = asyncio.Lock()
        self._ids = itertools.count(1)
        self.qualities: frozenset[Quality] = frozenset()
        self.device = "unknown"

    @classmethod
    async def connect(
        cls, path: str, *, max_output_pixels: int, connect_timeout_s: float = 5.0, wait_s: float = 0.0
    ) -> RemoteEngine:
        """Connect and read the hello, trying again for up to ``wait_s`` while nobody answers (an
        engine process started beside the worker may still be loading its models). Raises
        :class:`EngineUnavailable` when nobody answered in time, :class:`VersionMismatch` for an
        engine of another version."""
        engine = cls(path, max_output_pixels=max_output_pixels, connect_timeout_s=connect_timeout_s)
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            try:
                await engine._open()
                return engine
            except EngineUnavailable as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                log.info("waiting for the engine process: %s", exc)
                await asyncio.sleep(1.0)

    async def _open(self) -> _Link:
        async with self._connecting:
            if self._link is not None:
                return self._link
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self._path), self._timeout)
                header, _ = await asyncio.wait_for(read_frame(reader, 0), self._timeout)
                hello = Hello.from_header(header)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, FrameError) as exc:
                raise EngineUnavailable(f"the engine process at {self._path} does not answer: {exc!r}") from exc
            if hello.engine_version != ENGINE_VERSION:
                writer.close()
                raise VersionMismatch(
                    f"the engine process at {self._path} runs engine {hello.engine_version}, this worker {ENGINE_VERSION}"
                )
            link = _Link(reader, writer, hello)
            link.task = asyncio.create_task(self._receive(link), name="engine-link")
            self._link = link
            self.qualities = frozenset(Quality(level) for level in hello.levels)
            self.device = hello.device
            log.info("connected to the engine process at %s (%s on %s)", self._path, ",".join(hello.levels), hello.device)
            return link

    async def _receive(self, link: _Link) -> None:
        why = "the engine process closed the connection"
        try:
            while True:
                header, payload = await read_frame(link.reader, self._max_result_bytes)
                future = link.pending.pop(header.get("id"), None)  # type: ignore[arg-type]
                if future is not None and not future.done():
                    future.set_result(outcome_from(header, payload))
        except asyncio.IncompleteReadError:
            pass
        except asyncio.CancelledError:
            why = "the worker is closing"
            raise
        except (OSError, FrameError) as exc:
            why = f"the link to the engine process broke: {exc!r}"
            log.warning("%s", why)
        finally:
            if self._link is link:
                self._link = None
            link.fail_all(why)
            link.writer.close()

    async def enhance(self, request: EnhanceRequest) -> Outcome:
        """One image through the engine process: its result or its :class:`ImageError`."""
        link = self._link or await self._open()
        request_id = next(self._ids)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        link.pending[request_id] = future
        header, payload = request_frame(request_id, request)
        try:
            await write_frame(link.writer, header, payload)
        except (OSError, RuntimeError) as exc:
            link.pending.pop(request_id, None)
            raise EngineUnavailable(f"the request could not reach the engine process: {exc!r}") from exc
        try:
            return await future
        finally:
            link.pending.pop(request_id, None)

    async def enhance_batch_async(self, requests: Sequence[EnhanceRequest]) -> list[Outcome]:
        """Each of ``requests`` through the engine process (batched there with everyone's)."""
        return list(await asyncio.gather(*(self.enhance(r) for r in requests)))

    def close(self) -> None:
        """Close the connection; requests still waiting fail as unavailable."""
        link, self._link = self._link, None
        if link is not None and link.task is not None:
            link.task.cancel()
        elif link is not None:
            with contextlib.suppress(Exception):
                link.writer.close()
