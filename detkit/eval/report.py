"""The comparison report: one row per RoI extractor, mean +/- std over seeds, plots.

Input is ``runs: {extractor: [metrics dict of each seed]}``, each dict as ``tools/train.py``
returns it (COCO stats, ``proposal_*``, ``AP_per_iou``, ``train_images_per_s``,
``infer_ms_per_image``, ``params``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detkit.eval.metrics import Metric, is_metric, metric

# The report's columns: COCO accuracy, proposal recall by size, speed, size. Titles, formats
# and directions come from detkit.eval.metrics.
REPORT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARs", "ARm", "ARl")
REPORT_TAIL_KEYS = ("train_images_per_s", "infer_ms_per_image", "params")


def largest_proposal_key(runs: dict[str, list[dict]], size: str) -> str | None:
    """The proposal recall key of the largest budget present, e.g. ``proposal_ARs@300`` for
    ``size="s"``; None when no run scored proposals."""
    keys = {k for metrics in runs.values() for m in metrics for k in m
            if is_metric(k) and metric(k).group == "proposal"
            and k.startswith(f"proposal_AR{size}@")}
    return max(keys, key=lambda k: int(k.split("@")[1])) if keys else None


def columns_for(runs: dict[str, list[dict]]) -> list[Metric]:
    proposal = [largest_proposal_key(runs, size) for size in ("s", "m", "l")]
    keys = [*REPORT_KEYS, *(k for k in proposal if k is not None), *REPORT_TAIL_KEYS]
    return [metric(k) for k in keys]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaN for none. -1 (no ground
    truth in a bucket) is not a value."""
    valid = [float(v) for v in values if v is not None and float(v) != -1.0]
    if not valid:
        return math.nan, math.nan
    return statistics.fmean(valid), statistics.stdev(valid) if len(valid) > 1 else 0.0


def summarize(runs: dict[str, list[dict]], columns: list[Metric]) -> dict[str, dict[str, tuple]]:
    """``{extractor: {column key: (mean, std)}}``."""
    return {name: {c.key: mean_std([m.get(c.key) for m in metrics]) for c in columns}
            for name, metrics in runs.items()}


def _best(summary: dict[str, dict[str, tuple]], column: Metric) -> float:
    means = [s[column.key][0] for s in summary.values() if not math.isnan(s[column.key][0])]
    if not means:
        return math.nan
    return max(means) if column.higher_is_better else min(means)


def _cell(mean: float, std: float, column: Metric, best: float, seeds: int) -> str:
    if math.isnan(mean):
        return "n/a"
    text = column.format(mean)
    if seeds > 1:
        text += f" ± {column.format(std)}"
    return f"**{text}**" if mean == best else text


def results_table(summary: dict[str, dict[str, tuple]], columns: list[Metric], seeds: int) -> str:
    """Markdown table, mean +/- std over seeds, the best of each column in bold."""
    best = {c.key: _best(summary, c) for c in columns}
    lines = ["| extractor | " + " | ".join(c.title for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name, stats in summary.items():
        cells = [_cell(*stats[c.key], c, best[c.key], seeds) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def delta_table(summary: dict[str, dict[str, tuple]], columns: list[Metric],
                baseline: str) -> str:
    """Markdown table of mean differences against ``baseline`` (accuracy columns, and speed
    columns as a ratio)."""
    base = summary[baseline]
    accuracy = [c for c in columns if c.is_accuracy]
    speed = [c for c in columns if c.group == "speed"]
    lines = ["| extractor | " + " | ".join(f"Δ{c.title}" for c in accuracy)
             + "".join(f" | {c.title} ratio" for c in speed) + " |",
             "|---|" + "---:|" * (len(accuracy) + len(speed))]
    for name, stats in summary.items():
        cells = []
        for c in accuracy:
            diff = stats[c.key][0] - base[c.key][0]
            cells.append("n/a" if math.isnan(diff) else f"{diff:+.{c.digits}f}")
        for c in speed:
            ratio = stats[c.key][0] / base[c.key][0] if base[c.key][0] else math.nan
            cells.append("n/a" if math.isnan(ratio) else f"{ratio:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_by_size(summary: dict[str, dict[str, tuple]], path: Path) -> None:
    """Grouped bars: AP and AR for small, medium, large objects, one bar per extractor."""
    plt = _pyplot()
    names = list(summary)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4), dpi=110, sharey=True)
    width = 0.8 / max(1, len(names))
    for axis, kind in zip(axes, ("AP", "AR"), strict=True):
        for i, name in enumerate(names):
            keys = [f"{kind}{s}" for s in ("s", "m", "l")]
            means = [max(summary[name][k][0], 0.0) if not math.isnan(summary[name][k][0])
                     else 0.0 for k in keys]
            stds = [0.0 if math.isnan(summary[name][k][1]) else summary[name][k][1] for k in keys]
            xs = [x + (i - (len(names) - 1) / 2) * width for x in range(3)]
            axis.bar(xs, means, width, yerr=stds, label=name, capsize=2)
        axis.set_xticks(range(3), ["small", "medium", "large"])
        axis.set_title(f"{kind} by object size")
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("COCO AP / AR (IoU .50:.95)")
    axes[1].legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_ap_vs_iou(runs: dict[str, list[dict]], path: Path) -> None:
    """AP at each IoU threshold (.50 ... .95), mean over seeds, one line per extractor."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4), dpi=110)
    for name, metrics in runs.items():
        per_iou = [m["AP_per_iou"] for m in metrics if "AP_per_iou" in m]
        if not per_iou:
            continue
        thresholds = list(per_iou[0])
        means = [mean_std([p[t] for p in per_iou])[0] for t in thresholds]
        axis.plot([float(t) for t in thresholds], means, marker="o", markersize=3, label=name)
    axis.set_xlabel("IoU threshold")
    axis.set_ylabel("AP")
    axis.set_title("AP against IoU threshold")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(runs: dict[str, list[dict]], out: Path, *, title: str, setup_lines: list[str],
                 baseline: str = "roi_align") -> Path:
    """Write ``out/report.md``, ``out/ap_ar_by_size.png`` and ``out/ap_vs_iou.png``."""
    out.mkdir(parents=True, exist_ok=True)
    columns = columns_for(runs)
    summary = summarize(runs, columns)
    seeds = max(len(m) for m in runs.values())
    plot_by_size(summary, out / "ap_ar_by_size.png")
    plot_ap_vs_iou(runs, out / "ap_vs_iou.png")
    parts = [f"# {title}", "", *setup_lines, "",
             f"Mean{' ± std over ' + str(seeds) + ' seeds' if seeds > 1 else ''}; best of each "
             "column in bold. AP/AR are COCO's (IoU .50:.95); s/m/l are object-size buckets "
             "(< 32², 32²–96², > 96² by annotation area); pAR = RPN proposal recall; speed on "
             "this machine during the run.", "", results_table(summary, columns, seeds), ""]
    if baseline in summary:
        parts += [f"## Differences against {baseline}", "",
                  delta_table(summary, columns, baseline), ""]
    parts += ["## Plots", "", "![AP and AR by object size](ap_ar_by_size.png)", "",
              "![AP against IoU threshold](ap_vs_iou.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path
