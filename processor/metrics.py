"""The worker's Prometheus metrics, in a registry of its own (so tests can run several workers).

Exposed at ``/metrics`` by :mod:`processor.health`. Names and labels:

- ``photoenhance_images_processed_total``: results stored and recorded;
- ``photoenhance_images_failed_total{code}``: images failed for good, by failure code;
- ``photoenhance_retries_total{reason}``: announcements put back for later (a transient failure
  code, or ``deferred`` when another worker held the image);
- ``photoenhance_messages_total{outcome}``: messages handled, by what became of them;
- ``photoenhance_in_flight``: messages being handled now;
- ``photoenhance_routed_total{level}``: announced objects this worker queued at a level;
- ``photoenhance_waiting_for_worker{level}``: images of open batches pending at a level no live worker
  serves, as this worker's last reconciler pass counted them (every level is exported, 0 when none wait);
- ``photoenhance_microbatch_size``: images per engine call;
- ``photoenhance_step_seconds{step}``: time per step (fetch, decode, enhance, encode, store, commit, publish);
- ``photoenhance_upload_to_result_seconds``: from the store accepting the upload to the result's commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from photoenhance.contracts.options import Quality

__all__ = ["ProcessorMetrics"]

#: Buckets for per-step and end-to-end times, in seconds (CPU runs of ``best`` take minutes).
TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ProcessorMetrics:
    """One worker's counters, gauges and histograms."""

    def __init__(self, max_batch: int = 4) -> None:
        self.registry = CollectorRegistry()
        self.processed = Counter(
            "photoenhance_images_processed", "Images whose result is stored and recorded.", registry=self.registry
        )
        self.failed = Counter(
            "photoenhance_images_failed", "Images failed for good.", ["code"], registry=self.registry
        )
        self.retried = Counter(
            "photoenhance_retries", "Announcements put back for a later attempt.", ["reason"], registry=self.registry
        )
        self.messages = Counter(
            "photoenhance_messages", "Messages handled, by outcome.", ["outcome"], registry=self.registry
        )
        self.routed = Counter(
            "photoenhance_routed", "Announced objects queued at their level.", ["level"], registry=self.registry
        )
        self.waiting_for_worker = Gauge(
            "photoenhance_waiting_for_worker",
            "Images pending at a level no live worker serves (last reconciler pass).",
            ["level"],
            registry=self.registry,
        )
        self.in_flight = Gauge("photoenhance_in_flight", "Messages being handled now.", registry=self.registry)
        self.batch_size = Histogram(
            "photoenhance_microbatch_size",
            "Images per engine call.",
            buckets=tuple(range(1, max(max_batch, 1) + 1)),
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "photoenhance_step_seconds", "Time per processing step.", ["step"], buckets=TIME_BUCKETS,
            registry=self.registry,
        )
        self.upload_to_result = Histogram(
            "photoenhance_upload_to_result_seconds",
            "From the upload to the committed result.",
            buckets=TIME_BUCKETS,
            registry=self.registry,
        )

    def set_waiting(self, by_level: Mapping[str, int]) -> None:
        """Set the waiting-for-worker gauge of every level from one reconciler pass's counts.

        Every known level is set, so a level whose images stopped waiting drops to 0 rather than
        keeping its last count.
        """
        for level in Quality:
            self.waiting_for_worker.labels(level.value).set(by_level.get(level.value, 0))

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step of the pipeline."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.step_seconds.labels(name).observe(time.perf_counter() - started)
