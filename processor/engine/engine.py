"""The :class:`Engine`: models loaded once, micro-batches of images in, results and reports out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from photoenhance.contracts.options import Quality
from photoenhance.settings import Settings
from processor.engine.allocator import keep_large_buffers
from processor.engine.errors import EngineClosed, ImageError
from processor.engine.fast import FastPipeline
from processor.engine.records import EnhanceRequest, EnhanceResult
from processor.engine.runner import InferenceThread
from processor.engine.version import ENGINE_VERSION

__all__ = ["ENGINE_VERSION", "Engine"]

log = logging.getLogger(__name__)


class Steps(Protocol):
    """What the engine runs: :class:`~processor.engine.batch_steps.Pipeline` (the network levels,
    with torch) or :class:`~processor.engine.fast.FastPipeline` (``fast`` alone, without)."""

    device: Any
    qualities: frozenset[Quality]

    def run(self, requests: Sequence[EnhanceRequest]) -> list[EnhanceResult | ImageError]: ...

    def release(self) -> None: ...


class Engine:
    """Enhances micro-batches of decoded images with resident models.

    Build one with :meth:`load`; call :meth:`enhance_batch` (blocking) or
    :meth:`enhance_batch_async` (from an event loop) as often as needed; :meth:`close` at the end.
    Async callers' inference runs on one dedicated thread, in submission order, so the event loop
    never blocks; a blocking caller runs it on its own thread, since it waits either way (and torch
    on the CPU ran ~10 % slower on a second thread than on the main one here). One lock keeps
    every run one at a time whichever thread it is on.
    """

    def __init__(self, pipeline: Steps, *, qualities: frozenset[Quality]) -> None:
        self._pipeline = pipeline
        self.qualities = qualities
        self._thread = InferenceThread()
        self._one_at_a_time = threading.Lock()
        self._closed = threading.Event()

    @classmethod
    def load(
        cls,
        settings: Settings,
        *,
        qualities: Iterable[Quality] | None = None,
        background: str | None = None,
    ) -> Engine:
        """Verify and load what ``qualities`` (default: all) need, from ``settings.weights_dir``.

        ``fast`` needs no weight file at all, and an engine for ``fast`` alone does not even import
        torch. ``background`` picks the background model by name (see
        :mod:`processor.engine.weights`); by default the official x2plus, else a converted one.
        Raises :class:`~processor.engine.errors.WeightsError` naming any missing or altered file.
        """
        wanted = frozenset(Quality(q) for q in (qualities if qualities is not None else Quality))
        pipeline: Steps
        if wanted == FastPipeline.qualities:
            pipeline = FastPipeline()
        else:
            from processor.engine.batch_steps import Pipeline  # torch: only for the network levels
            from processor.engine.device import resolve_device
            from processor.engine.device_path import DevicePipeline, choose_path

            # Before the inference thread exists (its first allocation picks its arena), and only
            # for torch's big buffers: a fast-only worker keeps glibc's defaults.
            keep_large_buffers()
            path = choose_path(settings.engine_path, resolve_device(settings.device))
            steps = DevicePipeline if path == "device" else Pipeline
            pipeline = steps.build(settings, wanted, background=background)
        log.info("engine %s ready: qualities=%s device=%s", ENGINE_VERSION, sorted(q.value for q in wanted),
                 pipeline.device)
        return cls(pipeline, qualities=wanted)

    @property
    def device(self) -> str:
        """The torch device inference runs on (``"cpu"``, ``"cuda:0"`` ...)."""
        return str(self._pipeline.device)

    def enhance_batch(self, requests: Sequence[EnhanceRequest]) -> list[EnhanceResult | ImageError]:
        """Enhance one micro-batch; each slot holds a result or that image's :class:`ImageError`."""
        self._check_open()
        return self._run(list(requests))

    async def enhance_batch_async(self, requests: Sequence[EnhanceRequest]) -> list[EnhanceResult | ImageError]:
        """:meth:`enhance_batch` on the inference thread, awaited without blocking the event loop."""
        self._check_open()
        items = list(requests)
        return await self._thread.call_async(lambda: self._run(items))

    def _run(self, items: list[EnhanceRequest]) -> list[EnhanceResult | ImageError]:
        with self._one_at_a_time:
            return self._pipeline.run(items)

    def close(self) -> None:
        """Finish work in progress, stop the inference thread and free the models."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.close()
        with self._one_at_a_time:  # a blocking caller's run may still be going
            self._pipeline.release()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise EngineClosed("the engine is closed")
