"""Private helpers around pycocotools: silence its prints, guard empty result sets.

pycocotools prints progress on stdout from ``COCO.createIndex``, ``COCO.loadRes`` and every
``COCOeval`` step; the public functions of ``detkit.eval`` return numbers and print nothing.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# COCOeval.Params.setDetParams: areaRngLbl = ['all', 'small', 'medium', 'large'].
AREA_LABELS = ("all", "small", "medium", "large")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow whatever pycocotools prints on stdout inside the block."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_results(coco_gt: COCO, results: list[dict]) -> COCO:
    """``coco_gt.loadRes(results)`` that accepts an empty list and never mutates ``results``.

    ``COCO.loadRes([])`` raises (it reads ``anns[0]``), so an empty result set gets a results
    object built the way ``loadRes`` would build it (same images and categories, no
    annotations); COCOeval then scores it with its own semantics (0 where ground truth exists).
    """
    known = set(coco_gt.getImgIds())
    unknown = sorted({r["image_id"] for r in results} - known)
    if unknown:
        raise ValueError(f"results refer to image ids absent from coco_gt: {unknown[:10]}")
    with quiet():
        if results:
            # loadRes adds id/area/iscrowd/segmentation keys to each dict: work on copies.
            return coco_gt.loadRes([dict(r) for r in results])
        coco_dt = COCO()
        coco_dt.dataset = {
            "info": copy.deepcopy(coco_gt.dataset.get("info", {})),
            "images": list(coco_gt.dataset.get("images", [])),
            "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
            "annotations": [],
        }
        coco_dt.createIndex()
    return coco_dt


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


def mean_valid(values: np.ndarray) -> float:
    """``COCOeval.summarize``'s reduction: mean of the entries ``> -1`` (-1 marks "no ground
    truth"), or -1.0 when there is none. Same numpy call as pycocotools, so bit-identical."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def mean_valid_over(values: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """``mean_valid`` along ``axis`` (the other axes are kept); -1 where no entry is valid."""
    valid = values > -1
    count = valid.sum(axis=axis)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), -1.0)


def iou_index(iou_thresholds: np.ndarray, iou: float) -> int:
    """Index of IoU threshold ``iou`` in ``params.iouThrs`` (linspace values: compare closely)."""
    matches = np.flatnonzero(np.isclose(iou_thresholds, iou))
    if matches.size != 1:
        raise ValueError(f"IoU threshold {iou} is not in {iou_thresholds}")
    return int(matches[0])
