"""The progress stream's messages: what a WebSocket or Server-Sent Events subscriber receives.

Every message is one JSON object with a ``kind``; WebSocket frames and SSE ``data:`` lines carry
the same text, so one client parser serves both transports.

``snapshot``
    Sent first when the client gave no ``since``: the batch as it stands, its ``counts``, its
    ``state``, one entry per current image (``name``, ``state``, ``output_key``, ``reason``,
    ``code``, ``report``) and ``last_seq``, the sequence number the snapshot reflects. Live
    events continue from ``last_seq + 1``.
``event``
    One progress event: the :class:`~photoenhance.contracts.progress.ProgressEvent` dictionary
    (``batch_id``, ``seq``, ``type``, ``time``, ``counts``, ``image``) plus ``"kind": "event"``.
    Events arrive in ``seq`` order with no gap and no repeat. The client remembers the last
    ``seq`` it processed and reconnects with ``since=<seq>`` (SSE: ``Last-Event-ID``) to receive
    exactly what it missed.
``heartbeat``
    ``{"kind": "heartbeat"}`` when nothing else was sent for ``WS_HEARTBEAT_S`` seconds, so
    browser code (which never sees WebSocket pings) can tell a quiet stream from a dead one.
    Over SSE the heartbeat is a comment line instead, which EventSource ignores.
``end``
    ``{"kind": "end", "reason": "batch_completed", "last_seq": N}``: the server has sent a
    ``batch.completed`` event and nothing newer exists, so the stream ends. A batch that later
    reopens (a new upload) is followed by reconnecting with ``since=N``. EventSource clients must
    call ``close()`` on ``end``, or the browser reconnects by itself.

WebSocket close codes are :class:`CloseCode`. A refused subscription never reaches the stream: it
is answered before the upgrade, exactly like an unknown batch (HTTP 404, ``batch_not_found``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import Enum, IntEnum
from typing import Any

from photoenhance.contracts.progress import BatchCounts, ImageProgress, ProgressEvent

__all__ = [
    "BATCH_NOT_FOUND",
    "CloseCode",
    "EndReason",
    "MessageKind",
    "encode",
    "end_message",
    "event_message",
    "heartbeat_message",
    "snapshot_message",
]

#: The error ``code`` of every refusal: unknown batch, wrong or missing token, malformed ``since``.
BATCH_NOT_FOUND = "batch_not_found"


class MessageKind(str, Enum):
    """The ``kind`` field of a stream message."""

    #: The batch as it stands, sent first when no ``since`` was given.
    SNAPSHOT = "snapshot"
    #: One progress event, in sequence order.
    EVENT = "event"
    #: Nothing to send for a while; the stream is alive.
    HEARTBEAT = "heartbeat"
    #: The stream is over (see :class:`EndReason`).
    END = "end"


class EndReason(str, Enum):
    """Why the server ended a stream with an ``end`` message."""

    #: ``batch.completed`` was sent and nothing newer exists.
    BATCH_COMPLETED = "batch_completed"
    #: ``batch.cancelled`` was sent: nothing will follow.
    BATCH_CANCELLED = "batch_cancelled"


class CloseCode(IntEnum):
    """WebSocket close codes the notifier uses."""

    #: After ``end``: the batch is complete.
    NORMAL = 1000
    #: The notifier is shutting down; reconnect (to any replica) with ``since``.
    GOING_AWAY = 1001
    #: Something failed inside the notifier; reconnect with ``since``.
    INTERNAL_ERROR = 1011
    #: The client fell more than ``WS_SEND_QUEUE_MAX`` events behind; reconnect with ``since``
    #: set to the last ``seq`` it processed (the replay then comes from the database).
    TOO_SLOW = 4008


def snapshot_message(
    *,
    batch_id: str,
    state: str,
    counts: BatchCounts,
    last_seq: int,
    images: Iterable[ImageProgress],
) -> dict[str, Any]:
    """The ``snapshot`` message."""
    return {
        "kind": MessageKind.SNAPSHOT.value,
        "batch_id": batch_id,
        "state": state,
        "last_seq": last_seq,
        "counts": {
            "total": counts.total,
            "completed": counts.completed,
            "failed": counts.failed,
            "expected": counts.expected,
            "cancelled": counts.cancelled,
        },
        "images": [
            {
                "name": image.name,
                "state": image.state,
                "output_key": image.output_key,
                "reason": image.reason,
                "code": image.code,
                "report": image.report,
            }
            for image in images
        ],
    }


def event_message(event: ProgressEvent) -> dict[str, Any]:
    """The ``event`` message for one progress event."""
    return {"kind": MessageKind.EVENT.value, **event.to_dict()}


def heartbeat_message() -> dict[str, Any]:
    """The ``heartbeat`` message."""
    return {"kind": MessageKind.HEARTBEAT.value}


def end_message(reason: EndReason, last_seq: int) -> dict[str, Any]:
    """The ``end`` message."""
    return {"kind": MessageKind.END.value, "reason": reason.value, "last_seq": last_seq}


def encode(message: dict[str, Any]) -> str:
    """The wire text of a message (compact JSON, UTF-8 kept as is)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
