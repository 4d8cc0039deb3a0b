"""Keeping a claim alive while an image is processed.

A claim lasts ``LEASE_SECONDS``; while the worker works on the image it renews the claim every
third of that, so a live worker never loses an image to another, and a crashed one (``kill -9``,
a lost machine) lets go within one lease. Renewal failures are logged, not raised: if the claim is
lost, the completion's compare-and-set says so and the work is left to the new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from db.repository import Repository

__all__ = ["held_lease"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def held_lease(repository: Repository, image_id: int, owner: str, lease_seconds: float) -> AsyncIterator[None]:
    """Renew ``owner``'s claim on ``image_id`` every ``lease_seconds / 3`` while the block runs."""

    async def renew() -> None:
        interval = max(lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                if not await repository.extend_lease(image_id, owner, lease_seconds):
                    log.warning("image %d: claim lost to another worker; its completion will not count", image_id)
                    return
            except Exception as exc:  # the database may be briefly away; try again next interval
                log.warning("image %d: could not renew the claim: %s", image_id, exc)

    task = asyncio.create_task(renew(), name=f"lease-{image_id}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
