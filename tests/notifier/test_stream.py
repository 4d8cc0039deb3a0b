"""The replay/live seam, against a real database: ordering, dedupe, gaps, catch-up, the end rule."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from db.repository import Repository
from harness.progress import finish, seed_batch
from notifier.stream import (
    CATCH_UP,
    ClientGone,
    Inbox,
    LiveEvent,
    Outcome,
    Outgoing,
    Sequencer,
    Verdict,
    pump,
    supervise,
)
from photoenhance.contracts.progress import EventType, ProgressEvent
from photoenhance.contracts.progress_stream import MessageKind


class RecordingSink:
    """Keeps what the stream sends."""

    def __init__(self) -> None:
        self.messages: list[Outgoing] = []

    async def send(self, message: Outgoing) -> None:
        self.messages.append(message)

    def event_seqs(self) -> list[int]:
        return [json.loads(m.data)["seq"] for m in self.messages if m.kind is MessageKind.EVENT]

    def kinds(self) -> list[str]:
        return [m.kind.value for m in self.messages]


class RecordingObserver:
    def __init__(self) -> None:
        self.catch_ups: list[str] = []

    def sent(self, kind: MessageKind, source: str) -> None:
        pass

    def caught_up(self, reason: str) -> None:
        self.catch_ups.append(reason)


def live(events: list[ProgressEvent]) -> list[LiveEvent]:
    return [LiveEvent.of(e) for e in events]


class Harness:
    """A pump running over a real repository, with its inbox, sink and observer at hand."""

    def __init__(self, inbox: Inbox | None = None) -> None:
        self.inbox = inbox or Inbox(100)
        self.sink = RecordingSink()
        self.observer = RecordingObserver()
        self.task: asyncio.Task[None] | None = None

    async def start(self, repository: Repository, batch_id: str, since: int | None, **options: Any) -> Harness:
        record = await repository.get_batch(batch_id)
        assert record is not None
        self.task = asyncio.create_task(
            pump(
                batch=record,
                since=since,
                repository=repository,
                inbox=self.inbox,
                sink=self.sink,
                heartbeat_s=options.pop("heartbeat_s", 30),
                observer=self.observer,
                **options,
            )
        )
        return self

    async def finished(self) -> RecordingSink:
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)
        return self.sink


def test_sequencer_judges_old_next_and_gap() -> None:
    seq = Sequencer(3)
    assert [seq.judge(n) for n in (2, 3, 4, 5)] == [Verdict.SEEN, Verdict.SEEN, Verdict.NEXT, Verdict.GAP]
    seq.sent(4)
    assert seq.judge(5) is Verdict.NEXT
    with pytest.raises(ValueError):
        seq.sent(7)


async def test_inbox_overflows_instead_of_waiting() -> None:
    inbox = Inbox(2)
    for n in (1, 2, 3, 4):
        inbox.deliver(LiveEvent(seq=n, type=EventType.IMAGE_COMPLETED, data=b"{}"))
    assert inbox.overflowed.is_set()
    assert [(await inbox.get(0.1)).seq for _ in range(2)] == [1, 2]  # type: ignore[union-attr]
    assert await inbox.get(0.01) is None


async def test_live_events_overlapping_the_replay_are_sent_once_in_order(repository: Repository) -> None:
    batch = await seed_batch(repository, "seam", 4)
    early = []
    for image_id in batch.image_ids[:2]:
        early += await finish(repository, image_id)
    inbox = Inbox(100)
    # Subscribed before the replay: the first two arrive live too (and one twice, as a redelivery would).
    for item in live(early) + live(early[:1]):
        inbox.deliver(item)
    harness = await Harness(inbox).start(repository, "seam", since=0)
    late = []
    for image_id in batch.image_ids[2:]:
        events = await finish(repository, image_id)
        late += events
        for item in live(events) + live(events):
            inbox.deliver(item)
    sink = await harness.finished()
    assert sink.event_seqs() == [1, 2, 3, 4, 5]
    assert sink.kinds()[-1] == "end" and json.loads(sink.messages[-1].data)["last_seq"] == 5
    assert late[-1].type.value == "batch.completed"


async def test_a_gap_in_live_events_is_filled_from_the_database(repository: Repository) -> None:
    batch = await seed_batch(repository, "gap2", 3)
    harness = await Harness().start(repository, "gap2", since=0)
    first = await finish(repository, batch.image_ids[0])
    second = await finish(repository, batch.image_ids[1])
    harness.inbox.deliver(LiveEvent.of(second[0]))  # the first publish was lost
    for item in live(await finish(repository, batch.image_ids[2])):
        harness.inbox.deliver(item)
    assert (await harness.finished()).event_seqs() == [1, 2, 3, 4]
    assert harness.observer.catch_ups == ["gap"]
    assert first[0].seq == 1


async def test_catch_up_marker_replays_what_the_broker_dropped(repository: Repository) -> None:
    batch = await seed_batch(repository, "recon", 2)
    harness = await Harness().start(repository, "recon", since=0)
    for image_id in batch.image_ids:
        await finish(repository, image_id)  # committed while "the broker was down": nothing published
    harness.inbox.deliver(CATCH_UP)
    assert (await harness.finished()).event_seqs() == [1, 2, 3]
    assert harness.observer.catch_ups == ["reconnect"]


async def test_snapshot_of_a_completed_batch_ends_the_stream(repository: Repository) -> None:
    batch = await seed_batch(repository, "done", 2)
    await finish(repository, batch.image_ids[0])
    await finish(repository, batch.image_ids[1], fail=True)
    sink = await (await Harness().start(repository, "done", since=None)).finished()
    assert sink.kinds() == ["snapshot", "end"]
    snapshot = json.loads(sink.messages[0].data)
    assert snapshot["last_seq"] == 3 and snapshot["state"] == "completed"
    assert snapshot["counts"] == {"total": 2, "completed": 1, "failed": 1, "expected": 2, "cancelled": 0}
    assert [(i["name"], i["state"], i["code"]) for i in snapshot["images"]] == [
        ("img000.jpg", "completed", None),
        ("img001.jpg", "failed", "not_an_image"),
    ]
    assert sink.messages[0].seq == 3


@pytest.mark.parametrize(("since", "expected"), [(3, []), (1, [2, 3]), (0, [1, 2, 3])])
async def test_since_on_a_completed_batch_replays_then_ends(
    repository: Repository, since: int, expected: list[int]
) -> None:
    batch = await seed_batch(repository, "done2", 2)
    for image_id in batch.image_ids:
        await finish(repository, image_id)
    sink = await (await Harness().start(repository, "done2", since=since)).finished()
    assert sink.event_seqs() == expected
    assert sink.kinds()[-1] == "end"


async def test_replay_reads_in_pages(repository: Repository) -> None:
    batch = await seed_batch(repository, "pages", 5)
    for image_id in batch.image_ids:
        await finish(repository, image_id)
    sink = await (await Harness().start(repository, "pages", since=0, page_size=2)).finished()
    assert sink.event_seqs() == [1, 2, 3, 4, 5, 6]


async def test_an_idle_stream_sends_heartbeats(repository: Repository) -> None:
    await seed_batch(repository, "idle", 1)
    harness = await Harness().start(repository, "idle", since=None, heartbeat_s=0.05)
    while harness.sink.kinds().count("heartbeat") < 2:
        await asyncio.sleep(0.05)
    assert harness.task is not None
    harness.task.cancel()
    assert harness.sink.kinds()[0] == "snapshot"


async def test_supervise_reports_how_the_stream_ended() -> None:
    never = asyncio.Event()

    async def blocked() -> None:
        await never.wait()

    async def gone() -> None:
        raise ClientGone("reset")

    async def done() -> None:
        return None

    overflowing = Inbox(1)
    overflowing.deliver(CATCH_UP)
    overflowing.deliver(CATCH_UP)
    stopping = asyncio.Event()
    assert await supervise(blocked(), inbox=overflowing, stopping=stopping) is Outcome.TOO_SLOW
    assert await supervise(gone(), inbox=Inbox(1), stopping=stopping) is Outcome.CLIENT_GONE
    assert await supervise(done(), inbox=Inbox(1), stopping=stopping) is Outcome.COMPLETED
    assert await supervise(blocked(), inbox=Inbox(1), stopping=stopping, client_closed=done()) is Outcome.CLIENT_GONE
    stopping.set()
    assert await supervise(blocked(), inbox=Inbox(1), stopping=stopping) is Outcome.SHUTDOWN


async def test_the_snapshot_is_built_and_encoded_off_the_event_loop(
    repository: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: a 1,000-image snapshot took the notifier's loop from 1.3 to 87 ms per request.

    A spy around the real ``snapshot_message`` notes the thread it runs on.
    """
    import threading

    import notifier.stream as stream_module

    threads: list[int] = []
    real = stream_module.snapshot_message

    def spy(**kwargs: Any) -> dict[str, Any]:
        threads.append(threading.get_ident())
        return real(**kwargs)

    monkeypatch.setattr(stream_module, "snapshot_message", spy)
    batch = await seed_batch(repository, "offloop", 3)
    for image_id in batch.image_ids:
        await finish(repository, image_id)
    sink = await (await Harness().start(repository, "offloop", since=None)).finished()
    assert sink.kinds() == ["snapshot", "end"]
    assert len(json.loads(sink.messages[0].data)["images"]) == 3
    assert len(threads) == 1 and threads[0] != threading.get_ident()
