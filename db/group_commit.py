"""Group commit: requests that arrive while a transaction is in flight share the next one.

The first request starts a flush at once (no window, no added wait); whatever arrives while that
transaction runs is taken together by the next. Under load each transaction carries what queued
behind the previous one: one commit (one fsync, one lock span) for many images instead of one
each. Each caller gets its own result, or the exception of the transaction it was part of.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """Runs ``run(items)`` for the items queued since its last call, one call at a time.

    ``run`` returns one entry per item, in order: a result, or an exception for that item alone.
    An exception raised by ``run`` itself goes to every item of that call. Bound to the event loop
    it was created in.
    """

    def __init__(self, run: Callable[[list[Item]], Awaitable[Sequence[Result | Exception]]]) -> None:
        self._run = run
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()

    def submit(self, item: Item) -> asyncio.Future[Result]:
        """Queue ``item``; the future is resolved once the transaction it joined has ended."""
        future: asyncio.Future[Result] = self.loop.create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = self.loop.create_task(self._flush(), name="group-commit")
        return future

    async def _flush(self) -> None:
        while self._pending:
            taken, self._pending = self._pending, []
            try:
                results = await self._run([item for item, _ in taken])
            except asyncio.CancelledError:
                for _, future in taken:
                    future.cancel()
                for _, future in self._pending:
                    future.cancel()
                self._pending = []
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this transaction
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(taken, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
