"""Private helpers around pycocotools: silence its prints, its reductions.

pycocotools prints progress on stdout from ``COCO.createIndex``, ``COCO.loadRes`` and every
``COCOeval`` step; the public functions of ``detkit.eval`` return numbers and print nothing.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import numpy as np

# COCOeval.Params.setDetParams: areaRngLbl = ['all', 'small', 'medium', 'large'].
AREA_LABELS = ("all", "small", "medium", "large")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow whatever pycocotools prints on stdout inside the block."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


MAX_DETS_100 = 2  # index of maxDets=100 in COCOeval's Params.maxDets [1, 10, 100]


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
