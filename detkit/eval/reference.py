"""pycocotools ``COCOeval`` runs of detkit's COCO metrics: the reference the fast path is
tested and benchmarked against.

These are what ``evaluate_detections`` and ``proposal_recall`` computed before they were
re-expressed on arrays (``detkit.eval._cocoeval``): same signatures, same dicts, pycocotools'
own ``evaluate`` / ``accumulate`` / ``summarize``. They take minutes on COCO-sized data; use
them to check, not to train.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from detkit.eval._cocoapi import AREA_LABELS, mean_valid, quiet
from detkit.eval.coco import check_image_ids, metrics_from_precision
from detkit.eval.groundtruth import build_coco_gt
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


def load_results(coco_gt: COCO, results: list[dict]) -> COCO:
    """``coco_gt.loadRes(results)`` that accepts an empty list and never mutates ``results``.

    ``COCO.loadRes([])`` raises (it reads ``anns[0]``), so an empty result set gets a results
    object built the way ``loadRes`` would build it (same images and categories, no
    annotations); COCOeval then scores it with its own semantics (0 where ground truth exists).
    """
    check_image_ids({r["image_id"] for r in results}, coco_gt)
    with quiet():
        if results:
            # loadRes adds id/area/iscrowd/segmentation keys to each dict: work on copies.
            return coco_gt.loadRes([dict(r) for r in results])
    return build_coco_gt(coco_gt.dataset.get("images", []), [],
                         coco_gt.dataset.get("categories", []),
                         info=copy.deepcopy(coco_gt.dataset.get("info", {})))


def run_cocoeval(
    coco_gt: COCO, coco_dt: COCO, *, image_ids: Sequence[int] | None = None,
    use_cats: bool = True, max_dets: Sequence[int] | None = None,
) -> COCOeval:
    """Run ``COCOeval(iouType="bbox")`` evaluate + accumulate silently and return it.

    Args:
        coco_gt, coco_dt: ground truth and results objects.
        image_ids: restrict evaluation to these images (default: all images of ``coco_gt``).
        use_cats: ``params.useCats``; False pools all categories (proposal scoring).
        max_dets: ``params.maxDets`` (default ``[1, 10, 100]``).
    """
    coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
    if image_ids is not None:
        coco_eval.params.imgIds = [int(i) for i in image_ids]
    coco_eval.params.useCats = int(use_cats)
    if max_dets is not None:
        coco_eval.params.maxDets = sorted(int(m) for m in max_dets)
    with quiet():
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval
