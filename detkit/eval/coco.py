"""COCO-style detection metrics with pycocotools' exact definitions, at COCO's size.

``COCOeval``'s semantics (matching, crowd, size buckets, interpolated precision) are kept to
the bit and checked against pycocotools in tests/eval; the computation is
``detkit.eval._cocoeval``'s array version, because pycocotools' Python loops take minutes on a
COCO-sized validation set (see that module). This module adds what pycocotools lacks: the
model-output -> results conversion, silence, and a plain dict with per-class AP, PR curves and
AP per IoU threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import Params
from torch import Tensor

from detkit.eval._cocoapi import MAX_DETS_100, iou_index, mean_valid, mean_valid_over
from detkit.eval._cocoeval import (
    accumulate,
    default_params,
    detection_boxes,
    ground_truth_boxes,
    match,
    summarize_stats,
)
from detkit.eval.metrics import COCO_STAT_KEYS


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


def detections_to_coco_results(
    detections: dict[int, dict[str, Tensor]], label_to_category_id: Sequence[int],
) -> list[dict]:
    """All images' detections as COCO results (``to_coco_results`` per image, in dict order).

    Args:
        detections: ``{image_id: {"boxes": Tensor[N, 4] xyxy in original image pixels,
            "scores": Tensor[N], "labels": Tensor[N] in 1..K}}``.
        label_to_category_id: as for ``to_coco_results``.
    """
    return [result for image_id, det in detections.items()
            for result in to_coco_results(image_id, det["boxes"], det["scores"], det["labels"],
                                          label_to_category_id)]


def evaluate_detections(
    coco_gt: COCO, results: list[dict], image_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """COCO box AP/AR of ``results``, equal to pycocotools' ``COCOeval`` (iouType "bbox").

    Computed by ``detkit.eval._cocoeval`` (pycocotools' definitions on arrays: 5,000 images
    with 100 detections each take seconds, not minutes). Crowd ground truth (``iscrowd=1``)
    is never required, and detections matched to it are ignored. An empty ``results`` list is
    valid (early training). Results whose category is not in ``coco_gt`` are left out, as
    COCOeval does.

    Args:
        coco_gt: ground truth (a loaded annotation file or ``build_coco_gt``). Not modified.
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
    params = evaluated_params(coco_gt, image_ids)
    check_image_ids({int(r["image_id"]) for r in results}, coco_gt)
    cat_index = {c: k for k, c in enumerate(params.catIds)}
    image_index = {i: n for n, i in enumerate(params.imgIds)}
    # COCOeval reads only results on evaluated images whose category is a known one.
    kept = [r for r in results if r["image_id"] in image_index and r["category_id"] in cat_index]
    dt = detection_boxes(
        np.array([image_index[r["image_id"]] for r in kept], np.int64),
        np.array([cat_index[r["category_id"]] for r in kept], np.int64),
        np.array([r["bbox"] for r in kept], np.float64),
        np.array([r["score"] for r in kept], np.float64),
    )
    gt = ground_truth_boxes(coco_gt, params.imgIds, params.catIds)
    accumulated = accumulate(match(gt, dt, params), params, len(params.catIds))
    stats = summarize_stats(accumulated["precision"], accumulated["recall"], params)
    return metrics_from_precision(stats, accumulated["precision"], params, coco_gt)


def evaluated_params(coco_gt: COCO, image_ids: Sequence[int] | None) -> Params:
    """pycocotools' box ``Params`` for ``coco_gt``: sorted unique image ids (default: all
    images) and category ids, as ``COCOeval.evaluate`` sets them."""
    params = default_params()
    ids = coco_gt.getImgIds() if image_ids is None else image_ids
    params.imgIds = sorted({int(i) for i in ids})
    params.catIds = sorted(coco_gt.getCatIds())
    return params


def check_image_ids(image_ids: set[int], coco_gt: COCO) -> None:
    """Results on an image absent from ``coco_gt`` are an error (``COCO.loadRes`` asserts)."""
    unknown = sorted(image_ids - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"results refer to image ids absent from coco_gt: {unknown[:10]}")


def metrics_from_precision(stats: Sequence[float], precision: np.ndarray, params: Params,
                           coco_gt: COCO) -> dict[str, Any]:
    """The ``evaluate_detections`` dict from ``COCOeval``'s 12 stats and ``precision``
    ``[T, R, K, A, M]`` (shared with the pycocotools reference in ``detkit.eval.reference``)."""
    metrics: dict[str, Any] = {
        key: float(value) for key, value in zip(COCO_STAT_KEYS, stats, strict=True)
    }
    at_100 = precision[:, :, :, 0, MAX_DETS_100]  # [T, R, K], area "all"
    # detectron2 COCOEvaluator._derive_coco_results: per-category AP@[.5:.95].
    metrics["per_class"] = {coco_gt.cats[cat_id]["name"]: mean_valid(at_100[:, :, k])
                            for k, cat_id in enumerate(params.catIds)}
    curves = {name: mean_valid_over(at_100[iou_index(params.iouThrs, iou)], axis=1).tolist()
              for name, iou in (("0.50", 0.5), ("0.75", 0.75))}
    curves["0.50:0.95"] = mean_valid_over(at_100, axis=(0, 2)).tolist()
    metrics["pr_curve"] = curves
    metrics["AP_per_iou"] = {f"{iou:.2f}": mean_valid(at_100[t])
                             for t, iou in enumerate(params.iouThrs)}
    return metrics
