"""The worker's database path alone, one process, for bench/db_path.py; never part of the product.

Run as a script by the benchmark only, with ``PYTHONPATH`` and the working directory set to the
tree under test (this file imports nothing of the tree it lives in, so a control tree at another
commit is measured with the same loop)::

    python bench/db_path_worker.py --url URL --batch ID --prepare     # migrate, create the batch
    python bench/db_path_worker.py --url URL --batch ID --images N --lanes K --owner NAME

It does what a worker does to the database for each image, and nothing else: ``start_image``
(register, claim, reserve the result key), then ``complete_image``, with ``K`` images in flight
(a worker's prefetch window). The batch must exist. Prints one JSON object: the process's CPU
seconds, wall seconds, write transactions committed and statements run, over the ``N`` measured
images (after a warm-up of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import resource
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

WARM_UP = 24


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import event

    from db.connection import Database
    from db.records import ImageVersion
    from db.repository import Repository

    db = Database(args.url)
    repo = Repository(db)
    counts = {"commits": 0, "statements": 0}
    engine = db.engine.sync_engine

    @event.listens_for(engine, "commit")
    def _commit(_conn: Any) -> None:
        counts["commits"] += 1

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(*_args: Any) -> None:
        counts["statements"] += 1

    if hasattr(Database, "statement"):  # trees that write a group as one statement, its own transaction
        one_statement = Database.statement

        @asynccontextmanager
        async def statement(self: Any) -> Any:
            async with one_statement(self) as conn:
                yield conn
            counts["commits"] += 1  # committed by the server at the statement's end; not if it failed

        Database.statement = statement  # type: ignore[method-assign]

    # Trees whose completions take the image's name (it lets them share a group's one statement).
    named = "name" in inspect.signature(repo.complete_image).parameters

    uploaded = datetime(2026, 1, 1, tzinfo=UTC)

    async def one(n: int) -> None:
        name = f"{args.owner}-{n:06d}.jpg"
        key = f"{args.batch}/{name}"
        version = ImageVersion(bucket="in", batch_id=args.batch, key=key, name=name, etag="e1", size=1,
                               uploaded_at=uploaded)
        started = await repo.start_image(version, args.owner, 300, lambda _batch: [f"{args.batch}/out/{name}"])
        assert started.claimed is not None and started.output_key is not None
        events = await repo.complete_image(started.image.id, args.owner, output_key=started.output_key,
                                           batch_id=args.batch, **({"name": name} if named else {}))
        assert events, "the completion counted"

    async def lanes(first: int, count: int) -> None:
        numbers = iter(range(first, first + count))

        async def lane() -> None:
            for n in numbers:
                await one(n)

        await asyncio.gather(*(lane() for _ in range(args.lanes)))

    try:
        await lanes(0, WARM_UP)
        counts.update(commits=0, statements=0)
        cpu, wall = cpu_s(), time.perf_counter()
        await lanes(WARM_UP, args.images)
        cpu, wall = cpu_s() - cpu, time.perf_counter() - wall
    finally:
        await db.dispose()
    return {"images": args.images, "cpu_s": round(cpu, 4), "wall_s": round(wall, 4), **counts}


async def prepare(url: str, batch_id: str) -> None:
    """Bring a new database to the tree's schema and create the batch the runs work on."""
    from db.connection import Database
    from db.migrate import upgrade
    from db.repository import Repository

    db = Database(url)
    try:
        await upgrade(db)
        await Repository(db).create_batch(batch_id, input_bucket="in", options={"quality": "fast"})
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--batch", required=True)
    parser.add_argument("--prepare", action="store_true", help="migrate the database and create the batch")
    parser.add_argument("--images", type=int, default=0)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--owner", default="w0")
    args = parser.parse_args()
    if args.prepare:
        asyncio.run(prepare(args.url, args.batch))
        return
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
