"""One subscriber's stream: the seam between the database replay and live events.

The order of operations is what makes the stream exact:

1. The caller subscribes first (:meth:`notifier.hub.Hub.subscribe`): the batch is bound on the
   progress exchange and live events start collecting in this subscriber's :class:`Inbox`.
2. Only then :func:`pump` reads the database: a snapshot (which carries ``last_seq``) or the
   events after ``since``. Whatever is committed after that read reaches the inbox, because the
   processor publishes after its commit and the binding already exists.
3. Live events are taken from the inbox through a :class:`Sequencer`: numbers already sent are
   dropped (the replay overlapped them, or the broker delivered a duplicate), the next number is
   sent, and a jump ahead means something was missed (a lost publish, a broker reconnect), so the
   missing range is read from the database instead of trusting the broker.

The database is the only source of truth; the inbox is an optimisation that makes events arrive
the moment they are committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from db.records import BatchRecord, BatchSnapshot
from db.repository import Repository
from photoenhance.contracts.progress import EventType, ProgressEvent
from photoenhance.contracts.progress_stream import (
    EndReason,
    MessageKind,
    encode,
    end_message,
    event_message,
    heartbeat_message,
    snapshot_message,
)
from photoenhance.contracts.states import BatchState

__all__ = [
    "CATCH_UP",
    "BatchGone",
    "ClientGone",
    "Inbox",
    "LiveEvent",
    "Observer",
    "Outcome",
    "Outgoing",
    "Sequencer",
    "Sink",
    "Verdict",
    "pump",
    "send_or_gone",
    "supervise",
]

log = logging.getLogger(__name__)

#: Events read from the database per query while replaying or catching up.
REPLAY_PAGE_SIZE = 500


class ClientGone(Exception):
    """The subscriber's connection closed while we were writing to it."""


class BatchGone(Exception):
    """The batch disappeared from the database after the subscription was authorised."""


@dataclass(frozen=True)
class LiveEvent:
    """An event as the hub hands it to every subscriber of its batch (encoded once per process)."""

    seq: int
    type: EventType
    #: The ``event`` message's wire form (UTF-8 JSON).
    data: bytes

    @classmethod
    def of(cls, event: ProgressEvent) -> LiveEvent:
        """Wrap an event, encoding its message once for every subscriber."""
        return cls(seq=event.seq, type=event.type, data=_wire(event_message(event)))


def _wire(message: dict[str, object]) -> bytes:
    """A message's wire form: the contract's JSON text, UTF-8 encoded."""
    return encode(message).encode()


class _CatchUp:
    """Marker put in an inbox after a broker reconnect: events may have been lost in between."""

    def __repr__(self) -> str:
        return "CATCH_UP"


#: Tells :func:`pump` to read the database for anything the broker may have dropped.
CATCH_UP = _CatchUp()


class Inbox:
    """A subscriber's bounded buffer of live events.

    The hub never waits for a subscriber: :meth:`deliver` either queues the event or, when the
    subscriber is ``maxsize`` events behind, marks it as overflowed, after which the connection is
    closed and the client resumes from the database with ``since``.
    """

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[LiveEvent | _CatchUp] = asyncio.Queue(maxsize=max(1, maxsize))
        #: Set once an event could not be queued; nothing is queued after that.
        self.overflowed = asyncio.Event()

    def deliver(self, item: LiveEvent | _CatchUp) -> None:
        """Queue an event (or the catch-up marker) without waiting."""
        if self.overflowed.is_set():
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed.set()

    def empty(self) -> bool:
        """Whether nothing is waiting."""
        return self._queue.empty()

    async def get(self, timeout: float) -> LiveEvent | _CatchUp | None:
        """The next item, or None after ``timeout`` seconds without one."""
        # A busy stream mostly finds something waiting; asyncio.timeout (unlike wait_for) adds
        # no task per call for the rest. Hundreds of clients wait here at once.
        if not self._queue.empty():
            return self._queue.get_nowait()
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None


class Verdict(Enum):
    """What to do with an event a subscriber is offered."""

    #: Its number was already sent: drop it.
    SEEN = "seen"
    #: It is the next number: send it.
    NEXT = "next"
    #: Numbers are missing before it: read them from the database first.
    GAP = "gap"


class Sequencer:
    """Remembers the last sequence number sent to one subscriber and judges each new one."""

    def __init__(self, last_sent: int) -> None:
        self.last_sent = last_sent

    def judge(self, seq: int) -> Verdict:
        """Whether ``seq`` is old, next, or beyond a gap."""
        if seq <= self.last_sent:
            return Verdict.SEEN
        if seq == self.last_sent + 1:
            return Verdict.NEXT
        return Verdict.GAP

    def sent(self, seq: int) -> None:
        """Record that ``seq`` went out (it must have been judged NEXT)."""
        if seq != self.last_sent + 1:
            raise ValueError(f"sequence {seq} sent after {self.last_sent}")
        self.last_sent = seq


@dataclass(frozen=True)
class Outgoing:
    """One message ready for a transport."""

    kind: MessageKind
    #: The message as UTF-8 JSON.
    data: bytes
    #: The sequence number a client resumes from after this message (events and snapshots).
    seq: int | None = None


class Sink(Protocol):
    """A transport's way to write one message; raises :class:`ClientGone` if the peer left."""

    async def send(self, message: Outgoing) -> None: ...


class Observer(Protocol):
    """Where a stream reports what it did (metrics)."""

    def sent(self, kind: MessageKind, source: str) -> None:
        """A message went out; ``source`` is ``replay`` or ``live`` for events."""

    def caught_up(self, reason: str) -> None:
        """The database was read because of ``reason`` (``gap`` or ``reconnect``)."""


class _NullObserver:
    def sent(self, kind: MessageKind, source: str) -> None:
        pass

    def caught_up(self, reason: str) -> None:
        pass


class _Stream:
    """The state of one running :func:`pump`."""

    def __init__(
        self, batch_id: str, repository: Repository, sink: Sink, observer: Observer, page_size: int
    ) -> None:
        self.batch_id = batch_id
        self.repository = repository
        self.sink = sink
        self.observer = observer
        self.page_size = page_size
        self.sequencer = Sequencer(0)
        #: Whether the last thing sent says the batch is complete (or cancelled: ended either way).
        self.completed = False
        #: Whether it ended by being cancelled (the ``end`` message says which).
        self.cancelled = False

    async def send_event(self, seq: int, type: EventType, data: bytes, source: str) -> None:
        await self.sink.send(Outgoing(MessageKind.EVENT, data, seq))
        self.sequencer.sent(seq)
        self.completed = type in (EventType.BATCH_COMPLETED, EventType.BATCH_CANCELLED)
        self.cancelled = type is EventType.BATCH_CANCELLED
        self.observer.sent(MessageKind.EVENT, source)

    async def replay(self) -> None:
        """Send every event in the database after the last one sent, page by page."""
        while True:
            events = await self.repository.events_since(
                self.batch_id, self.sequencer.last_sent, limit=self.page_size
            )
            for event in events:
                # The log is gapless, but never send out of order even if it were not.
                if self.sequencer.judge(event.seq) is not Verdict.NEXT:
                    log.error(
                        "batch %s: event log jumps to %d after %d",
                        self.batch_id,
                        event.seq,
                        self.sequencer.last_sent,
                    )
                    return
                await self.send_event(event.seq, event.type, _wire(event_message(event)), "replay")
            if len(events) < self.page_size:
                return

    async def snapshot(self) -> None:
        """Send the batch as it stands; live events continue after its ``last_seq``."""
        snap = await self.repository.batch_snapshot(self.batch_id)
        if snap is None:
            raise BatchGone(self.batch_id)
        batch = snap.batch
        # Every image of the batch goes into this one message: for 1,000 images, building and
        # encoding it is tens of milliseconds of CPU, done on a worker thread so the event loop
        # keeps serving every other stream (and /healthz) meanwhile.
        data = await asyncio.to_thread(_snapshot_wire, snap)
        await self.sink.send(Outgoing(MessageKind.SNAPSHOT, data, batch.last_seq))
        self.observer.sent(MessageKind.SNAPSHOT, "replay")
        self.sequencer = Sequencer(batch.last_seq)
        self.completed = batch.state in (BatchState.COMPLETED, BatchState.CANCELLED)
        self.cancelled = batch.state is BatchState.CANCELLED

    async def live(self, inbox: Inbox, heartbeat_s: float) -> None:
        """Send live events until the batch is complete with nothing newer waiting."""
        while not (self.completed and inbox.empty()):
            item = await inbox.get(heartbeat_s)
            if item is None:
                await self.sink.send(Outgoing(MessageKind.HEARTBEAT, _wire(heartbeat_message())))
                self.observer.sent(MessageKind.HEARTBEAT, "live")
            elif isinstance(item, _CatchUp):
                self.observer.caught_up("reconnect")
                await self.replay()
            else:
                verdict = self.sequencer.judge(item.seq)
                if verdict is Verdict.GAP:
                    # The broker skipped something (or a publish was lost): the database has it.
                    self.observer.caught_up("gap")
                    await self.replay()
                    verdict = self.sequencer.judge(item.seq)
                if verdict is Verdict.NEXT:
                    await self.send_event(item.seq, item.type, item.data, "live")
                elif verdict is Verdict.GAP:
                    log.error("batch %s: event %d is not in the database yet", self.batch_id, item.seq)
        last = self.sequencer.last_sent
        reason = EndReason.BATCH_CANCELLED if self.cancelled else EndReason.BATCH_COMPLETED
        await self.sink.send(Outgoing(MessageKind.END, _wire(end_message(reason, last))))
        self.observer.sent(MessageKind.END, "live")


def _snapshot_wire(snap: BatchSnapshot) -> bytes:
    """The ``snapshot`` message of ``snap``, encoded (pure; runs on a worker thread)."""
    batch = snap.batch
    return _wire(
        snapshot_message(
            batch_id=batch.id,
            state=batch.state.value,
            counts=batch.counts,
            last_seq=batch.last_seq,
            images=[image.progress() for image in snap.images],
        )
    )


async def pump(
    *,
    batch: BatchRecord,
    since: int | None,
    repository: Repository,
    inbox: Inbox,
    sink: Sink,
    heartbeat_s: float,
    observer: Observer | None = None,
    page_size: int = REPLAY_PAGE_SIZE,
) -> None:
    """Run one subscriber's stream until the batch is complete (then it returns).

    ``inbox`` must already be subscribed (see the module docstring). ``batch`` is the record the
    subscription was authorised with; ``since`` the client's position, or None for a snapshot.
    Raises :class:`ClientGone` when the peer leaves and :class:`BatchGone` if the batch vanished.
    """
    stream = _Stream(batch.id, repository, sink, observer or _NullObserver(), page_size)
    if since is None:
        await stream.snapshot()
    else:
        stream.sequencer = Sequencer(since)
        # Already complete at the client's position: nothing will follow unless the batch reopens,
        # which the replay below would find.
        stream.completed = batch.state in (BatchState.COMPLETED, BatchState.CANCELLED) and batch.last_seq == since
        stream.cancelled = batch.state is BatchState.CANCELLED
        await stream.replay()
    await stream.live(inbox, heartbeat_s)


class Outcome(Enum):
    """How a supervised stream ended, which decides how the connection is closed."""

    #: The batch is complete and the ``end`` message was sent.
    COMPLETED = "completed"
    #: The client fell too far behind (its inbox overflowed).
    TOO_SLOW = "too_slow"
    #: The client closed the connection.
    CLIENT_GONE = "client_gone"
    #: The notifier is shutting down.
    SHUTDOWN = "shutdown"
    #: The stream failed (database error, batch deleted): the client should reconnect later.
    ERROR = "error"


async def supervise(
    stream: Awaitable[None],
    *,
    inbox: Inbox,
    stopping: asyncio.Event,
    client_closed: Awaitable[None] | None = None,
) -> Outcome:
    """Run ``stream`` until it ends, the inbox overflows, the client leaves or the server stops.

    A blocked write to a slow client cannot notice the overflow by itself, so the stream runs as
    its own task and is cancelled from here.
    """
    stream_task = asyncio.ensure_future(stream)
    watchers: dict[asyncio.Future[object], Outcome] = {
        asyncio.ensure_future(inbox.overflowed.wait()): Outcome.TOO_SLOW,
        asyncio.ensure_future(stopping.wait()): Outcome.SHUTDOWN,
    }
    if client_closed is not None:
        watchers[asyncio.ensure_future(client_closed)] = Outcome.CLIENT_GONE
    try:
        await asyncio.wait([stream_task, *watchers], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stream_task, *watchers):
            task.cancel()
        await asyncio.gather(stream_task, *watchers, return_exceptions=True)
    if stream_task.done() and not stream_task.cancelled():
        error = stream_task.exception()
        if error is None:
            return Outcome.COMPLETED
        if isinstance(error, ClientGone):
            return Outcome.CLIENT_GONE
        log.error("stream failed", exc_info=error)
        return Outcome.ERROR
    for watcher, outcome in watchers.items():
        if watcher.done() and not watcher.cancelled():
            return outcome
    return Outcome.ERROR


async def send_or_gone(write: Callable[[], Awaitable[object]]) -> None:
    """Run a transport write, turning the ways a vanished peer shows up into :class:`ClientGone`."""
    try:
        await write()
    except (ConnectionError, RuntimeError) as exc:
        # aiohttp raises ClientConnectionResetError (a ConnectionResetError) on a closed transport
        # and RuntimeError for a write after the response or WebSocket was closed.
        raise ClientGone(str(exc)) from exc

