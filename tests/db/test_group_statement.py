"""Which groups the worker's path can write as one statement, decided before any I/O
(``db.group_statement``): pure functions, no database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from db.group_items import Completion, Start
from db.group_statement import group_values, planned_starts
from db.records import BatchRecord, ImageVersion
from photoenhance.contracts.states import BatchState

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
BATCH = BatchRecord(
    id="b1", state=BatchState.OPEN, source="api", input_bucket="in", options={"quality": "fast"}, expected_count=None,
    token_hash=None, total=0, completed=0, failed=0, last_seq=0, created_at=NOW, updated_at=NOW, last_upload_at=None,
    completed_at=None, quota_subject=None,
)


def start(name: str, *candidates: str, batch: str = "b1") -> Start:
    version = ImageVersion(bucket="in", batch_id=batch, key=f"{batch}/{name}", name=name, etag="e", size=1,
                           uploaded_at=NOW)
    return Start(version, "w1", 60, lambda _batch: list(candidates or (f"{batch}/out/{name}",)))


def done(image_id: int, name: str | None = "a.jpg", batch: str | None = "b1") -> Completion:
    return Completion(image_id, "w1", f"b1/out/{name}", {"faces": 1}, batch, name)


def test_a_group_of_one_remembered_batch_becomes_the_statements_parameters() -> None:
    values = group_values({"b1": BATCH}, [(0, start("a.jpg")), (2, start("b.jpg"))], [(1, done(7))], NOW)
    assert values is not None
    p = values.parameters
    assert (p["group_batch"], p["starts_n"], p["completions_n"], p["decided_options"]) == ("b1", 2, 1, {"quality": "fast"})
    assert [(s["n"], s["key"], s["output_key"]) for s in p["starts"]] == [(1, "b1/a.jpg", "b1/out/a.jpg"),
                                                                        (2, "b1/b.jpg", "b1/out/b.jpg")]
    assert p["starts"][0]["lease_until"] == "2026-12-05T09:01:00+00:00"
    (event,) = values.events
    assert p["completions"] == [{"n": 1, "image_id": 7, "owner": "w1", "name": "a.jpg", "output_key": "b1/out/a.jpg",
                                 "report": {"faces": 1}, "event": event.to_dict()}]
    assert event.image is not None and (event.image.name, event.image.state, event.seq) == ("a.jpg", "completed", 0)
    assert values.candidates == [("b1/out/a.jpg",), ("b1/out/b.jpg",)]


@pytest.mark.parametrize(
    ("remembered", "starts", "completions"),
    [
        ({"b1": BATCH}, [(0, start("a.jpg")), (1, start("a.jpg", batch="b2"))], []),  # two batches
        ({"b1": BATCH}, [(0, start("a.jpg"))], [(1, done(7, batch="b2"))]),  # a completion of another
        ({"b1": BATCH}, [], [(0, done(7, name=None))]),  # a completion without its name
        ({"b1": BATCH}, [], [(0, done(7, batch=None))]),  # or without its batch
        ({}, [(0, start("a.jpg"))], []),  # the batch never found
        ({"b1": replace(BATCH, state=BatchState.CANCELLING)}, [(0, start("a.jpg"))], []),  # takes no uploads
        ({"b1": BATCH}, [(0, start("a.jpg")), (1, start("a.jpg"))], []),  # one key twice
        ({"b1": BATCH}, [(0, start("a.jpg", "b1/x")), (1, start("b.jpg", "b1/x"))], []),  # one result key twice
        ({"b1": BATCH}, [(0, start("a\x00.jpg"))], []),  # what jsonb cannot hold
    ],
)
def test_a_group_the_statement_cannot_take_goes_the_general_way(remembered, starts, completions) -> None:  # noqa: ANN001
    assert group_values(remembered, starts, completions, NOW) is None


def test_completions_alone_need_no_remembered_batch() -> None:
    values = group_values({}, [], [(0, done(7)), (1, done(8, name="b.jpg"))], NOW)
    assert values is not None and values.parameters["starts"] == [] and values.parameters["completions_n"] == 2


def test_a_start_whose_level_no_longer_holds_is_not_planned() -> None:
    moved = replace(start("a.jpg"), level_holds=lambda _batch: False)
    assert planned_starts({"b1": BATCH}, [(0, moved)]) is None
    kept = start("a.jpg", "b1/1", "b1/2")
    assert planned_starts({"b1": BATCH}, [(3, kept)]) == [(3, kept, ("b1/1", "b1/2"))]
