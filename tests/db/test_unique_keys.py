"""The database itself refuses a second current version of a key and a second holder of a
result key (migration 0007): the worker's path relies on it instead of reading again under the
batch lock. Both engines."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from db.models import Image, utcnow
from db.repository import Repository

both_engines = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def _row(key: str, state: str, output_key: str | None = None, etag: str = "e1") -> dict[str, Any]:
    now = utcnow()
    return {"batch_id": "b1", "bucket": "in", "key": key, "name": key.rsplit("/", 1)[-1], "etag": etag, "size": 1,
            "state": state, "attempts": 0, "output_key": output_key, "created_at": now, "updated_at": now}


async def _insert(repository: Repository, *rows: dict[str, Any]) -> None:
    async with repository.db.write() as conn:
        await conn.execute(insert(Image), list(rows))


@both_engines
async def test_one_current_version_per_key(repository: Repository) -> None:
    await repository.create_batch("b1", input_bucket="in", options={"quality": "fast"})
    # Superseded versions are history: any number of them beside the current one.
    await _insert(repository, _row("b1/a.jpg", "superseded", etag="e0"), _row("b1/a.jpg", "superseded", etag="e1"),
                  _row("b1/a.jpg", "completed", "b1/a.jpg", etag="e2"))
    for state in ("pending", "processing", "completed", "failed"):
        with pytest.raises(IntegrityError):
            await _insert(repository, _row("b1/a.jpg", state, etag=f"x-{state}"))
    await _insert(repository, _row("b1/b.jpg", "pending"))  # another key is another key


@both_engines
async def test_one_holder_per_result_key_of_a_batch(repository: Repository) -> None:
    await repository.create_batch("b1", input_bucket="in", options={"quality": "fast"})
    await repository.create_batch("b2", input_bucket="in", options={"quality": "fast"})
    await _insert(repository, _row("b1/a.png", "processing", "b1/a.jpg"))
    for state in ("processing", "completed"):
        with pytest.raises(IntegrityError):
            await _insert(repository, _row(f"b1/a-{state}.jpg", state, "b1/a.jpg"))
    # A failed input, or one not (or no longer) working, holds no result key.
    await _insert(repository, _row("b1/f.jpg", "failed", "b1/a.jpg"), _row("b1/p.jpg", "pending", "b1/a.jpg"))
    other = _row("b2/a.jpg", "processing", "b1/a.jpg")
    other["batch_id"] = "b2"
    await _insert(repository, other)  # the same key in another batch
    async with repository.db.read() as conn:
        held = (await conn.exec_driver_sql(
            "SELECT count(*) FROM images WHERE output_key = 'b1/a.jpg' AND state IN ('processing', 'completed')"
        )).scalar_one()
    assert held == 2  # b1's one holder and b2's
