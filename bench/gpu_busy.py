"""How busy the GPU was over a stretch of code: NVML's utilisation, sampled from a thread.

NVML reports, per read, the share of its last sample period (1/6 s to 1 s, by driver) in which
one or more kernels ran. Reads every ``interval`` seconds while the block runs, averaged, answer
the device check's "GPU busy >= 80 %" question for the sweep's timed calls. On the CPU, or where
NVML cannot be read (``torch.cuda.utilization`` needs the nvidia-ml-py package), the share is
None and ``why`` says so: a missing figure, never a made-up one.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import torch

__all__ = ["GpuBusy"]


class GpuBusy:
    """``with GpuBusy(device) as busy: ...``; then ``busy.summary()``."""

    def __init__(self, device: torch.device, interval: float = 0.05) -> None:
        self.device, self.interval = device, interval
        self.samples: list[int] = []
        self.why: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuBusy:
        if self.device.type != "cuda":
            self.why = "not a CUDA device"
            return self
        try:
            self.samples.append(int(torch.cuda.utilization(self.device)))
        except Exception as exc:  # noqa: BLE001 - any failure to read NVML is reported, not raised
            self.why = f"NVML not readable: {type(exc).__name__}: {exc}"
            return self
        self._thread = threading.Thread(target=self._sample, name="gpu-busy", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(int(torch.cuda.utilization(self.device)))
            except Exception:  # noqa: BLE001 - a failed read ends the sampling, keeping what was read
                return

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        """Mean busy share (0-1) and the number of reads, or None and the reason."""
        if self.why is not None or not self.samples:
            return {"gpu_busy": None, "gpu_busy_samples": 0, "gpu_busy_why": self.why or "no reads"}
        return {"gpu_busy": round(sum(self.samples) / len(self.samples) / 100, 3), "gpu_busy_samples": len(self.samples)}
