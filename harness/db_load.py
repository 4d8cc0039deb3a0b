"""Work a child process does in the multi-process concurrency tests (importable by spawn)."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone

from db.connection import Database
from db.records import ImageVersion
from db.repository import Repository


def race_for_batch(url: str, batch_id: str, names: list[str], owner: str, seed: int) -> dict[str, int]:
    """Register every name (as every racer does), then claim and complete whatever this racer wins.

    Returns how many registrations this racer created and how many completions it recorded.
    """
    return asyncio.run(_race(url, batch_id, names, owner, seed))


async def _race(url: str, batch_id: str, names: list[str], owner: str, seed: int) -> dict[str, int]:
    db = Database(url)
    repo = Repository(db)
    order = names[:]
    random.Random(seed).shuffle(order)
    created = completed = 0
    try:
        for name in order:
            reg = await repo.register_image(
                ImageVersion(
                    bucket="in",
                    batch_id=batch_id,
                    key=f"{batch_id}/{name}",
                    name=name,
                    etag="e1",
                    size=1,
                    uploaded_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                )
            )
            created += reg.created
            if await repo.claim_image(reg.image.id, owner, lease_seconds=300) is None:
                continue
            events = await repo.complete_image(reg.image.id, owner, output_key=f"out/{name}")
            completed += bool(events)
            # A duplicate completion, as a redelivered message would attempt, must count nothing.
            assert await repo.complete_image(reg.image.id, owner, output_key=f"out/{name}") == []
    finally:
        await db.dispose()
    return {"created": created, "completed": completed}
