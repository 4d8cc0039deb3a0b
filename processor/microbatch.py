"""Micro-batching: images that become ready close together go to the engine together.

The first image opens a window of ``window_ms``; the batch runs when ``max_images`` have joined or
the window closes, whichever comes first. An image that gains nothing from company (``fast``: a
Lanczos resize per image) opens no window: its batch takes what is already waiting and runs. One
batch runs at a time (the engine has one inference thread); images arriving meanwhile gather for
the next batch. Each caller awaits its own slot's result, so one bad image never fails its
neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")


class MicroBatcher(Generic[Req, Res]):
    """Gathers requests into batches for ``run_batch``.

    ``run_batch`` takes a list of requests and returns one result per request, in order.
    ``max_images`` (>= 1) caps a batch; ``window_ms`` is how long the first request of a batch
    waits for company, if ``wants_company`` says it gains from it (default: every request);
    ``on_batch`` is told each batch's size (metrics).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Req]], Awaitable[Sequence[Res]]],
        *,
        max_images: int,
        window_ms: float,
        on_batch: Callable[[int], None] | None = None,
        wants_company: Callable[[Req], bool] = lambda _: True,
    ) -> None:
        self._run_batch = run_batch
        self._wants_company = wants_company
        self._max = max(1, max_images)
        self._window_s = max(0.0, window_ms) / 1000
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Req, asyncio.Future[Res]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, request: Req) -> Res:
        """Queue ``request`` for the next batch and wait for its result."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="microbatch")
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def close(self) -> None:
        """Stop the batching task; requests still waiting are cancelled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()

    async def _gather(self) -> list[tuple[Req, asyncio.Future[Res]]]:
        batch = [await self._queue.get()]
        window_s = self._window_s if self._wants_company(batch[0][0]) else 0.0
        deadline = asyncio.get_running_loop().time() + window_s
        while len(batch) < self._max:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                # the window is over; still take what is already waiting, without waiting more
                if self._queue.empty():
                    break
                batch.append(self._queue.get_nowait())
                continue
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        while True:
            batch = [(req, fut) for req, fut in await self._gather() if not fut.done()]  # drop cancelled callers
            if not batch:
                continue
            if self._on_batch is not None:
                self._on_batch(len(batch))
            try:
                results = await self._run_batch([req for req, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
            except asyncio.CancelledError:
                for _, fut in batch:
                    fut.cancel()
                raise
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
