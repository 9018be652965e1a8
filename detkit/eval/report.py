"""The comparison report: per extractor, mean ± 95% CI over seeds; paired differences against a
baseline extractor, marked where they are effects; plots; ``study.json`` with every number.

Input is ``runs: {extractor: {seed: metrics}}`` (a list of metrics means seeds 0, 1, ...), each
dict as ``tools/train.py`` returns it (COCO stats, ``proposal_*``, ``AP_per_iou``,
``train_images_per_s``, ``infer_ms_per_image``, ``params``). A sweep over one setting is a list
of ``(value, runs)``. Statistics (t intervals, pairing by seed, the effect rule) are
:mod:`detkit.eval.stats`'; titles, formats and directions are :mod:`detkit.eval.metrics`'.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from detkit.eval.metrics import Metric, is_metric, metric
from detkit.eval.stats import (
    CONFIDENCE,
    Interval,
    is_effect,
    matched_seeds,
    paired_difference,
    seed_differences,
    t_interval,
)

# The report's columns: COCO accuracy, proposal recall by size, speed, size. Titles, formats
# and directions come from detkit.eval.metrics.
REPORT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARs", "ARm", "ARl")
REPORT_TAIL_KEYS = ("train_images_per_s", "infer_ms_per_image", "params")
EFFECT_KEYS = ("AP", "AP75", "APs", "APm", "APl")  # the effect plot's panels
EFFECT_MARK = "*"

Runs = Mapping[str, Mapping[int, dict] | Sequence[dict]]
Seeded = dict[str, dict[int, dict]]
Differences = dict[str, dict[str, Interval]]  # {extractor: {column key: paired difference}}


def by_seed(runs: Runs) -> Seeded:
    """``{extractor: {seed: metrics}}``; a list of metrics stands for seeds 0, 1, ..."""
    return {name: dict(m) if isinstance(m, Mapping) else dict(enumerate(m))
            for name, m in runs.items()}


def largest_proposal_key(runs: Runs, size: str) -> str | None:
    """The proposal recall key of the largest budget present, e.g. ``proposal_ARs@300`` for
    ``size="s"``; None when no run scored proposals."""
    keys = {k for seeds in by_seed(runs).values() for m in seeds.values() for k in m
            if is_metric(k) and metric(k).group == "proposal"
            and k.startswith(f"proposal_AR{size}@")}
    return max(keys, key=lambda k: int(k.split("@")[1])) if keys else None


def columns_for(runs: Runs) -> list[Metric]:
    proposal = [largest_proposal_key(runs, size) for size in ("s", "m", "l")]
    keys = [*REPORT_KEYS, *(k for k in proposal if k is not None), *REPORT_TAIL_KEYS]
    return [metric(k) for k in keys]


def _values(seeds: Mapping[int, dict], key: str) -> dict[int, Any]:
    return {seed: m.get(key) for seed, m in seeds.items()}


def summarize(runs: Runs, columns: list[Metric]) -> dict[str, dict[str, Interval]]:
    """``{extractor: {column key: mean ± 95% CI over seeds}}``."""
    return {name: {c.key: t_interval(_values(seeds, c.key).values()) for c in columns}
            for name, seeds in by_seed(runs).items()}


def differences(runs: Runs, columns: list[Metric], baseline: str) -> Differences:
    """``{extractor: {key: paired difference against baseline}}`` for the accuracy columns,
    extractor minus baseline, over the seeds where both have a value."""
    seeded = by_seed(runs)
    base = seeded[baseline]
    return {name: {c.key: paired_difference(_values(seeds, c.key), _values(base, c.key))
                   for c in columns if c.is_accuracy}
            for name, seeds in seeded.items()}


def _at(seeded: Sequence[tuple[Any, Seeded]], value: Any) -> Seeded:
    """The runs at ``value`` (found by equality: a swept value may be a list)."""
    return next(runs for v, runs in seeded if v == value)


def factor_differences(seeded: Sequence[tuple[Any, Seeded]], columns: list[Metric],
                       reference: Any) -> list[tuple[Any, Differences]]:
    """The factor's own effect: for each value other than ``reference`` (a value of the sweep),
    ``{extractor: {key: paired difference}}``, the extractor's runs at that value minus its runs
    at ``reference``, paired by seed (accuracy columns)."""
    base = _at(seeded, reference)
    return [(value, {name: {c.key: paired_difference(_values(seeds, c.key),
                                                     _values(base[name], c.key))
                            for c in columns if c.is_accuracy}
                     for name, seeds in runs.items() if name in base})
            for value, runs in seeded if value != reference]


def _gains(extractor: Mapping[int, dict], baseline: Mapping[int, dict], key: str
           ) -> dict[int, float]:
    """``{seed: extractor - baseline}`` over the seeds where both have a value of ``key``."""
    return seed_differences(_values(extractor, key), _values(baseline, key))


def interactions(seeded: Sequence[tuple[Any, Seeded]], columns: list[Metric], reference: Any,
                 baseline: str) -> list[tuple[Any, Differences]]:
    """Whether an extractor's gain over ``baseline`` changes with the factor: for each value
    other than ``reference``, ``{extractor: {key: interval}}`` of the per-seed difference of
    differences ``(extractor - baseline at value) - (extractor - baseline at reference)``, over
    the seeds with all four runs. An effect here (CI excludes 0) means the gain grows or
    shrinks with the factor."""
    base = _at(seeded, reference)
    return [(value, {name: {c.key: paired_difference(
                         _gains(seeds, runs[baseline], c.key),
                         _gains(base[name], base[baseline], c.key))
                            for c in columns if c.is_accuracy}
                     for name, seeds in runs.items() if name != baseline and name in base})
            for value, runs in seeded if value != reference and baseline in runs
            and baseline in base]


def _best(summary: dict[str, dict[str, Interval]], column: Metric) -> float:
    means = [s[column.key].mean for s in summary.values() if not math.isnan(s[column.key].mean)]
    if not means:
        return math.nan
    return max(means) if column.higher_is_better else min(means)


def _cell(interval: Interval, column: Metric, best: float, runs: int) -> str:
    mean, half, n = interval
    if math.isnan(mean):
        return "n/a"
    text = column.format(mean)
    if not math.isnan(half):
        text += f" ± {column.format(half)}"
    text = f"**{text}**" if mean == best else text
    return text + (f" (n={n})" if n < runs else "")


def results_table(summary: dict[str, dict[str, Interval]], columns: list[Metric],
                  seeds: int | Mapping[str, int]) -> str:
    """Markdown table, mean ± 95% CI over seeds, the best of each column in bold. ``seeds``: the
    runs of each extractor (or one count for all); a cell over fewer values (a metric missing
    in some runs) says ``(n=...)``."""
    counts = seeds if isinstance(seeds, Mapping) else dict.fromkeys(summary, seeds)
    best = {c.key: _best(summary, c) for c in columns}
    lines = ["| extractor | " + " | ".join(c.title for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name, stats in summary.items():
        cells = [_cell(stats[c.key], c, best[c.key], counts[name]) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _difference_cell(interval: Interval, column: Metric, pairs: int) -> str:
    mean, half, n = interval
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:+.{column.digits}f}"
    if not math.isnan(half):
        text += f" ± {half:.{column.digits}f}"
    if is_effect(interval):
        text += f" {EFFECT_MARK}"
    return text + (f" (n={n})" if n < pairs else "")


def delta_table(runs: Runs, columns: list[Metric], baseline: str) -> str:
    """Markdown table of paired differences against ``baseline`` (accuracy columns: mean ± 95% CI
    of the per-seed differences, :data:`EFFECT_MARK` where the CI excludes 0) and speed columns
    as the ratio of means."""
    seeded = by_seed(runs)
    diffs = differences(seeded, columns, baseline)
    summary = summarize(seeded, columns)
    accuracy = [c for c in columns if c.is_accuracy]
    speed = [c for c in columns if c.group == "speed"]
    lines = ["| extractor | " + " | ".join(f"Δ{c.title}" for c in accuracy)
             + "".join(f" | {c.title} ratio" for c in speed) + " |",
             "|---|" + "---:|" * (len(accuracy) + len(speed))]
    base = summary[baseline]
    for name in seeded:
        pairs = len(seeded[name].keys() & seeded[baseline].keys())
        cells = [_difference_cell(diffs[name][c.key], c, pairs) for c in accuracy]
        for c in speed:
            ratio = summary[name][c.key].mean / base[c.key].mean if base[c.key].mean else math.nan
            cells.append("n/a" if math.isnan(ratio) else f"{ratio:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def value_delta_table(effects: Sequence[tuple[Any, Differences]], columns: list[Metric],
                      heading: str) -> str:
    """Markdown table of paired differences by extractor and value (:func:`factor_differences`
    or :func:`interactions`), accuracy columns, :data:`EFFECT_MARK` where the CI excludes 0;
    ``heading`` titles the value column. ``(n=k)``: fewer pairs than the table's most."""
    accuracy = [c for c in columns if c.is_accuracy]
    pairs = max((d.n for _, diffs in effects for keys in diffs.values() for d in keys.values()),
                default=0)
    lines = [f"| extractor | {heading} | " + " | ".join(f"Δ{c.title}" for c in accuracy) + " |",
             "|---|---|" + "---:|" * len(accuracy)]
    for value, diffs in effects:
        for name, keys in diffs.items():
            cells = [_difference_cell(keys[c.key], c, pairs) for c in accuracy]
            lines.append(f"| {name} | {_show(value)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pairing_lines(runs: Runs, baseline: str) -> list[str]:
    """The legend of :func:`delta_table`: what Δ, ± and the mark mean, and which seeds were
    paired (naming, per extractor, seeds that have no partner)."""
    seeded = by_seed(runs)
    base = set(seeded[baseline])
    lines = [f"Δ = extractor − {baseline}, paired by seed (the same seed gives both the same "
             "initial weights of the shared modules, data order and augmentation); ± = 95% CI "
             f"of the mean difference (t distribution); {EFFECT_MARK} = the CI excludes 0, an "
             "effect; no mark: no effect shown with these seeds (n/a or no ± : fewer than 2 "
             "pairs). (n=k): fewer pairs where a size bucket has no ground truth."]
    shared = set.intersection(*(set(s) for s in seeded.values()))
    lines.append(f"Seeds paired: {_seed_list(shared)}.")
    for name, seeds in seeded.items():
        alone = sorted(set(seeds) ^ base)
        if alone:
            lines.append(f"{name}: seeds {_seed_list(set(seeds) & base)} paired; seed(s) "
                         f"{_seed_list(alone)} have a run of only one of {name} and {baseline} "
                         "and are left out of its differences.")
    return lines


def _seed_list(seeds: set[int] | list[int]) -> str:
    return ", ".join(str(s) for s in sorted(seeds)) or "none"


# ------------------------------------------------------------------------------------- numbers
def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _interval_json(interval: Interval) -> dict[str, Any]:
    return {"mean": _number(interval.mean), "ci95": _number(interval.half_width), "n": interval.n}


def _differences_json(effects: Sequence[tuple[Any, Differences]]) -> list[dict[str, Any]]:
    return [{"value": value, "extractors": {
                name: {key: {**_interval_json(d), "effect": is_effect(d)}
                       for key, d in keys.items()} for name, keys in diffs.items()}}
            for value, diffs in effects]


def study_numbers(runs: Runs, columns: list[Metric], baseline: str | None) -> dict[str, Any]:
    """Every number of one value's tables, JSON-ready (NaN as null): per extractor its seeds,
    each run's values and the intervals; per extractor the paired differences against the
    baseline with the seeds paired and the effect mark."""
    seeded = by_seed(runs)
    summary = summarize(seeded, columns)
    diffs = differences(seeded, columns, baseline) if baseline in seeded else {}
    numbers: dict[str, Any] = {"extractors": {}}
    for name, seeds in seeded.items():
        entry = {
            "seeds": sorted(seeds),
            "runs": {str(s): {c.key: seeds[s].get(c.key) for c in columns} for s in sorted(seeds)},
            "metrics": {c.key: _interval_json(summary[name][c.key]) for c in columns},
        }
        if name in diffs:
            entry["differences"] = {
                key: {**_interval_json(d), "effect": is_effect(d), "seeds": matched_seeds(
                    _values(seeds, key), _values(seeded[baseline], key))}
                for key, d in diffs[name].items()}
        numbers["extractors"][name] = entry
    return numbers


# --------------------------------------------------------------------------------------- plots
def plot_by_size(summary: dict[str, dict[str, Interval]], path: Path) -> None:
    """Grouped bars: AP and AR for small, medium, large objects, one bar per extractor, 95% CI
    error bars."""
    plt = _pyplot()
    names = list(summary)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4), dpi=110, sharey=True)
    width = 0.8 / max(1, len(names))
    for axis, kind in zip(axes, ("AP", "AR"), strict=True):
        for i, name in enumerate(names):
            cells = [summary[name][f"{kind}{s}"] for s in ("s", "m", "l")]
            means = [0.0 if math.isnan(c.mean) else max(c.mean, 0.0) for c in cells]
            errors = [0.0 if math.isnan(c.half_width) else c.half_width for c in cells]
            xs = [x + (i - (len(names) - 1) / 2) * width for x in range(3)]
            axis.bar(xs, means, width, yerr=errors, label=name, capsize=2)
        axis.set_xticks(range(3), ["small", "medium", "large"])
        axis.set_title(f"{kind} by object size (bars: 95% CI)")
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("COCO AP / AR (IoU .50:.95)")
    axes[1].legend(fontsize=7, ncol=2)
    _save(plt, figure, path)


def plot_ap_vs_iou(runs: Runs, path: Path) -> None:
    """AP at each IoU threshold (.50 ... .95), mean over seeds, one line per extractor."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4), dpi=110)
    for name, seeds in by_seed(runs).items():
        per_iou = [m["AP_per_iou"] for m in seeds.values() if "AP_per_iou" in m]
        if not per_iou:
            continue
        thresholds = list(per_iou[0])
        means = [t_interval([p[t] for p in per_iou]).mean for t in thresholds]
        axis.plot([float(t) for t in thresholds], means, marker="o", markersize=3, label=name)
    axis.set_xlabel("IoU threshold")
    axis.set_ylabel("AP")
    axis.set_title("AP against IoU threshold")
    axis.grid(alpha=0.3)
    if axis.lines:
        axis.legend(fontsize=7)
    _save(plt, figure, path)


def _positions(values: Sequence[Any]) -> list[float]:
    """x positions of a sweep's values: the values when all are numbers, else 0, 1, ..."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values]
    return [float(i) for i in range(len(values))]


def tick_labels(values: Sequence[Any]) -> list[str]:
    """The x tick labels of a sweep's values: each value as the report shows it, except that
    paths sharing their leading and trailing folders keep only the parts that differ
    (``runs/study/donor/checkpoints/best.ckpt``, ``runs/study/donor_roi_pool/checkpoints/best.ckpt``
    -> ``donor``, ``donor_roi_pool``), which would otherwise overlap."""
    labels = [_show(v) for v in values]
    if len(labels) < 2 or not all(isinstance(v, str) and "/" in v for v in values):
        return labels
    parts = [label.split("/") for label in labels]
    shortest = min(len(p) for p in parts)
    head = 0
    while head < shortest - 1 and len({p[head] for p in parts}) == 1:
        head += 1
    tail = 0
    while head + tail < shortest - 1 and len({p[len(p) - 1 - tail] for p in parts}) == 1:
        tail += 1
    return ["/".join(p[head:len(p) - tail]) for p in parts]


def _sweep_axes(plt: Any, panels: Sequence[str], factor: str, values: Sequence[Any]) -> tuple:
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), dpi=110,
                                squeeze=False)
    xs = _positions(values)
    margin = 0.1 * ((max(xs) - min(xs)) or 1.0)
    for axis, title in zip(axes[0], panels, strict=True):
        axis.set_title(title)
        axis.set_xlabel(factor, fontsize=8)
        axis.set_xticks(xs, tick_labels(values))
        axis.set_xlim(min(xs) - margin, max(xs) + margin)  # also for a panel without values
        axis.grid(alpha=0.3)
    return figure, axes[0], xs


def _offsets(xs: list[float], count: int) -> list[float]:
    """Small x shifts so that the error bars of ``count`` lines do not hide each other."""
    span = (max(xs) - min(xs)) or 1.0
    return [(i - (count - 1) / 2) * 0.015 * span for i in range(count)]


def plot_effects(sweep: Sequence[tuple[Any, Differences]], factor: str, baseline: str,
                 path: Path) -> None:
    """One panel per metric of :data:`EFFECT_KEYS`: the paired difference against ``baseline``
    with 95% CI bars at each value of ``factor``, one line per other extractor; filled markers
    are effects (CI excludes 0)."""
    names = [n for n in sweep[0][1] if n != baseline]
    _plot_differences(sweep, factor, names, f"extractor − {baseline} (paired, 95% CI)", path)


def plot_factor_effects(values: Sequence[Any], effects: Sequence[tuple[Any, Differences]],
                        factor: str, reference: Any, path: Path) -> None:
    """As :func:`plot_effects` for the factor's own effect (:func:`factor_differences` gives
    ``effects``, every value of ``values`` but ``reference``): each extractor's paired
    difference against its runs at ``reference``, drawn at 0 there."""
    names = list(effects[0][1]) if effects else []
    zero = Interval(0.0, math.nan, 0)
    at_reference = {name: dict.fromkeys(EFFECT_KEYS, zero) for name in names}
    by_value = [next((d for v, d in effects if v == value), at_reference) for value in values]
    _plot_differences(list(zip(values, by_value, strict=True)), factor, names,
                      f"value − {_show(reference)} (paired, 95% CI)", path)


def _plot_differences(sweep: Sequence[tuple[Any, Differences]], factor: str, names: list[str],
                      ylabel: str, path: Path) -> None:
    plt = _pyplot()
    values = [v for v, _ in sweep]
    figure, axes, xs = _sweep_axes(plt, [f"Δ{metric(k).title}" for k in EFFECT_KEYS], factor,
                                   values)
    for axis, key in zip(axes, EFFECT_KEYS, strict=True):
        axis.axhline(0.0, color="black", linewidth=0.8)
        for name, dx, colour in zip(names, _offsets(xs, len(names)), _colours(plt), strict=False):
            cells = [diffs[name][key] for _, diffs in sweep]
            x = [p + dx for p in xs]
            axis.errorbar(x, [c.mean for c in cells], capsize=2, color=colour, label=name,
                          yerr=[0.0 if math.isnan(c.half_width) else c.half_width for c in cells])
            effect = [is_effect(c) for c in cells]
            axis.scatter([p for p, e in zip(x, effect, strict=True) if e],
                         [c.mean for c, e in zip(cells, effect, strict=True) if e],
                         color=colour, zorder=3, s=18)
    axes[0].set_ylabel(ylabel)
    if names:
        axes[-1].legend(fontsize=7)
    _save(plt, figure, path)


def plot_ap_by_size_sweep(sweep: Sequence[tuple[Any, dict[str, dict[str, Interval]]]],
                          factor: str, path: Path) -> None:
    """APs, APm, APl against the value of ``factor``, one line per extractor, 95% CI bars."""
    plt = _pyplot()
    values = [v for v, _ in sweep]
    names = list(sweep[0][1])
    keys = ("APs", "APm", "APl")
    figure, axes, xs = _sweep_axes(plt, keys, factor, values)
    for axis, key in zip(axes, keys, strict=True):
        for name, dx in zip(names, _offsets(xs, len(names)), strict=True):
            cells = [summary[name][key] for _, summary in sweep]
            axis.errorbar([p + dx for p in xs], [c.mean for c in cells], capsize=2, label=name,
                          yerr=[0.0 if math.isnan(c.half_width) else c.half_width for c in cells])
    axes[0].set_ylabel("COCO AP (IoU .50:.95), 95% CI")
    axes[-1].legend(fontsize=7)
    _save(plt, figure, path)


def _colours(plt: Any) -> list[str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return cycle * 4


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# -------------------------------------------------------------------------------------- report
def _explanation(seeds: int) -> str:
    statistic = (f"Mean ± 95% CI over {seeds} seeds (t distribution, n − 1 degrees of freedom)"
                 if seeds > 1 else "One seed: means, no intervals")
    return (f"{statistic}; best of each column in bold. AP/AR are COCO's (IoU .50:.95); s/m/l are "
            "object-size buckets (< 32², 32²–96², > 96² by annotation area); pAR = RPN proposal "
            "recall; speed on this machine during the run.")


def _value_sections(runs: Seeded, columns: list[Metric], baseline: str | None,
                    heading: str) -> list[str]:
    parts = [results_table(summarize(runs, columns), columns,
                           {name: len(seeds) for name, seeds in runs.items()}), ""]
    if len({tuple(sorted(seeds)) for seeds in runs.values()}) > 1:
        parts += ["Seeds: " + "; ".join(f"{name} {_seed_list(list(seeds))}"
                                        for name, seeds in runs.items()) + ".", ""]
    if baseline in runs:
        parts += [f"{heading} Paired differences against {baseline}", "",
                  delta_table(runs, columns, baseline), ""]
        parts += [line for text in pairing_lines(runs, baseline) for line in (text, "")]
    return parts


def _write_json(path: Path, content: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=1))
    tmp.replace(path)


def write_report(runs: Runs, out: Path, *, title: str, setup_lines: list[str],
                 baseline: str = "roi_align", suffix: str = "") -> Path:
    """Write ``out/report.md``, ``out/ap_ar_by_size.png``, ``out/ap_vs_iou.png`` and
    ``out/study.json``; returns the report's path. ``suffix`` goes into the names of the outputs
    that depend on ``baseline`` (``report<suffix>.md``, ``study<suffix>.json``), so reports of
    one study against two baselines stay side by side."""
    out.mkdir(parents=True, exist_ok=True)
    seeded = by_seed(runs)
    columns = columns_for(seeded)
    seeds = max(len(s) for s in seeded.values())
    plot_by_size(summarize(seeded, columns), out / "ap_ar_by_size.png")
    plot_ap_vs_iou(seeded, out / "ap_vs_iou.png")
    parts = [f"# {title}", "", *setup_lines, "", _explanation(seeds), "",
             *_value_sections(seeded, columns, baseline, "##"),
             "## Plots", "", "![AP and AR by object size](ap_ar_by_size.png)", "",
             "![AP against IoU threshold](ap_vs_iou.png)", ""]
    _write_json(out / f"study{suffix}.json",
                _study(title, None, baseline, columns,
                       [(None, study_numbers(seeded, columns, baseline))]))
    path = out / f"report{suffix}.md"
    path.write_text("\n".join(parts))
    return path


def write_sweep_report(sweep: Sequence[tuple[Any, Runs]], factor: str, out: Path, *, title: str,
                       setup_lines: list[str], baseline: str, reference_index: int = 0,
                       suffix: str = "") -> Path:
    """The report of a sweep over one setting ``factor``. First the factor's own effect, each
    value against the reference value (``sweep[reference_index]``) per extractor, paired by
    seed (:func:`factor_differences`, ``out/factor_effect_vs_<factor>.png``), and whether each
    extractor's gain over ``baseline`` changes with the factor (:func:`interactions`); then
    ``out/effect_vs_<factor>.png`` (ΔAP, ΔAP75, ΔAPs/m/l against ``baseline`` at each value),
    ``out/ap_by_size_vs_<factor>.png``, and for each value its results table and paired
    differences (as :func:`write_report`). ``study.json`` holds every number. Returns the
    report's path. ``suffix``: as in :func:`write_report`, also in the effect plot's name."""
    out.mkdir(parents=True, exist_ok=True)
    seeded = [(value, by_seed(runs)) for value, runs in sweep]
    values = [v for v, _ in seeded]
    reference = values[reference_index]
    columns = columns_for({f"{i}/{n}": s for i, (_, runs) in enumerate(seeded)
                           for n, s in runs.items()})
    seeds = max(len(s) for _, runs in seeded for s in runs.values())
    factor_effects = factor_differences(seeded, columns, reference)
    gains = [(v, d) for v, d in interactions(seeded, columns, reference, baseline) if d]
    effect_png, size_png = f"effect_vs_{factor}{suffix}.png", f"ap_by_size_vs_{factor}.png"
    factor_png = f"factor_effect_vs_{factor}.png"
    plot_factor_effects(values, factor_effects, factor, reference, out / factor_png)
    plot_effects([(v, differences(runs, columns, baseline)) for v, runs in seeded], factor,
                 baseline, out / effect_png)
    plot_ap_by_size_sweep([(v, summarize(runs, columns)) for v, runs in seeded], factor,
                          out / size_png)
    shown = f"{factor} = {_show(reference)}"
    parts = [f"# {title}", "", *setup_lines, "", _explanation(seeds), "",
             f"## Effect of {factor}: each value against {shown}, by extractor", "",
             value_delta_table(factor_effects, columns, f"{factor} (against "
                               f"{_show(reference)})"), "",
             f"Δ = the extractor's runs at this value − its runs at {shown}, paired by seed; ± = "
             f"95% CI (t distribution); {EFFECT_MARK} = the CI excludes 0.", "",
             f"![each value against {shown}]({factor_png})", ""]
    if gains:
        parts += [f"## Does each extractor's gain over {baseline} change with {factor}?", "",
                  value_delta_table(gains, columns, factor), "",
                  f"Δ = (extractor − {baseline} at this value) − (extractor − {baseline} at "
                  f"{shown}), per seed, over the seeds with all four runs; ± = 95% CI; "
                  f"{EFFECT_MARK}: the gain grows (+) or shrinks (−) with {factor}.", ""]
    parts += [f"## Effects of each extractor against {baseline}, by {factor}", "",
              f"![paired differences against {baseline}]({effect_png})", "",
              f"![AP by object size against {factor}]({size_png})", ""]
    for value, runs in seeded:
        parts += [f"## {factor} = {_show(value)}", "", *_value_sections(runs, columns, baseline,
                                                                        "###")]
    study = _study(title, factor, baseline, columns, [
        (value, study_numbers(runs, columns, baseline)) for value, runs in seeded])
    study.update(reference_value=reference, factor_effects=_differences_json(factor_effects),
                 interactions=_differences_json(gains))
    _write_json(out / f"study{suffix}.json", study)
    path = out / f"report{suffix}.md"
    path.write_text("\n".join(parts))
    return path


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _study(title: str, factor: str | None, baseline: str | None, columns: list[Metric],
           values: list[tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
    return {"title": title, "factor": factor, "baseline": baseline, "confidence": CONFIDENCE,
            "effect_rule": "the CI of the paired difference excludes 0",
            "columns": [{"key": c.key, "title": c.title} for c in columns],
            "values": [{"value": value, **numbers} for value, numbers in values]}
