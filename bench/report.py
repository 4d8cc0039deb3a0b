"""The benchmark's figures from measured batches: throughput, stages, clients, scaling rows, tables."""

from __future__ import annotations

import statistics
from typing import Any

from bench.machine import load_average
from bench.runs import BatchRun
from bench.stages import DETAIL_STAGES, STAGES, TOTAL, client_view, over_time, stage_durations, summarize

__all__ = ["main_figures", "scaling_figures", "tables", "throughput"]


def throughput(moments: dict[str, dict[str, float]]) -> dict[str, float]:
    """Images per second: end to end, steady (middle 80 % of results), worker side, uploads."""
    sent = [m["put_started"] for m in moments.values()]
    answered = [m["put_done"] for m in moments.values()]
    arrived = sorted(m["ws"] for m in moments.values() if "ws" in m)
    received = [m["received"] for m in moments.values() if "received" in m]
    committed = [m["committed"] for m in moments.values() if "committed" in m]
    n = len(arrived)
    figures = {"end_to_end_images_per_s": round(n / (arrived[-1] - min(sent)), 2)}
    lo, hi = int(n * 0.1), int(n * 0.9) - 1
    if hi > lo:
        figures["steady_images_per_s"] = round((hi - lo) / (arrived[hi] - arrived[lo]), 2)
    if received and committed:
        figures["worker_side_images_per_s"] = round(len(committed) / (max(committed) - min(received)), 2)
    figures["upload_images_per_s"] = round(len(answered) / (max(answered) - min(sent)), 2)
    return figures


def main_figures(run: BatchRun, poll_interval_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The main run's figures (JSON) and the raw series the plot needs."""
    moments = run.moments()
    origin = min(m["put_started"] for m in moments.values())
    stage_values = stage_durations(moments, [*STAGES, TOTAL])
    detail_values = stage_durations(moments, DETAIL_STAGES)
    bin_s = float(max(1, round(run.wall_s / 60)))
    assert run.poller is not None
    polling = client_view(moments, "polled", origin) or {}
    polling.update(
        {
            "interval_s": poll_interval_s,
            "requests": len(run.poller.request_s),
            "request": summarize(run.poller.request_s),
            "answer_kib_mean": round(statistics.fmean(run.poller.answer_bytes) / 1024, 1),
        }
    )
    figures = {
        "images": len(run.files),
        **run.outcome_counts(),
        "wall_s": round(run.wall_s, 2),
        "throughput": throughput(moments),
        "throughput_over_time": {
            "bin_s": bin_s,
            "uploads_answered": over_time([m["put_done"] for m in moments.values()], origin, bin_s),
            "results_over_websocket": over_time([m["ws"] for m in moments.values() if "ws" in m], origin, bin_s),
        },
        "latency": {
            "total": summarize(stage_values.pop("total")),
            "stages": {name: summarize(values) for name, values in stage_values.items()},
            "detail": {
                **{name: summarize(values) for name, values in detail_values.items()},
                "processing.enhance.engine_compute": summarize(run.engine_compute_s()),
            },
            "upload_request": summarize([m["put_done"] - m["put_started"] for m in moments.values()]),
        },
        "clients": {"websocket": client_view(moments, "ws", origin), "polling": polling},
        "processes": run.processes,
        "load_average_at_end": load_average(),
    }
    plot_data = {
        "stages": {**stage_values, "total": [m["ws"] - m["put_done"] for m in moments.values() if "ws" in m]},
        "series": {
            "uploads answered": figures["throughput_over_time"]["uploads_answered"],
            "results over WebSocket": figures["throughput_over_time"]["results_over_websocket"],
        },
        "clients": {
            "WebSocket": [m["ws"] - m["committed"] for m in moments.values() if "ws" in m and "committed" in m],
            f"polling every {poll_interval_s:g} s": [
                m["polled"] - m["committed"] for m in moments.values() if "polled" in m and "committed" in m
            ],
        },
    }
    return figures, plot_data


def scaling_figures(run: BatchRun, workers: int, prefetch: int) -> dict[str, Any]:
    """One scaling configuration's row."""
    moments = run.moments()
    total = stage_durations(moments, [TOTAL])["total"]
    rates = throughput(moments)
    worker_cpu = sum(u["cpu_s"] for name, u in run.processes.items() if u and name.startswith("processor-"))
    return {
        "workers": workers,
        "prefetch": prefetch,
        "images": len(run.files),
        **run.outcome_counts(),
        "throughput_images_per_s": rates["end_to_end_images_per_s"],
        "steady_images_per_s": rates.get("steady_images_per_s"),
        "latency": summarize(total),
        "processing": summarize(stage_durations(moments, [("processing", "received", "stored")])["processing"]),
        "workers_cpu_s": round(worker_cpu, 2),
        "wall_s": round(run.wall_s, 2),
    }


# -- tables -----------------------------------------------------------------------------------


def _ms(summary: dict[str, Any] | None, key: str) -> str:
    return "-" if not summary else f"{summary[key]:.0f}"


def tables(result: dict[str, Any]) -> str:
    """Markdown tables of the main figures."""
    main = result["main"]
    latency = main["latency"]
    lines = [f"throughput: {main['throughput']}", ""]
    lines += ["| stage | p50 ms | p95 ms | p99 ms | mean ms |", "|---|---|---|---|---|"]
    for name, s in [*latency["stages"].items(), ("**total**", latency["total"]), *latency["detail"].items()]:
        lines.append(f"| {name} | {_ms(s, 'p50_ms')} | {_ms(s, 'p95_ms')} | {_ms(s, 'p99_ms')} | {_ms(s, 'mean_ms')} |")
    lines += ["", "| client | first result s | all results s | delay p50 ms | p95 ms | mean ms |"]
    lines += ["|---|---|---|---|---|---|"]
    for name, c in main["clients"].items():
        if c:
            d = c["delay"]
            lines.append(
                f"| {name} | {c['first_result_s']} | {c['all_results_s']} | {_ms(d, 'p50_ms')} | "
                f"{_ms(d, 'p95_ms')} | {_ms(d, 'mean_ms')} |"
            )
    lines += ["", "| process | CPU s | share of a core | peak RSS MiB | final RSS MiB |", "|---|---|---|---|---|"]
    for name, u in main["processes"].items():
        if u:
            lines.append(
                f"| {name} | {u['cpu_s']} | {u['cpu_share_of_one_core']} | {u['rss_peak_mib']} | {u['rss_final_mib']} |"
            )
    if result["scaling"]:
        lines += ["", "| workers | prefetch | images/s | p50 ms | p95 ms | worker CPU s |", "|---|---|---|---|---|---|"]
        for c in result["scaling"]:
            lines.append(
                f"| {c['workers']} | {c['prefetch']} | {c['throughput_images_per_s']} | "
                f"{_ms(c['latency'], 'p50_ms')} | {_ms(c['latency'], 'p95_ms')} | {c['workers_cpu_s']} |"
            )
    return "\n".join(lines)
