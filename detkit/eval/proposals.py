"""RPN proposal recall as COCO defines average recall (AR), at COCO's size.

The definition is pycocotools' ``COCOeval`` with ``params.useCats = 0`` (categories pooled) and
``params.maxDets`` = the proposal budgets, as the pycocotools reference in
``detkit.eval.reference`` runs it; the computation is ``detkit.eval._cocoeval``'s array version
(5,000 images x 1,000 proposals in seconds; COCOeval on those 5 million results does not finish
in reasonable time).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor

from detkit.eval._cocoapi import mean_valid
from detkit.eval._cocoeval import Boxes, detection_boxes, ground_truth_boxes, match
from detkit.eval.coco import check_image_ids, evaluated_params
from detkit.eval.metrics import PROPOSAL_SIZES, proposal_key

# The budgets COCO and detectron2 report proposal recall at.
STANDARD_BUDGETS = (100, 300, 1000)


def proposal_budgets(kept: int) -> tuple[int, ...]:
    """The budgets to report when the RPN keeps ``kept`` proposals per image at test time:
    the standard budgets below ``kept``, and ``kept`` itself (AR@1000 of an RPN that keeps 300
    would just repeat AR@300). E.g. 300 -> (100, 300); 1000 -> (100, 300, 1000); 50 -> (50,).
    """
    if kept < 1:
        raise ValueError(f"the proposal count must be at least 1, got {kept}")
    return (*(n for n in STANDARD_BUDGETS if n < kept), int(kept))


def proposal_recall(
    coco_gt: COCO, proposals: dict[int, Tensor], limits: Sequence[int] = STANDARD_BUDGETS,
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """Class-agnostic average recall of RPN proposals at several proposal budgets.

    COCO's AR definition: recall averaged over IoU thresholds .50:.05:.95, categories ignored;
    crowd ground truth is never required (proposals on it are ignored). Per image, the top
    ``N`` proposals are its first ``N``; they are matched greedily in that order, each to the
    unmatched ground truth box it overlaps most (COCOeval's rule).

    Args:
        coco_gt: ground truth. Images absent from ``proposals`` have no proposals (their ground
            truth counts as missed).
        proposals: ``{image_id: Tensor[P, 4]}`` xyxy boxes in original image pixels, sorted by
            objectness, highest first.
        limits: proposal budgets ``N`` per image (see :func:`proposal_budgets`).
        image_ids: the images to evaluate (default: every image of ``coco_gt``).

    Returns:
        For each ``N`` in ``limits``: ``proposal_AR@N``, ``proposal_ARs@N``, ``proposal_ARm@N``,
        ``proposal_ARl@N`` (area "all", small, medium, large by annotation ``area``), each the
        mean over IoU thresholds of COCOeval's ``eval["recall"]`` entries > -1, as
        ``COCOeval.summarize`` computes AR; -1.0 when the bucket has no non-crowd ground truth.
        No proposals at all gives 0.0 wherever ground truth exists.
    """
    budgets = sorted({int(n) for n in limits})
    if not coco_gt.getCatIds():
        raise ValueError("coco_gt has no categories")
    check_image_ids({int(i) for i in proposals}, coco_gt)
    params = evaluated_params(coco_gt, image_ids)
    params.useCats, params.maxDets = 0, budgets
    gt = ground_truth_boxes(coco_gt, params.imgIds, params.catIds)
    matching = match(gt, _proposal_boxes(proposals, params.imgIds, budgets[-1]), params,
                     per_detection=False)
    recall = _recall(matching.gt, matching.gt_ignore, matching.gt_dt_rank, budgets)  # [T, A, M]
    metrics = {}
    for n in limits:
        m = budgets.index(int(n))
        for a, size in enumerate(PROPOSAL_SIZES):  # pycocotools' areaRngLbl order
            metrics[proposal_key(size, n)] = mean_valid(recall[:, a, m])
    return metrics


def _proposal_boxes(proposals: dict[int, Tensor], image_ids: list[int], keep: int) -> Boxes:
    """Proposals of the evaluated images, at most ``keep`` each, as detections whose score is
    minus their rank (so the given order is the score order)."""
    image_index = {i: n for n, i in enumerate(image_ids)}
    for image_id, boxes_xyxy in proposals.items():
        if boxes_xyxy.dim() != 2 or boxes_xyxy.shape[1] != 4:
            raise ValueError(
                f"proposals[{image_id}] must be a Tensor[P, 4], got {tuple(boxes_xyxy.shape)}"
            )
    evaluated = sorted((image_index[int(i)], boxes[:keep]) for i, boxes in proposals.items()
                       if int(i) in image_index)
    counts = [len(boxes) for _, boxes in evaluated]
    if not counts:
        boxes = torch.zeros(0, 4, dtype=torch.float64)
    else:
        boxes = torch.cat([b.detach().cpu() for _, b in evaluated]).to(torch.float64)
    boxes_xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).numpy()
    image = np.repeat([index for index, _ in evaluated], counts).astype(np.int64)
    rank = np.arange(len(image)) - np.repeat(np.cumsum(counts) - counts, counts)
    return detection_boxes(image, np.zeros(len(image), np.int64), boxes_xywh,
                           -rank.astype(np.float64))


def _recall(gt: Boxes, gt_ignore: np.ndarray, gt_dt_rank: np.ndarray,
            budgets: list[int]) -> np.ndarray:
    """COCOeval's ``eval["recall"][:, 0]``, ``[T, A, M]``: the share of non-ignored ground
    truth (with an id other than 0, which COCOeval reads as "no match") matched by a proposal
    ranked below each budget; -1 where there is none to find."""
    regular = ~gt_ignore  # [G, A]
    npig = regular.sum(axis=0)  # [A]
    found = regular[:, None, :, None] & (gt.ann_id != 0)[:, None, None, None] & (
        gt_dt_rank[..., None] < np.asarray(budgets)[None, None, None, :])  # [G, T, A, M]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = found.sum(axis=0) / npig[None, :, None]
    return np.where(npig[None, :, None] > 0, recall, -1.0)
