"""The pipeline benchmark's figure: one PNG with four panels (matplotlib, no display needed).

1. latency by stage, as cumulative distributions (milliseconds, symmetric-log axis: the
   notification stage can be negative, see docs/BENCHMARKS.md);
2. throughput over time: uploads answered and results arriving over WebSocket, per second;
3. commit → the client learns of it: WebSocket subscriber vs polling the status API;
4. the scaling runs: throughput per configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never look for a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["write_plot"]


def _cdf(ax: Any, values_ms: list[float], label: str) -> None:
    if not values_ms:
        return
    ordered = np.sort(values_ms)
    ax.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=label, linewidth=1.5)


def write_plot(
    path: Path,
    stage_values_s: dict[str, list[float]],
    series: dict[str, list[list[float]]],
    bin_s: float,
    client_delays_s: dict[str, list[float]],
    scaling: list[dict[str, Any]],
    title: str,
) -> None:
    """Draw the four panels into ``path`` (PNG); ``series`` are ``[[bin start s, rate], ...]``."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    stages_ax, time_ax, clients_ax, scale_ax = axes.flat

    for name, values in stage_values_s.items():
        _cdf(stages_ax, [v * 1000 for v in values], name)
    stages_ax.set_xscale("symlog", linthresh=1.0)
    stages_ax.set(xlabel="milliseconds (symlog)", ylabel="share of images", title="Latency by stage (CDF)")
    stages_ax.grid(True, alpha=0.3)
    stages_ax.legend(fontsize=8)

    for name, points in series.items():
        if points:
            starts, rates = zip(*points)
            time_ax.stairs(rates, [*starts, starts[-1] + bin_s], label=name, linewidth=1.5)
    time_ax.set(
        xlabel="seconds since the first upload",
        ylabel="images per second",
        title=f"Throughput over time ({bin_s:g} s bins)",
    )
    time_ax.grid(True, alpha=0.3)
    time_ax.legend(fontsize=8)

    for name, values in client_delays_s.items():
        _cdf(clients_ax, [v * 1000 for v in values], name)
    clients_ax.set(xlabel="milliseconds", ylabel="share of images", title="Commit → client learns of it (CDF)")
    clients_ax.grid(True, alpha=0.3)
    clients_ax.legend(fontsize=8)

    if scaling:
        labels = [f"{c['workers']}w × p{c['prefetch']}" for c in scaling]
        scale_ax.bar(labels, [c["throughput_images_per_s"] for c in scaling], color="tab:green")
        for i, c in enumerate(scaling):
            scale_ax.annotate(f"p50 {c['latency']['p50_ms'] / 1000:.1f} s", (i, c["throughput_images_per_s"]),
                              ha="center", va="bottom", fontsize=8)
    scale_ax.set(xlabel="workers × prefetch", ylabel="images per second", title="Scaling (throughput, p50 latency)")
    scale_ax.grid(True, axis="y", alpha=0.3)

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
