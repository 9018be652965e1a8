"""RPN proposal recall, scored by pycocotools the way COCO defines average recall (AR)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pycocotools.coco import COCO
from torch import Tensor

from detkit.eval._cocoapi import AREA_LABELS, load_results, mean_valid, run_cocoeval

# Key suffix per COCOeval area range label: AR, ARs, ARm, ARl.
_AREA_SUFFIX = {"all": "", "small": "s", "medium": "m", "large": "l"}


def proposal_recall(
    coco_gt: COCO, proposals: dict[int, Tensor], limits: Sequence[int] = (100, 300, 1000),
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """Class-agnostic average recall of RPN proposals at several proposal budgets.

    Runs ``COCOeval`` with ``params.useCats = 0`` (categories ignored, as COCO scores
    proposals) and ``params.maxDets = sorted(limits)``: AR is recall averaged over IoU
    thresholds .50:.05:.95; crowd ground truth is never required (proposals on it are ignored).
    Each proposal's score is minus its rank, so COCOeval keeps the given order and the top ``N``
    of an image are exactly its first ``N`` proposals.

    Args:
        coco_gt: ground truth. Images absent from ``proposals`` have no proposals (their ground
            truth counts as missed).
        proposals: ``{image_id: Tensor[P, 4]}`` xyxy boxes in original image pixels, sorted by
            objectness, highest first.
        limits: proposal budgets ``N`` per image.
        image_ids: the images to evaluate (default: every image of ``coco_gt``).

    Returns:
        For each ``N`` in ``limits``: ``proposal_AR@N``, ``proposal_ARs@N``, ``proposal_ARm@N``,
        ``proposal_ARl@N`` (area "all", small, medium, large by annotation ``area``), each the
        mean over IoU thresholds of ``eval["recall"]`` entries > -1, as
        ``COCOeval.summarize`` computes AR; -1.0 when the bucket has no non-crowd ground truth.
        No proposals at all gives 0.0 wherever ground truth exists.
    """
    budgets = sorted({int(n) for n in limits})
    coco_dt = load_results(coco_gt, _proposal_results(coco_gt, proposals))
    coco_eval = run_cocoeval(coco_gt, coco_dt, image_ids=image_ids, use_cats=False,
                             max_dets=budgets)
    recall = coco_eval.eval["recall"]  # [T iou, K=1 (categories pooled), A area, M budgets]
    area_labels = coco_eval.params.areaRngLbl
    metrics = {}
    for n in limits:
        m = budgets.index(int(n))
        for area in AREA_LABELS:
            a = area_labels.index(area)
            metrics[f"proposal_AR{_AREA_SUFFIX[area]}@{n}"] = mean_valid(recall[:, :, a, m])
    return metrics


def _proposal_results(coco_gt: COCO, proposals: dict[int, Tensor]) -> list[dict]:
    """Proposals as COCO results: score = -rank keeps the order; any ground truth category
    will do, since useCats=0 pools categories (but COCOeval only reads results whose
    category is one of ``params.catIds``)."""
    cat_ids = coco_gt.getCatIds()
    if not cat_ids:
        raise ValueError("coco_gt has no categories")
    results = []
    for image_id, boxes_xyxy in proposals.items():
        if boxes_xyxy.dim() != 2 or boxes_xyxy.shape[1] != 4:
            raise ValueError(
                f"proposals[{image_id}] must be a Tensor[P, 4], got {tuple(boxes_xyxy.shape)}"
            )
        boxes = boxes_xyxy.detach().cpu().to(torch.float64)
        boxes_xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        results += [
            {"image_id": int(image_id), "category_id": cat_ids[0], "bbox": box,
             "score": -float(rank)}
            for rank, box in enumerate(boxes_xywh)
        ]
    return results
