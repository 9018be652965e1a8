"""Every scalar metric key detkit reports, defined once.

A :class:`Metric` says what a key is called in reports, which group it belongs to, how it is
formatted and whether higher is better. The printed table (:func:`format_metrics_table`),
TensorBoard (``DetectionModule`` logs :func:`scalar_metrics` under ``val/<key>``),
``metrics.json`` (ordered by :func:`ordered_metrics`) and the comparison report
(``detkit.eval.report``) all read these definitions; adding a metric means adding it here.

Proposal recall keys form a family, ``proposal_AR{size}@{N}`` with size "" (all), "s", "m",
"l" and ``N`` the proposals per image (see ``detkit.eval.proposals``); :func:`metric` builds
their definitions from the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from detkit._validation import check_choice

Group = Literal["coco", "proposal", "voc", "speed", "model"]
# Groups whose values are accuracies in [0, 1], where -1 means "no ground truth here".
ACCURACY_GROUPS: tuple[Group, ...] = ("coco", "proposal", "voc")


@dataclass(frozen=True)
class Metric:
    """One metric key.

    Attributes:
        key: the key in metrics dicts, ``metrics.json`` and TensorBoard (``val/<key>``).
        title: short column title in reports.
        group: "coco" (COCO AP/AR), "proposal" (RPN recall), "voc", "speed" or "model".
        higher_is_better: the direction reports mark as best.
        digits: decimals shown (after ``scale``).
        scale: factor applied before formatting (e.g. 1e-6 for parameters in millions).
        unit: suffix in the printed table ("" for fractions).
    """

    key: str
    title: str
    group: Group
    higher_is_better: bool = True
    digits: int = 3
    scale: float = 1.0
    unit: str = ""

    @property
    def is_accuracy(self) -> bool:
        return self.group in ACCURACY_GROUPS

    def format(self, value: float) -> str:
        """``value`` with this metric's decimals; "n/a" for NaN, and for -1 (no ground truth
        in the bucket, as pycocotools writes it) when it is an accuracy."""
        value = float(value)
        if math.isnan(value) or (self.is_accuracy and value == -1.0):
            return "n/a"
        return f"{value * self.scale:.{self.digits}f}"


def _coco(key: str) -> Metric:
    return Metric(key, key, "coco")


# Order of COCOeval.stats (COCOeval.summarize -> _summarizeDets).
COCO_STAT_KEYS = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
_FIXED = (
    *(_coco(key) for key in COCO_STAT_KEYS),
    Metric("voc_AP50", "VOC AP50", "voc"),
    Metric("voc_AP50_07", "VOC AP50 (11-pt)", "voc"),
    Metric("train_images_per_s", "train img/s", "speed", True, digits=2),
    Metric("infer_ms_per_image", "infer ms/img", "speed", False, digits=1, unit=" ms"),
    Metric("params", "params (M)", "model", False, digits=1, scale=1e-6, unit="M"),
)
METRICS: dict[str, Metric] = {m.key: m for m in _FIXED}
"""The fixed keys, in the order tables list them (proposal keys come after the COCO ones)."""

_PROPOSAL_KEY = re.compile(r"proposal_AR(|s|m|l)@([1-9][0-9]*)")
PROPOSAL_SIZES = ("", "s", "m", "l")


def proposal_key(size: str, proposals: int) -> str:
    """``proposal_AR{size}@{proposals}``, e.g. ``proposal_ARs@300``."""
    check_choice("size", size, PROPOSAL_SIZES)
    return f"proposal_AR{size}@{int(proposals)}"


def metric(key: str) -> Metric:
    """The definition of ``key``.

    Raises:
        KeyError: naming the key and the known ones, when ``key`` has no definition.
    """
    if key in METRICS:
        return METRICS[key]
    found = _PROPOSAL_KEY.fullmatch(key)
    if found:
        size, count = found.groups()
        return Metric(key, f"pAR{size}@{count}", "proposal")
    raise KeyError(f"no metric definition for {key!r}; defined: {', '.join(METRICS)} and "
                   "proposal_AR{,s,m,l}@N (add new metrics to detkit/eval/metrics.py)")


def is_metric(key: str) -> bool:
    return key in METRICS or _PROPOSAL_KEY.fullmatch(key) is not None


def _row_order(keys: Iterable[str]) -> list[str]:
    """Defined keys in table order: COCO stats, proposal keys (in the given order), then the
    other fixed keys."""
    keys = list(keys)
    proposal = [k for k in keys if _PROPOSAL_KEY.fullmatch(k)]
    return ([k for k in COCO_STAT_KEYS if k in keys] + proposal
            + [k for k in METRICS if k in keys and k not in COCO_STAT_KEYS])


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The defined scalar entries of ``metrics`` in table order (what TensorBoard logs).

    Raises:
        KeyError: for a float entry that has no definition (a new metric must get one).
    """
    undefined = [k for k, v in metrics.items() if isinstance(v, float) and not is_metric(k)]
    if undefined:
        metric(undefined[0])  # raises, naming the key
    return {k: float(metrics[k]) for k in _row_order(metrics)}


def ordered_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with the defined scalars first, in table order (for ``metrics.json``), then
    the other entries (per-class AP, curves, ...) as they were."""
    scalars = scalar_metrics(metrics)
    return {**scalars, **{k: v for k, v in metrics.items() if k not in scalars}}


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A fixed-width text table of the defined metrics present in ``metrics``.

    Rows: the defined scalar keys in table order (COCO stats, ``proposal_*``, VOC AP, speed,
    parameters), each formatted by its :class:`Metric`, then COCO per-class AP and VOC
    per-class AP (area / 11-point) when present.

    Args:
        metrics: a dict merging any of ``evaluate_detections``, ``proposal_recall`` and
            ``voc_ap`` outputs and the speed / size entries of a training run.
    """
    rows = [(key, metric(key).format(metrics[key]) + metric(key).unit)
            for key in _row_order(metrics)]
    accuracy = _coco("per_class")
    if metrics.get("per_class"):
        rows.append(("per-class AP@[.5:.95]", ""))
        rows += [(f"  {name}", accuracy.format(ap)) for name, ap in metrics["per_class"].items()]
    if metrics.get("voc_per_class"):
        rows.append(("VOC per-class AP50 (area / 11-pt)", ""))
        rows += [(f"  {class_id}", f"{accuracy.format(v['ap'])} / {accuracy.format(v['ap07'])}")
                 for class_id, v in metrics["voc_per_class"].items()]
    # Section headings (rows without a value) may overhang the value column.
    width = max([len("metric")] + [len(name) for name, value in rows if value])
    lines = [f"{'metric':<{width}}  value", "-" * (width + 2 + 13)]
    lines += [f"{name:<{width}}  {value}".rstrip() for name, value in rows]
    return "\n".join(lines)
