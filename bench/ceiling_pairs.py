"""Control and change, side by side: ceiling runs taken in alternating pairs, summarised.

    .venv/bin/python -m bench.ceiling_pairs --control '/tmp/c*/ceiling-*.json' \\
        --change '/tmp/x*/ceiling-*.json' --out docs/bench --name ceiling-round6

One machine's figures drift from minute to minute by more than most changes move them, so a
change is measured against a control taken on the same machine, alternating (control, change,
control, change, ...) with the same command (bench/ceiling.py, its ``--tree`` the control's
checkout). The n-th control run pairs with the n-th change run, in the order of their start times
(their file names).
Per configuration (database, workers, batches): the median of each figure on each side and the
median over the pairs of change / control processor CPU per image: a ratio each pair takes
within a few minutes, so the machine's drift between pairs does not enter it; and the same ratio
of each run's processor CPU over radosgw's, which also leaves out the drift within a pair (the
store does the same work on both sides).

Writes ``<name>.json`` (every run's figures, pair by pair, and the summary) and ``<name>.png``
into ``--out``, and prints the summary as a Markdown table.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also runs as `python bench/ceiling_pairs.py`
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only; never look for a display

import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["FIGURES", "pair_rows", "summarise", "table"]

#: The figures summarised, by name, each read from one run of bench/ceiling.py's JSON.
FIGURES: dict[str, Any] = {
    "images_per_s": lambda r: r["images_per_s"],
    "processor_cpu_ms_per_image": lambda r: r["cpu_ms_per_image"]["processor"],
    "processor_own_cpu_ms_per_image": lambda r: r["processor_own_cpu_ms_per_image"],
    "radosgw_cpu_ms_per_image": lambda r: r["cpu_ms_per_image"]["radosgw"],
    "processor_own_over_radosgw": lambda r: r["processor_own_over_radosgw"],
    "write_transactions_per_image": lambda r: r["write_transactions_per_image"],
    "statements_per_image": lambda r: r.get("statements_per_image"),
    "lock_per_image_x_images_per_s": lambda r: r["lock_per_image_x_images_per_s"],
    # The batch lock's share of the time as the server holds it (runs with --sample-locks only).
    "server_locked_share": lambda r: r.get("server_locked_share"),
}

Config = tuple[str, int, int]


def _config(run: dict[str, Any]) -> Config:
    return run["database"], run["workers"], run["batches"]


def pair_rows(controls: list[dict[str, Any]], changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each configuration of each pair: its figures on both sides. ``controls`` and ``changes``
    are ceiling results in start order; the n-th of each make pair n (extra runs are left out)."""
    rows = []
    for n, (control, change) in enumerate(zip(controls, changes, strict=False), start=1):
        before = {_config(r): r for r in control["runs"]}
        for run in change["runs"]:
            old = before.get(_config(run))
            if old is None or old["failed"] or run["failed"]:
                continue  # a run with failed images measured something else
            rows.append({
                "pair": n, "database": run["database"], "workers": run["workers"], "batches": run["batches"],
                "control_file": control.get("file"), "change_file": change.get("file"),
                "control": {name: read(old) for name, read in FIGURES.items()},
                "change": {name: read(run) for name, read in FIGURES.items()},
            })
    return rows


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def _over_radosgw(figures: dict[str, Any]) -> float:
    return figures["processor_cpu_ms_per_image"] / figures["radosgw_cpu_ms_per_image"]


def _spread(ratios: list[float]) -> dict[str, float | None]:
    return {"median": _median(ratios), "min": round(min(ratios), 3), "max": round(max(ratios), 3)}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration: the pairs, each figure's median on each side, and the median over the
    pairs of change / control processor CPU per image, as measured and over radosgw's."""
    configs = sorted({(r["database"], r["workers"], r["batches"]) for r in rows})
    summary = []
    for config in configs:
        mine = [r for r in rows if (r["database"], r["workers"], r["batches"]) == config]
        ratios = [r["change"]["processor_cpu_ms_per_image"] / r["control"]["processor_cpu_ms_per_image"] for r in mine]
        # The same, each run's processor CPU over its radosgw's first: the store's C++ does the
        # same work on both sides, so this ratio leaves out the machine's drift within a pair.
        normalised = [_over_radosgw(r["change"]) / _over_radosgw(r["control"]) for r in mine]
        summary.append({
            "database": config[0], "workers": config[1], "batches": config[2], "pairs": len(mine),
            "control": {name: _median([r["control"][name] for r in mine]) for name in FIGURES},
            "change": {name: _median([r["change"][name] for r in mine]) for name in FIGURES},
            "processor_cpu_pair_ratio": _spread(ratios),
            "processor_over_radosgw_pair_ratio": _spread(normalised),
        })
    return summary


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def table(summary: list[dict[str, Any]]) -> str:
    """The summary as Markdown: medians, control → change, and the pair ratio."""
    columns = [
        ("processor CPU ms/img", "processor_cpu_ms_per_image"), ("own (no codec)", "processor_own_cpu_ms_per_image"),
        ("radosgw ms/img", "radosgw_cpu_ms_per_image"), ("own/radosgw", "processor_own_over_radosgw"),
        ("statements/img", "statements_per_image"), ("writes/img", "write_transactions_per_image"),
        ("lock×img/s", "lock_per_image_x_images_per_s"), ("locked (server)", "server_locked_share"),
        ("images/s", "images_per_s"),
    ]
    head = ("| db | workers | batches | pairs | " + " | ".join(t for t, _ in columns)
            + " | CPU pair ratio (min–max) | over radosgw's, pair ratio (min–max) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summary:
        cells = " | ".join(f"{_f(s['control'][k])} → {_f(s['change'][k])}" for _, k in columns)
        spreads = " | ".join(
            f"**{_f(r['median'])}** ({_f(r['min'])}–{_f(r['max'])})"
            for r in (s["processor_cpu_pair_ratio"], s["processor_over_radosgw_pair_ratio"])
        )
        lines.append(f"| {s['database']} | {s['workers']} | {s['batches']} | {s['pairs']} | {cells} | {spreads} |")
    return "\n".join(lines)


def write_plot(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Processor CPU per image, control and change, pair by pair, one panel per configuration."""
    configs = sorted({(r["database"], r["workers"], r["batches"]) for r in rows})
    fig, axes = plt.subplots(1, len(configs), figsize=(4 * len(configs), 3.6), squeeze=False)
    for ax, config in zip(axes[0], configs, strict=True):
        mine = [r for r in rows if (r["database"], r["workers"], r["batches"]) == config]
        pairs = [r["pair"] for r in mine]
        for side, marker in (("control", "o"), ("change", "s")):
            ax.plot(pairs, [r[side]["processor_cpu_ms_per_image"] for r in mine], marker=marker, label=side)
        ax.set_title(f"{config[0]}, {config[1]} worker(s), {config[2]} batch(es)", fontsize=9)
        ax.set_xlabel("pair")
        ax.set_ylabel("processor CPU ms / image")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _load(pattern: str) -> list[dict[str, Any]]:
    """The ceiling results a glob names, in start order (bench/ceiling.py names each file by its
    start time in UTC), each with its file name as ``file``."""
    paths = sorted(glob.glob(pattern), key=lambda p: Path(p).name)
    return [{**json.loads(Path(p).read_text()), "file": Path(p).name} for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="glob of the control's ceiling JSON files")
    parser.add_argument("--change", required=True, help="glob of the change's ceiling JSON files")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="ceiling-pairs", help="file name, without suffix")
    args = parser.parse_args()
    controls, changes = _load(args.control), _load(args.change)
    if not controls or not changes:
        parser.error("no ceiling JSON matched --control or --change")
    rows = pair_rows(controls, changes)
    summary = summarise(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "ceiling_pairs",
        "commands": sorted({c.get("command", "") for c in controls + changes}),
        "control_commits": sorted({str(c.get("tree_commit")) for c in controls}),
        "change_commits": sorted({str(c.get("tree_commit")) for c in changes}),
        "summary": summary,
        "pairs": rows,
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    write_plot(args.out / f"{args.name}.png", rows, f"{args.name}: control {doc['control_commits']} vs change "
               f"{doc['change_commits']}")
    print(table(summary))
    print(f"\nwrote {args.out / (args.name + '.json')} and .png")


if __name__ == "__main__":
    main()
