"""pycocotools ``COCOeval`` runs of detkit's COCO metrics: the reference the fast path is
tested and benchmarked against.

These are what ``evaluate_detections`` and ``proposal_recall`` computed before they were
re-expressed on arrays (``detkit.eval._cocoeval``): same signatures, same dicts, pycocotools'
own ``evaluate`` / ``accumulate`` / ``summarize``. They take minutes on COCO-sized data; use
them to check, not to train.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pycocotools.coco import COCO
from torch import Tensor

from detkit.eval._cocoapi import AREA_LABELS, load_results, mean_valid, quiet, run_cocoeval
from detkit.eval.coco import metrics_from_precision
from detkit.eval.metrics import PROPOSAL_SIZES, proposal_key
from detkit.eval.proposals import STANDARD_BUDGETS


def reference_evaluate_detections(
    coco_gt: COCO, results: list[dict], image_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """``evaluate_detections`` computed by pycocotools' ``COCOeval`` (iouType "bbox")."""
    coco_eval = run_cocoeval(coco_gt, load_results(coco_gt, results), image_ids=image_ids)
    with quiet():
        coco_eval.summarize()
    return metrics_from_precision(coco_eval.stats, coco_eval.eval["precision"],
                                  coco_eval.params, coco_gt)


def reference_proposal_recall(
    coco_gt: COCO, proposals: dict[int, Tensor], limits: Sequence[int] = STANDARD_BUDGETS,
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """``proposal_recall`` computed by ``COCOeval`` with ``useCats = 0`` and
    ``maxDets = sorted(limits)``; each proposal's score is minus its rank."""
    budgets = sorted({int(n) for n in limits})
    coco_dt = load_results(coco_gt, _proposal_results(coco_gt, proposals))
    coco_eval = run_cocoeval(coco_gt, coco_dt, image_ids=image_ids, use_cats=False,
                             max_dets=budgets)
    recall = coco_eval.eval["recall"]  # [T iou, K=1 (categories pooled), A area, M budgets]
    area_labels = coco_eval.params.areaRngLbl
    return {proposal_key(size, n): mean_valid(recall[:, :, area_labels.index(area),
                                                      budgets.index(int(n))])
            for n in limits for area, size in zip(AREA_LABELS, PROPOSAL_SIZES, strict=True)}


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
