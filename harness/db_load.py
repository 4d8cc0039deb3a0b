"""Work a child process does in the multi-process concurrency tests (importable by spawn)."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime

from sqlalchemy import text

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
                    uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
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


def race_with_start(url: str, batch_ids: list[str], names: list[str], owner: str, seed: int) -> dict[str, int]:
    """The worker's own path: one ``start_image`` per (batch, name), as every racer does, then the
    images this racer won completed eight at a time, concurrently (group commits spanning batches).

    Returns how many images this racer claimed and how many completions it recorded.
    """
    return asyncio.run(_race_with_start(url, batch_ids, names, owner, seed))


async def _race_with_start(url: str, batch_ids: list[str], names: list[str], owner: str, seed: int) -> dict[str, int]:
    db = Database(url)
    repo = Repository(db)
    order = [(b, n) for b in batch_ids for n in names]
    random.Random(seed).shuffle(order)
    claimed: list[tuple[int, str]] = []
    try:
        for batch_id, name in order:
            started = await repo.start_image(
                ImageVersion(
                    bucket="in", batch_id=batch_id, key=f"{batch_id}/{name}", name=name, etag="e1", size=1,
                    uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
                ),
                owner,
                300,
                lambda batch, b=batch_id, n=name: [f"{b}/out-{n}"],
            )
            if started.claimed is not None:
                assert started.output_key == f"{batch_id}/out-{name}"
                claimed.append((started.claimed.id, started.output_key))
        completed = 0
        for i in range(0, len(claimed), 8):
            chunk = claimed[i:i + 8]
            results = await asyncio.gather(*(repo.complete_image(id_, owner, output_key=key) for id_, key in chunk))
            completed += sum(1 for events in results if events)
    finally:
        await db.dispose()
    return {"claimed": len(claimed), "completed": completed}


def race_versions_and_result_keys(
    url: str, batch_id: str, keys: int, owner: str, seed: int, start_at: float, waves: int = 3
) -> dict[str, list]:
    """Start, all at once, this racer's own version (etag ``owner``) of each of ``keys`` keys,
    and a key of its own whose only result key is the one every racer's key of that name wants:
    what several workers do when a key is uploaded again while the first upload is being started,
    and when two inputs of a batch map to one result. ``waves`` times, each with keys of its own,
    every racer beginning wave ``w`` at ``start_at + w`` (a ``time.time()``), so that processes
    spawned one after another still start together. Returns, per start, what it got:
    ``[key, image id, claimed, result key]``.
    """
    return asyncio.run(_race_versions(url, batch_id, keys, owner, seed, start_at, waves))


async def _race_versions(
    url: str, batch_id: str, keys: int, owner: str, seed: int, start_at: float, waves: int
) -> dict[str, list]:
    db = Database(url)
    repo = Repository(db)
    async with db.read() as conn:  # connected before the start
        await conn.execute(text("SELECT 1"))
    uploaded = datetime(2026, 1, 1, tzinfo=UTC)
    results = []
    try:
        for wave in range(waves):
            starts = []
            for n in range(wave * keys, (wave + 1) * keys):
                for key, wanted in ((f"{batch_id}/same-{n}.jpg", f"{batch_id}/out-{n}"),
                                    (f"{batch_id}/{owner}-{n}.png", f"{batch_id}/shared-{n}")):
                    version = ImageVersion(bucket="in", batch_id=batch_id, key=key, name=key.split("/", 1)[1],
                                           etag=owner, size=1, uploaded_at=uploaded)
                    starts.append(repo.start_image(version, owner, 300, lambda _batch, k=wanted: [k]))
            random.Random(seed + wave).shuffle(starts)
            await asyncio.sleep(max(0.0, start_at + wave - time.time()))
            results += await asyncio.gather(*starts)
    finally:
        await db.dispose()
    return {"starts": [[s.image.key, s.image.id, s.claimed is not None, s.output_key] for s in results]}
