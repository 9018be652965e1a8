"""COCO-style detection metrics on top of pycocotools.

pycocotools' ``COCOeval`` is the reference implementation of COCO AP/AR; it is reused as is
(never re-implemented) so numbers match published COCO results. This module adds what it
lacks: an in-memory ground truth builder (VOC and synthetic sets have no annotation file), the
model-output -> results conversion, a guard for empty result sets, silence, and a plain dict
with per-class AP and PR curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from detkit.eval._cocoapi import (
    iou_index,
    load_results,
    mean_valid,
    mean_valid_over,
    quiet,
    run_cocoeval,
)

# Order of COCOeval.stats (COCOeval.summarize -> _summarizeDets).
COCO_STAT_KEYS = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
# Index of maxDets=100 in the default params.maxDets = [1, 10, 100].
_MAX_DETS_100 = 2


def build_coco_gt(
    images: list[dict], annotations: list[dict], categories: list[dict]
) -> COCO:
    """Build an in-memory pycocotools ``COCO`` ground truth (no annotation file needed).

    Args:
        images: ``{"id", "width", "height", "file_name"}`` per image.
        annotations: ``{"id"?, "image_id", "category_id", "bbox", "area"?, "iscrowd"?}`` with
            ``bbox = [x, y, w, h]`` in original image pixels. Missing ids are assigned after the
            largest given id (ids start at 1: COCOeval uses id 0 to mean "unmatched", so an
            annotation with id 0 would never count as detected, and is rejected). A missing
            ``area`` becomes the box area ``w * h`` (COCO's own ``area`` is the mask area and
            decides the size bucket; keep it when the data has it); ``iscrowd`` defaults to 0.
        categories: ``{"id", "name"}`` per category; ids need not be contiguous.

    Returns:
        A ``COCO`` object whose index is built (``createIndex`` run silently). The input dicts
        are copied, never modified.
    """
    given_ids = [a["id"] for a in annotations if a.get("id") is not None]
    if len(set(given_ids)) != len(given_ids):
        raise ValueError("annotation ids must be unique")
    if any(i <= 0 for i in given_ids):
        raise ValueError("annotation ids must be >= 1 (COCOeval treats id 0 as 'no match')")
    next_id = max(given_ids, default=0) + 1
    anns = []
    for ann in annotations:
        ann = dict(ann)
        if ann.get("id") is None:
            ann["id"] = next_id
            next_id += 1
        ann["bbox"] = [float(v) for v in ann["bbox"]]
        if "area" not in ann:
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        ann.setdefault("iscrowd", 0)
        anns.append(ann)
    coco = COCO()
    coco.dataset = {
        "images": [dict(img) for img in images],
        "annotations": anns,
        "categories": [dict(cat) for cat in categories],
    }
    with quiet():
        coco.createIndex()
    return coco


def to_coco_results(
    image_id: int, boxes_xyxy: Tensor, scores: Tensor, labels: Tensor,
    label_to_category_id: Sequence[int],
) -> list[dict]:
    """Convert one image's detections to COCO results dicts.

    Args:
        image_id: the COCO image id.
        boxes_xyxy: ``Tensor[N, 4]`` boxes in original image pixels (already mapped back from
            the network's input resolution).
        scores: ``Tensor[N]`` confidences.
        labels: ``Tensor[N]`` int contiguous model labels in ``1..K`` (0 is background).
        label_to_category_id: ``label_to_category_id[label]`` is the dataset category id
            (index 0, background, is unused).

    Returns:
        ``[{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}]`` with
        python numbers, one dict per detection.
    """
    if boxes_xyxy.dim() != 2 or boxes_xyxy.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must be a Tensor[N, 4], got {tuple(boxes_xyxy.shape)}")
    if not (len(boxes_xyxy) == len(scores) == len(labels)):
        raise ValueError("boxes_xyxy, scores and labels must have the same length")
    labels_list = labels.detach().cpu().long().tolist()
    if any(label < 1 or label >= len(label_to_category_id) for label in labels_list):
        raise ValueError(
            f"labels must lie in 1..{len(label_to_category_id) - 1} (0 is background), "
            f"got {sorted(set(labels_list))}"
        )
    boxes = boxes_xyxy.detach().cpu().to(torch.float64)
    boxes_xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    return [
        {
            "image_id": int(image_id),
            "category_id": int(label_to_category_id[label]),
            "bbox": box,
            "score": score,
        }
        for box, score, label in zip(
            boxes_xywh, scores.detach().cpu().double().tolist(), labels_list, strict=True
        )
    ]


def evaluate_detections(
    coco_gt: COCO, results: list[dict], image_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """COCO box AP/AR of ``results`` with pycocotools' ``COCOeval`` (iouType "bbox"), silently.

    Crowd ground truth (``iscrowd=1``) is handled by COCOeval itself: it is never required,
    and detections matched to it are ignored. An empty ``results`` list is valid (early
    training): COCOeval still runs, on an empty results object.

    Args:
        coco_gt: ground truth (a loaded annotation file or ``build_coco_gt``).
        results: COCO results dicts (``to_coco_results``), boxes ``[x, y, w, h]`` in original
            image pixels. Not modified.
        image_ids: evaluate on these images only (default: every image of ``coco_gt``).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
        "ARl"}``: floats equal to ``COCOeval.stats`` (AP = AP@[.5:.95], s/m/l = area
        buckets < 32², 32²-96², > 96² of the annotation ``area``). A value is -1.0, as in
        pycocotools, when its bucket has no (non-crowd) ground truth.
        ``"per_class"``: ``{category name: AP@[.5:.95]}`` at area "all", maxDets 100, computed
        as detectron2's COCOEvaluator does (mean of ``eval["precision"]`` entries > -1), but
        as a fraction, and -1.0 (instead of NaN) for a category without ground truth.
        ``"pr_curve"``: ``{"0.50", "0.75", "0.50:0.95": list of 101 floats}``, precision at
        recall 0, 0.01, ..., 1 (area "all", maxDets 100), averaged over categories (and IoU
        thresholds for "0.50:0.95") ignoring -1 entries; -1.0 if no category has ground truth.
        ``"AP_per_iou"``: ``{"0.50": ..., "0.55": ..., ..., "0.95": ...}``, AP at each IoU
        threshold (area "all", maxDets 100; its "0.50" and "0.75" equal AP50 and AP75).
    """
    coco_eval = run_cocoeval(coco_gt, load_results(coco_gt, results), image_ids=image_ids)
    with quiet():
        coco_eval.summarize()
    metrics: dict[str, Any] = {
        key: float(value) for key, value in zip(COCO_STAT_KEYS, coco_eval.stats, strict=True)
    }
    metrics["per_class"] = _per_class_ap(coco_eval, coco_gt)
    metrics["pr_curve"] = _pr_curves(coco_eval)
    precision = coco_eval.eval["precision"][:, :, :, 0, _MAX_DETS_100]  # [T, R, K]
    metrics["AP_per_iou"] = {
        f"{iou:.2f}": mean_valid(precision[t]) for t, iou in enumerate(coco_eval.params.iouThrs)
    }
    return metrics


def _per_class_ap(coco_eval: COCOeval, coco_gt: COCO) -> dict[str, float]:
    """detectron2 ``COCOEvaluator._derive_coco_results``: per-category AP@[.5:.95]."""
    # precision: [T iou, R recall, K category, A area, M maxDets]; K follows params.catIds.
    precision = coco_eval.eval["precision"]
    return {
        coco_gt.cats[cat_id]["name"]: mean_valid(precision[:, :, k, 0, _MAX_DETS_100])
        for k, cat_id in enumerate(coco_eval.params.catIds)
    }


def _pr_curves(coco_eval: COCOeval) -> dict[str, list[float]]:
    """Category-averaged precision at the 101 recall thresholds (area all, maxDets 100)."""
    precision = coco_eval.eval["precision"][:, :, :, 0, _MAX_DETS_100]  # [T, R, K]
    curves = {}
    for name, iou in (("0.50", 0.5), ("0.75", 0.75)):
        curves[name] = mean_valid_over(precision[iou_index(coco_eval, iou)], axis=1).tolist()
    curves["0.50:0.95"] = mean_valid_over(precision, axis=(0, 2)).tolist()
    return curves


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A fixed-width text table of the metrics present in ``metrics``.

    Rows, in order and only when present: the 12 COCO stats, ``proposal_*`` keys (from
    ``proposal_recall``), ``voc_AP50`` / ``voc_AP50_07`` (from ``voc_ap``), COCO per-class AP,
    then VOC per-class AP (area / 11-point). Values have 3 decimals; -1 (no ground truth) and
    NaN print as "n/a".

    Args:
        metrics: a dict merging any of ``evaluate_detections``, ``proposal_recall`` and
            ``voc_ap`` outputs.
    """
    rows: list[tuple[str, str]] = [(key, _fmt(metrics[key])) for key in COCO_STAT_KEYS
                                   if key in metrics]
    rows += [(key, _fmt(value)) for key, value in metrics.items() if key.startswith("proposal_")]
    rows += [(key, _fmt(metrics[key])) for key in ("voc_AP50", "voc_AP50_07") if key in metrics]
    rows += [(key, f"{metrics[key]:.{digits}f}") for key, digits in
             (("train_images_per_s", 2), ("infer_ms_per_image", 1)) if key in metrics]
    if metrics.get("per_class"):
        rows.append(("per-class AP@[.5:.95]", ""))
        rows += [(f"  {name}", _fmt(ap)) for name, ap in metrics["per_class"].items()]
    if metrics.get("voc_per_class"):
        rows.append(("VOC per-class AP50 (area / 11-pt)", ""))
        rows += [(f"  {class_id}", f"{_fmt(v['ap'])} / {_fmt(v['ap07'])}")
                 for class_id, v in metrics["voc_per_class"].items()]
    # Section headings (rows without a value) may overhang the value column.
    width = max([len("metric")] + [len(name) for name, value in rows if value])
    lines = [f"{'metric':<{width}}  value", "-" * (width + 2 + 13)]
    lines += [f"{name:<{width}}  {value}".rstrip() for name, value in rows]
    return "\n".join(lines)


def _fmt(value: float) -> str:
    value = float(value)
    if math.isnan(value) or value == -1.0:
        return "n/a"
    return f"{value:.3f}"


