"""A group of the worker's path as the one statement that writes it on PostgreSQL
(:data:`db.statements.WRITE_GROUP`): its parameters, built from the starts and completions and the
batch as last found (:func:`group_values`), and what its rows say (:func:`group_rows`). Pure: the
statement runs in :meth:`db.worker_path.WorkerPath._in_one_statement`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from db import statements as sql
from db.group_items import ENDED, Completion, Start
from db.models import Batch, Image
from db.records import BatchRecord, ImageRecord
from db.transactions import batch_from_values, image_from_values
from photoenhance.contracts.progress import BatchCounts, EventType, ImageProgress, ProgressEvent
from photoenhance.contracts.states import ImageState

__all__ = ["GroupValues", "group_rows", "group_values", "planned_starts"]

#: The columns of a batches row and of an images row, by name.
_BATCH_COLUMNS = tuple(c.name for c in Batch.__table__.c)
_IMAGE_COLUMNS = tuple(c.name for c in Image.__table__.c)


@dataclass(frozen=True)
class GroupValues:
    """A group as :data:`~db.statements.WRITE_GROUP` takes it (:func:`group_values`)."""

    parameters: dict[str, Any]
    #: Each start's result key candidates, in the starts' order.
    candidates: list[tuple[str, ...]]
    #: Each completion's ``image.completed`` event, in order, not yet numbered or counted.
    events: list[ProgressEvent]


def group_values(
    remembered: Mapping[str, BatchRecord], starts: list[tuple[int, Start]],
    completions: list[tuple[int, Completion]], now: datetime,
) -> GroupValues | None:
    """``starts`` and ``completions`` as :data:`~db.statements.WRITE_GROUP`'s parameters, or None
    where the group is not one it can take: they concern more than one batch, a completion does not
    name its image's batch and name, its starts' batch was not found before (``remembered``) or
    would not take them as found, two of its starts would meet in a unique index, or a value
    could not go through ``jsonb``. What it decided from the batch as remembered, the statement
    checks against the batch as it locks it."""
    batch_ids = {start.version.batch_id for _, start in starts} | {item.batch_id for _, item in completions}
    if len(batch_ids) != 1 or any(item.batch_id is None or item.name is None for _, item in completions):
        return None
    (batch_id,) = batch_ids
    assert batch_id is not None
    batch = remembered.get(batch_id)
    planned = planned_starts(remembered, starts)
    if planned is None:
        return None
    rows = [
        {
            "n": n, "bucket": start.version.bucket, "key": start.version.key, "name": start.version.name,
            "etag": start.version.etag, "size": start.version.size, "owner": start.owner,
            "output_key": candidates[0] if candidates else None, "level": start.version.level,
            "lease_until": _iso(now + timedelta(seconds=start.lease_seconds)),
            "uploaded_at": _iso(start.version.uploaded_at),
        }
        for n, (_, start, candidates) in enumerate(planned, start=1)
    ]
    events = [
        ProgressEvent(batch_id=batch_id, seq=0, type=EventType.IMAGE_COMPLETED, time=now, counts=BatchCounts(),
                      image=ImageProgress(name=item.name, state=ImageState.COMPLETED.value, output_key=item.output_key,
                                          report=dict(item.report)))
        for _, item in completions
        if item.name is not None
    ]
    done = [
        {"n": n, "image_id": item.image_id, "owner": item.owner, "name": item.name, "output_key": item.output_key,
         "report": item.report, "event": event.to_dict()}
        for n, ((_, item), event) in enumerate(zip(completions, events, strict=True), start=1)
    ]
    if not sql.jsonb_can_hold(rows) or not sql.jsonb_can_hold(done):
        return None
    parameters = {
        "group_batch": batch_id, "now": now, "starts": rows, "starts_n": len(rows),
        "decided_options": None if batch is None else batch.options, "completions": done, "completions_n": len(done),
    }
    return GroupValues(parameters, [candidates for _, _, candidates in planned], events)


def planned_starts(
    batches: Mapping[str, BatchRecord], starts: list[tuple[int, Start]]
) -> list[tuple[int, Start, tuple[str, ...]]] | None:
    """Each start with its result key candidates (the first is the one it is inserted with), decided
    from its batch in ``batches`` (as last found, not locked); None when one cannot be started so:
    its batch was not found or takes no uploads, no longer resolves it to its level, or two starts
    of the group would meet in a unique index (one key twice, or one first result key)."""
    planned: list[tuple[int, Start, tuple[str, ...]]] = []
    names: set[tuple[str, str]] = set()
    keys: set[str] = set()
    for n, start in starts:
        version = start.version
        batch = batches.get(version.batch_id)
        if batch is None or batch.state in ENDED or (start.level_holds is not None and not start.level_holds(batch)):
            return None
        candidates = tuple(start.candidates_for(batch))
        key = candidates[0] if candidates else None
        if (version.bucket, version.key) in names or (key is not None and key in keys):
            return None
        names.add((version.bucket, version.key))
        if key is not None:
            keys.add(key)
        planned.append((n, start, candidates))
    return planned


def _iso(when: datetime | None) -> str | None:
    """A timestamp as the statement's JSON carries it: ISO 8601 in UTC (a naive one is refused,
    as :class:`~db.models.UTCDateTime` refuses it)."""
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError("naive datetimes are not stored; pass a timezone-aware value")
    return when.astimezone(UTC).isoformat()


def group_rows(rows: Sequence[Any]) -> tuple[BatchRecord, dict[tuple[str, str], ImageRecord]]:
    """What :data:`~db.statements.WRITE_GROUP`'s rows say: the batch as the statement left it, and
    each new version by its (bucket, key)."""
    batch = batch_from_values({c: rows[0]._mapping[sql.GROUP_BATCH_PREFIX + c] for c in _BATCH_COLUMNS})
    images = (image_from_values({c: row._mapping[c] for c in _IMAGE_COLUMNS}) for row in rows
              if row._mapping["id"] is not None)
    return batch, {(image.bucket, image.key): image for image in images}
