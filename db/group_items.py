"""What the worker's path writes in its shared transactions: a start, a completion (one home for
both, which :mod:`db.worker_path` groups and :mod:`db.group_statement` turns into one statement)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from db.records import BatchRecord, ImageVersion
from photoenhance.contracts.states import BatchState

__all__ = ["ENDED", "Completion", "Start"]

#: States of a batch in which a new upload is not processed.
ENDED = (BatchState.CANCELLING, BatchState.CANCELLED)


@dataclass(frozen=True)
class Start:
    """One version to start (:meth:`db.worker_path.WorkerPath.start_image`)."""

    version: ImageVersion
    owner: str
    lease_seconds: float
    candidates_for: Callable[[BatchRecord], Sequence[str]]
    #: Whether the batch, as locked, still resolves the version to its level (None: not asked).
    level_holds: Callable[[BatchRecord], bool] | None = None


@dataclass(frozen=True)
class Completion:
    """One stored result to record (:meth:`db.worker_path.WorkerPath.complete_image`)."""

    image_id: int
    owner: str
    output_key: str
    report: dict[str, Any]
    #: The image's batch when the caller knows it (saves a read); checked by the update.
    batch_id: str | None = None
    #: The image's name when the caller knows it (its event can then be built before the update,
    #: which checks it: :data:`~db.statements.WRITE_GROUP`).
    name: str | None = None
