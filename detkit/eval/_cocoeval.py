"""pycocotools' ``COCOeval`` (iouType "bbox") on flat numpy arrays, for COCO-sized sets.

Why not pycocotools itself: its ``evaluateImg`` is a Python loop over every (image, category,
area range) and every detection; on 5,000 images with 100 detections each it takes minutes,
and scoring 1,000 proposals per image (5 million results) does not finish in reasonable time.
faster-coco-eval 1.8.0 (C++) was measured too, on the same generated data (5,000 images, 100
detections each): 12-17 s to load the results and 38-65 s to evaluate on the shared 2-core
machine (load 4-9), where this module takes about 18 s in all at load 11: its C++ core reads
every annotation as a Python dict and pairs every (image, category) in Python. It would not
help proposal recall either (5 million result dicts to build).

What is kept exactly (so the numbers equal pycocotools', see tests/eval):
- ``Params`` are pycocotools' own (IoU thresholds, 101 recall thresholds, area ranges).
- Detections of one (image, category) group (one image when categories are pooled) are sorted
  by score with a stable sort over their input order and cut to ``maxDets[-1]``.
- Box IoU is maskApi's ``bbIou`` formula in float64 on ``[x, y, w, h]`` (crowd: intersection
  over the detection's area).
- Greedy matching (``evaluateImg``): each detection in score order takes the unmatched
  non-ignored ground truth of highest IoU >= threshold (ties: the later one), and only when
  there is none an ignored one (crowd ones may be taken again); ignored ground truth is crowd or
  outside the area range; unmatched detections outside the area range are ignored.
- ``accumulate``: per (category, area, maxDets), detections of all images sorted by score
  (stable over image id, then rank), cumulative TP/FP, the precision envelope, and precision
  read at the first index reaching each recall threshold; -1 where no ground truth.

How it is vectorised: all (detection, ground truth) pairs of a group with IoU >= the lowest
threshold are built in chunks; the greedy matching then runs in rounds, round ``j`` handling
the ``j``-th detection (among those with any such pair) of every group at once, for all IoU
thresholds and area ranges together. Groups never share ground truth, so a round has no
conflicts. Rounds are bounded by the detections per group (``maxDets[-1]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import Params

from detkit.eval._cocoapi import MAX_DETS_100, mean_valid

# Pairs built per chunk when pairing detections with ground truth (bounds peak memory).
_PAIRS_PER_CHUNK = 4_000_000


def default_params() -> Params:
    """pycocotools' box evaluation parameters (``Params(iouType="bbox")``)."""
    return Params(iouType="bbox")


@dataclass
class Boxes:
    """Boxes of one side (ground truth or detections) as flat arrays, ``N`` entries.

    Attributes:
        image: ``int64 [N]`` index into the evaluated (sorted) image ids.
        category: ``int64 [N]`` index into the sorted category ids.
        boxes_xywh: ``float64 [N, 4]`` ``[x, y, w, h]`` in original image pixels.
        area: ``float64 [N]`` the annotation ``area`` (ground truth) or ``w * h`` (detections).
        crowd: ``bool [N]`` ``iscrowd`` (always False for detections).
        score: ``float64 [N]`` confidence (detections; zeros for ground truth).
        ann_id: ``int64 [N]`` annotation id (ground truth; COCOeval treats id 0 as no match).
    """

    image: np.ndarray
    category: np.ndarray
    boxes_xywh: np.ndarray
    area: np.ndarray
    crowd: np.ndarray
    score: np.ndarray
    ann_id: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def take(self, index: np.ndarray) -> Boxes:
        return Boxes(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def detection_boxes(
    image: np.ndarray, category: np.ndarray, boxes_xywh: np.ndarray, score: np.ndarray
) -> Boxes:
    """Detections as ``Boxes`` (area ``w * h`` as ``COCO.loadRes`` sets it)."""
    boxes_xywh = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    n = len(boxes_xywh)
    return Boxes(np.asarray(image, np.int64), np.asarray(category, np.int64), boxes_xywh,
                 boxes_xywh[:, 2] * boxes_xywh[:, 3], np.zeros(n, bool),
                 np.asarray(score, np.float64), np.zeros(n, np.int64))


def ground_truth_boxes(coco_gt: COCO, image_ids: Sequence[int], category_ids: Sequence[int]
                       ) -> Boxes:
    """Ground truth of ``image_ids`` (sorted) with a category in ``category_ids`` (sorted), in
    the order ``COCOeval._prepare`` lists it (image, then annotation order)."""
    cat_index = {c: k for k, c in enumerate(category_ids)}
    anns = [a for image_id in image_ids for a in coco_gt.imgToAnns.get(image_id, ())
            if a["category_id"] in cat_index]
    image_index = {i: n for n, i in enumerate(image_ids)}
    return Boxes(
        np.array([image_index[a["image_id"]] for a in anns], np.int64),
        np.array([cat_index[a["category_id"]] for a in anns], np.int64),
        np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4),
        np.array([a["area"] for a in anns], np.float64),
        np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        np.zeros(len(anns)),
        np.array([a["id"] for a in anns], np.int64),
    )


@dataclass
class Matching:
    """Result of the greedy matching (``T`` IoU thresholds, ``A`` area ranges).

    Attributes:
        dt: the kept detections (rank < ``maxDets[-1]`` in their group), sorted by group, rank.
        dt_rank: ``int64 [D]`` rank of each kept detection in its group (score order).
        dt_gt: ``int32 [D, T, A]`` index (into ``gt``) of the matched ground truth, or -1
            (``[0, T, A]`` when not asked for).
        gt: the ground truth, sorted by group and COCOeval's order.
        gt_ignore: ``bool [G, A]`` crowd or outside the area range.
        gt_dt_rank: ``int64 [G, T, A]`` rank of the detection that matched each ground truth
            (the first one, for crowd), or a large number when unmatched.
    """

    dt: Boxes
    dt_rank: np.ndarray
    dt_gt: np.ndarray
    gt: Boxes
    gt_ignore: np.ndarray
    gt_dt_rank: np.ndarray


def _group_sort(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stable lexicographic order (last key primary) and each element's rank in its group
    (the group is the last key)."""
    if _strictly_sorted(keys[-1], keys[-2]) if len(keys) > 1 else False:
        order = np.arange(len(keys[-1]))  # e.g. proposals: by image, then rank (no ties)
    else:
        order = np.lexsort(keys)
    group = keys[-1][order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return order, rank


def _strictly_sorted(primary: np.ndarray, secondary: np.ndarray) -> bool:
    """True when (primary, secondary) is strictly increasing: the lexsort would change nothing,
    whatever the later keys."""
    step_primary = primary[1:] - primary[:-1]
    return bool(np.all((step_primary > 0)
                       | ((step_primary == 0) & (secondary[1:] > secondary[:-1]))))


def _candidate_pairs(dt_group: np.ndarray, gt_group: np.ndarray, dt: Boxes, gt: Boxes,
                     min_iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(detection index, gt index, IoU) of every same-group pair with IoU >= ``min_iou``;
    both sides sorted by group. Pairs come sorted by detection, then gt."""
    groups, gt_start, gt_count = np.unique(gt_group, return_index=True, return_counts=True)
    slot = np.minimum(np.searchsorted(groups, dt_group), max(len(groups) - 1, 0))
    has_gt = groups[slot] == dt_group if len(groups) else np.zeros(len(dt_group), bool)
    dets = np.flatnonzero(has_gt)
    per_det = gt_count[slot[dets]]
    chunks = np.searchsorted(np.cumsum(per_det), np.arange(1, per_det.sum() // _PAIRS_PER_CHUNK
                                                                  + 1) * _PAIRS_PER_CHUNK)
    # maskApi's x2 = x + w, y2 = y + h, computed once per box (same float operations).
    dt_x1, dt_y1 = dt.boxes_xywh[:, 0], dt.boxes_xywh[:, 1]
    dt_x2, dt_y2 = dt.boxes_xywh[:, 2] + dt_x1, dt.boxes_xywh[:, 3] + dt_y1
    gt_x1, gt_y1 = gt.boxes_xywh[:, 0], gt.boxes_xywh[:, 1]
    gt_x2, gt_y2 = gt.boxes_xywh[:, 2] + gt_x1, gt.boxes_xywh[:, 3] + gt_y1
    out_d, out_g, out_iou = [], [], []
    for part in np.split(np.arange(len(dets)), chunks):
        d, counts = dets[part], per_det[part]
        det_of_pair = np.repeat(d, counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        gt_of_pair = np.repeat(gt_start[slot[d]], counts) + offset
        # Only pairs that overlap can reach the threshold: filter on x, then y, then IoU.
        # (np.repeat of a detection's value is the gather dt_x2[det_of_pair], only faster.)
        w = (np.minimum(np.repeat(dt_x2[d], counts), gt_x2[gt_of_pair])
             - np.maximum(np.repeat(dt_x1[d], counts), gt_x1[gt_of_pair]))
        keep = np.flatnonzero(w > 0)
        det_of_pair, gt_of_pair, w = det_of_pair[keep], gt_of_pair[keep], w[keep]
        h = (np.minimum(dt_y2[det_of_pair], gt_y2[gt_of_pair])
             - np.maximum(dt_y1[det_of_pair], gt_y1[gt_of_pair]))
        keep = np.flatnonzero(h > 0)
        det_of_pair, gt_of_pair = det_of_pair[keep], gt_of_pair[keep]
        iou = _overlap_iou(w[keep], h[keep], dt.boxes_xywh[det_of_pair],
                           gt.boxes_xywh[gt_of_pair], gt.crowd[gt_of_pair])
        keep = np.flatnonzero(iou >= min_iou)
        out_d.append(det_of_pair[keep])
        out_g.append(gt_of_pair[keep])
        out_iou.append(iou[keep])
    if not out_d:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_d), np.concatenate(out_g), np.concatenate(out_iou)


def _overlap_iou(w: np.ndarray, h: np.ndarray, dt_xywh: np.ndarray, gt_xywh: np.ndarray,
                 crowd: np.ndarray) -> np.ndarray:
    """maskApi ``bbIou`` of overlapping pairs (``w, h > 0``, the intersection's sides), in
    float64 with its operations: ``i / u``, ``u`` the detection's area for crowd ground
    truth, else ``da + ga - i``."""
    inter = w * h
    dt_area = dt_xywh[:, 2] * dt_xywh[:, 3]
    return inter / np.where(crowd, dt_area, dt_area + gt_xywh[:, 2] * gt_xywh[:, 3] - inter)


def _in_range(area: np.ndarray, area_ranges: Sequence[Sequence[float]]) -> np.ndarray:
    """``bool [N, A]``: ``lo <= area <= hi`` (pycocotools' bounds are inclusive)."""
    lo = np.array([r[0] for r in area_ranges], np.float64)
    hi = np.array([r[1] for r in area_ranges], np.float64)
    return (area[:, None] >= lo) & (area[:, None] <= hi)


def match(gt: Boxes, dt: Boxes, params: Params, *, per_detection: bool = True) -> Matching:
    """Greedy COCO matching of ``dt`` to ``gt`` for every IoU threshold and area range.

    Groups are (image, category) when ``params.useCats`` else images. Returns the matching
    with both sides re-sorted (see :class:`Matching`); ``per_detection=False`` leaves
    ``dt_gt`` empty (recall needs only ``gt_dt_rank``, and ``dt_gt`` of 5 million proposals
    would take 800 MB).
    """
    num_cats = int(max(gt.category.max(initial=-1), dt.category.max(initial=-1))) + 1
    use_cats = bool(params.useCats)

    def group_of(boxes: Boxes) -> np.ndarray:
        return boxes.image * num_cats + boxes.category if use_cats else boxes.image.copy()

    # Detections: stable by score over (category, input position); COCOeval.computeIoU.
    dt_order, dt_rank = _group_sort([np.arange(len(dt)), dt.category, -dt.score, group_of(dt)])
    kept = dt_rank < params.maxDets[-1]
    if not (kept.all() and np.array_equal(dt_order, np.arange(len(dt)))):
        dt, dt_rank = dt.take(dt_order[kept]), dt_rank[kept]
    gt_order, _ = _group_sort([np.arange(len(gt)), gt.category, group_of(gt)])
    gt = gt.take(gt_order)
    gt_ignore = gt.crowd[:, None] | ~_in_range(gt.area, params.areaRng)  # [G, A]
    thresholds = np.minimum(np.asarray(params.iouThrs, np.float64), 1 - 1e-10)  # evaluateImg
    shape = (len(thresholds), len(params.areaRng))
    dt_gt = np.full((len(dt) if per_detection else 0, *shape), -1, np.int32)
    gt_dt_rank = np.full((len(gt), *shape), np.iinfo(np.int64).max, np.int64)
    pair_d, pair_g, pair_iou = _candidate_pairs(group_of(dt), group_of(gt), dt, gt,
                                                float(thresholds.min()))
    if len(pair_d):
        _greedy_rounds(pair_d, pair_g, pair_iou, thresholds, gt, gt_ignore, group_of(dt),
                       dt_rank, dt_gt, gt_dt_rank)
    return Matching(dt, dt_rank, dt_gt, gt, gt_ignore, gt_dt_rank)


def _greedy_rounds(pair_d: np.ndarray, pair_g: np.ndarray, pair_iou: np.ndarray,
                   thresholds: np.ndarray, gt: Boxes, gt_ignore: np.ndarray,
                   dt_group: np.ndarray, dt_rank: np.ndarray, dt_gt: np.ndarray,
                   gt_dt_rank: np.ndarray) -> None:
    """Fill ``dt_gt`` and ``gt_dt_rank`` in place; see the module docstring."""
    # Round of a pair: the rank of its detection among the paired detections of its group
    # (detections are sorted by group, then rank).
    det_starts = np.flatnonzero(np.r_[True, pair_d[1:] != pair_d[:-1]])
    dets = pair_d[det_starts]
    _, paired_rank = _group_sort([dt_group[dets]])
    pair_round = np.repeat(paired_rank, np.diff(np.r_[det_starts, len(pair_d)]))
    order = np.argsort(pair_round, kind="stable")  # keeps (det, gt) order inside a round
    pair_d, pair_g, pair_iou, pair_round = (pair_d[order], pair_g[order], pair_iou[order],
                                            pair_round[order])
    bounds = np.searchsorted(pair_round, np.arange(pair_round[-1] + 2))
    taken = np.zeros(gt_dt_rank.shape, bool)  # [G, T, A]
    ok_iou = pair_iou[:, None] >= thresholds[None, :]  # [P, T]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        d, g = pair_d[start:stop], pair_g[start:stop]
        det_first = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        eligible = ok_iou[start:stop, :, None] & ~(taken[g] & ~gt.crowd[g, None, None])
        regular = ~gt_ignore[g][:, None, :]  # [n, 1, A]
        has_regular = np.logical_or.reduceat(eligible & regular, det_first, axis=0)
        det_of_pair = np.repeat(np.arange(len(det_first)), np.diff(np.r_[det_first, len(d)]))
        allowed = eligible & (regular == has_regular[det_of_pair])
        value = np.where(allowed, pair_iou[start:stop, None, None], -1.0)
        best = np.maximum.reduceat(value, det_first, axis=0)
        last = np.where(allowed & (value == best[det_of_pair]),
                        np.arange(len(d))[:, None, None], -1)
        chosen = np.maximum.reduceat(last, det_first, axis=0)  # [n_det, T, A] pair or -1
        det_i, t_i, a_i = np.nonzero(chosen >= 0)
        gt_i = g[chosen[det_i, t_i, a_i]]
        det_global = d[det_first[det_i]]
        if len(dt_gt):
            dt_gt[det_global, t_i, a_i] = gt_i
        taken[gt_i, t_i, a_i] = True
        np.minimum.at(gt_dt_rank, (gt_i, t_i, a_i), dt_rank[det_global])


def accumulate(matching: Matching, params: Params, num_cats: int) -> dict[str, np.ndarray]:
    """``COCOeval.accumulate``: ``{"precision": [T, R, K, A, M], "recall": [T, K, A, M]}``
    (-1 where the category has no non-ignored ground truth in the area range)."""
    dt, gt = matching.dt, matching.gt
    num_t, num_a, num_m = len(params.iouThrs), len(params.areaRng), len(params.maxDets)
    precision = -np.ones((num_t, len(params.recThrs), num_cats, num_a, num_m))
    recall = -np.ones((num_t, num_cats, num_a, num_m))
    matched_id = np.where(matching.dt_gt >= 0, gt.ann_id[np.maximum(matching.dt_gt, 0)], 0)
    matched_ignore = matching.gt_ignore[np.maximum(matching.dt_gt, 0), np.arange(num_a)]
    dt_out = ~_in_range(dt.area, params.areaRng)[:, None, :]  # [D, 1, A]
    dt_ignore = ((matching.dt_gt >= 0) & matched_ignore) | ((matched_id == 0) & dt_out)
    tps_all = (matched_id != 0) & ~dt_ignore
    fps_all = (matched_id == 0) & ~dt_ignore
    # npig: non-ignored ground truth per category and area range, [K, A].
    npig = np.stack([np.bincount(gt.category, weights=~matching.gt_ignore[:, a],
                                 minlength=num_cats) for a in range(num_a)], axis=1)
    # accumulate: per category, detections of all images by score (stable: image, rank).
    order = np.lexsort((matching.dt_rank, dt.image, -dt.score, dt.category))
    tps_sorted = np.ascontiguousarray(tps_all[order].transpose(2, 1, 0))  # [A, T, D]
    fps_sorted = np.ascontiguousarray(fps_all[order].transpose(2, 1, 0))
    rank_sorted = matching.dt_rank[order]
    cat_bounds = np.searchsorted(dt.category[order], np.arange(num_cats + 1))
    for k in range(num_cats):
        if not npig[k].any():
            continue
        lo, hi = cat_bounds[k], cat_bounds[k + 1]
        for m, max_det in enumerate(params.maxDets):
            sel = lo + np.flatnonzero(rank_sorted[lo:hi] < max_det)
            tp = np.cumsum(tps_sorted[:, :, sel], axis=2).astype(float)  # [A, T, n]
            fp = np.cumsum(fps_sorted[:, :, sel], axis=2).astype(float)
            for a in np.flatnonzero(npig[k]):
                recall[:, k, a, m], precision[:, :, k, a, m] = _pr(tp[a], fp[a], int(npig[k, a]),
                                                                  params.recThrs)
    return {"precision": precision, "recall": recall}


def _pr(tp: np.ndarray, fp: np.ndarray, npig: int, rec_thrs: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
    """Final recall ``[T]`` and interpolated precision ``[T, R]`` from cumulative TP/FP."""
    num_t, n = tp.shape
    if n == 0:
        return np.zeros(num_t), np.zeros((num_t, len(rec_thrs)))
    rc = tp / npig
    pr = tp / (fp + tp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # the precision envelope
    q = np.zeros((num_t, len(rec_thrs)))
    for t in range(num_t):
        inds = np.searchsorted(rc[t], rec_thrs, side="left")
        valid = inds < n
        q[t, valid] = pr[t, inds[valid]]
    return rc[:, -1], q


def summarize_stats(precision: np.ndarray, recall: np.ndarray, params: Params) -> list[float]:
    """``COCOeval.summarize`` (``_summarizeDets``): the 12 stats, same reductions."""
    t50 = np.where(np.asarray(params.iouThrs) == 0.5)[0]
    t75 = np.where(np.asarray(params.iouThrs) == 0.75)[0]
    area = {label: i for i, label in enumerate(params.areaRngLbl)}
    m100 = MAX_DETS_100  # _summarizeDets: maxDets 100 for AP and ARs/m/l, [0], [1] for AR1/10
    mean = mean_valid
    stats = [mean(precision[:, :, :, area["all"], m100]),
             mean(precision[t50][:, :, :, area["all"], m100]),
             mean(precision[t75][:, :, :, area["all"], m100])]
    stats += [mean(precision[:, :, :, area[a], m100]) for a in ("small", "medium", "large")]
    stats += [mean(recall[:, :, area["all"], m]) for m in (0, 1, 2)]
    stats += [mean(recall[:, :, area[a], m100]) for a in ("small", "medium", "large")]
    return stats
