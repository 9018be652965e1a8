"""Pascal VOC detection AP with the VOC devkit's matching rules.

Written here rather than reused: torchvision has no VOC metric, and pulling in the
py-faster-rcnn / devkit code means a file-based API. The rules follow the devkit
(``VOCevaldet.m``) and py-faster-rcnn's ``voc_eval.py``; where the two differ the devkit wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor


def voc_ap(
    ground_truth: dict[int, dict[str, Tensor]], detections: dict[int, dict[str, Tensor]],
    class_ids: Sequence[int], iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Pascal VOC mean AP (area under the PR curve, and the VOC2007 11-point variant).

    Per class, detections of all images are sorted by score (stable: ties keep image-id order,
    then the given order). Each detection is compared with the ground truth box of its image
    it overlaps most (devkit rule: among all GT of the class, matched or not, so a detection
    whose best GT is taken is a duplicate even if another free GT overlaps it enough). If that
    IoU is >= ``iou_threshold`` (devkit; voc_eval.py uses >) and the GT is "difficult", the
    detection is ignored (neither TP nor FP); otherwise it is a TP if that GT is not yet
    matched, else an FP (duplicate). A detection below the threshold is an FP. Boxes are
    inclusive pixel indices as in the devkit: width = x2 - x1 + 1.

    Args:
        ground_truth: ``{image_id: {"boxes": Tensor[M, 4] xyxy, "labels": Tensor[M] int,
            "difficult": Tensor[M] bool (optional, default all False)}}`` in original image
            pixels.
        detections: ``{image_id: {"boxes": Tensor[N, 4] xyxy, "scores": Tensor[N],
            "labels": Tensor[N] int}}`` in the same frame. Images absent here have no
            detections; detections on images absent from ``ground_truth`` are FPs.
        class_ids: the labels to evaluate.
        iou_threshold: minimum IoU of a match (VOC: 0.5).

    Returns:
        ``{"voc_AP50": mean area AP, "voc_AP50_07": mean 11-point AP,
        "voc_per_class": {class_id: {"ap": float, "ap07": float}}}``. A class with no
        non-difficult ground truth has AP -1.0 and is left out of both means (the means are
        -1.0 if every class is). A class with ground truth and no detections has AP 0.0.
    """
    per_class = {}
    for class_id in class_ids:
        recall, precision = _class_pr(ground_truth, detections, int(class_id), iou_threshold)
        if recall is None:
            per_class[int(class_id)] = {"ap": -1.0, "ap07": -1.0}
        else:
            per_class[int(class_id)] = {
                "ap": _area_ap(recall, precision), "ap07": _eleven_point_ap(recall, precision)
            }
    return {
        "voc_AP50": _mean_present([v["ap"] for v in per_class.values()]),
        "voc_AP50_07": _mean_present([v["ap07"] for v in per_class.values()]),
        "voc_per_class": per_class,
    }


def _class_pr(
    ground_truth: dict[int, dict[str, Tensor]], detections: dict[int, dict[str, Tensor]],
    class_id: int, iou_threshold: float,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Cumulative (recall, precision) of one class over its score-sorted detections; (None,
    None) when the class has no non-difficult ground truth (recall undefined)."""
    gt_boxes, gt_difficult = {}, {}
    for image_id, gt in ground_truth.items():
        keep = (gt["labels"] == class_id).cpu().numpy()
        gt_boxes[image_id] = gt["boxes"].detach().cpu().double().numpy()[keep]
        difficult = gt.get("difficult")
        if difficult is None:  # synthetic / COCO-converted data: nothing is difficult
            gt_difficult[image_id] = np.zeros(int(keep.sum()), dtype=bool)
        else:
            gt_difficult[image_id] = difficult.cpu().numpy().astype(bool)[keep]
    num_positives = sum(int((~d).sum()) for d in gt_difficult.values())
    if num_positives == 0:
        return None, None
    image_ids, scores, boxes = _class_detections(detections, class_id)
    order = np.argsort(-scores, kind="stable")  # MATLAB's sort (devkit) is stable
    matched = {image_id: np.zeros(len(b), dtype=bool) for image_id, b in gt_boxes.items()}
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, d in enumerate(order):
        image_id = image_ids[d]
        candidates = gt_boxes.get(image_id, np.zeros((0, 4)))
        overlaps = _iou_plus_one(boxes[d], candidates)
        best = int(np.argmax(overlaps)) if len(overlaps) else -1
        if best < 0 or overlaps[best] < iou_threshold:
            fp[rank] = 1.0
        elif gt_difficult[image_id][best]:
            continue  # ignored: neither TP nor FP
        elif matched[image_id][best]:
            fp[rank] = 1.0  # duplicate detection
        else:
            tp[rank] = 1.0
            matched[image_id][best] = True
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    # voc_eval.py: eps guards 0/0 at ranks where only ignored detections came so far.
    return tp / num_positives, tp / np.maximum(tp + fp, np.finfo(np.float64).eps)


def _class_detections(
    detections: dict[int, dict[str, Tensor]], class_id: int
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """All detections of one class: (image id per detection, scores [D], boxes [D, 4])."""
    image_ids: list[int] = []
    scores, boxes = [np.zeros(0)], [np.zeros((0, 4))]
    for image_id in sorted(detections):
        det = detections[image_id]
        keep = (det["labels"] == class_id).cpu().numpy()
        scores.append(det["scores"].detach().cpu().double().numpy()[keep])
        boxes.append(det["boxes"].detach().cpu().double().numpy()[keep])
        image_ids += [image_id] * int(keep.sum())
    return image_ids, np.concatenate(scores), np.concatenate(boxes)


def _iou_plus_one(box: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with ``gt_boxes [M, 4]``, widths/heights counted as x2 - x1 + 1."""
    iw = np.maximum(np.minimum(gt_boxes[:, 2], box[2]) - np.maximum(gt_boxes[:, 0], box[0]) + 1, 0)
    ih = np.maximum(np.minimum(gt_boxes[:, 3], box[3]) - np.maximum(gt_boxes[:, 1], box[1]) + 1, 0)
    inter = iw * ih
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0] + 1) * (gt_boxes[:, 3] - gt_boxes[:, 1] + 1)
    return inter / (area + gt_area - inter)


def _area_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP: area under the PR curve made monotone (voc_eval.py ``voc_ap``)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, right to left
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _eleven_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 AP: mean over recall t in {0, 0.1, ..., 1} of max precision at recall >= t."""
    ap = 0.0
    # np.arange as voc_eval.py and detectron2 (its 0.3 is 0.30000000000000004, so a recall of
    # exactly 3/10 does not reach it there either).
    for t in np.arange(0.0, 1.1, 0.1):
        at_least = recall >= t
        ap += float(precision[at_least].max()) if at_least.any() else 0.0
    return ap / 11.0


def _mean_present(values: list[float]) -> float:
    present = [v for v in values if v != -1.0]
    return float(np.mean(present)) if present else -1.0
