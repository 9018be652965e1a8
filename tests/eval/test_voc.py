import numpy as np
import pytest
import torch

from detkit.eval import voc_ap


def _gt(boxes, labels=None, difficult=None) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = len(boxes)
    return {
        "boxes": boxes,
        "labels": torch.tensor(labels if labels is not None else [1] * n, dtype=torch.int64),
        "difficult": torch.tensor(difficult if difficult is not None else [False] * n),
    }


def _det(boxes, scores, labels=None) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": boxes, "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels if labels is not None else [1] * len(boxes)),
    }


A = [0, 0, 99, 99]
B = [200, 200, 299, 299]
C = [400, 0, 499, 99]
MISS = [600, 600, 650, 650]


def test_perfect_detections():
    gt = {1: _gt([A, B]), 2: _gt([C])}
    det = {1: _det([A, B], [0.9, 0.8]), 2: _det([C], [0.7])}
    out = voc_ap(gt, det, [1])
    assert out == {"voc_AP50": 1.0, "voc_AP50_07": 1.0,
                   "voc_per_class": {1: {"ap": 1.0, "ap07": 1.0}}}


def test_area_and_eleven_point_differ():
    # 3 GT; ranked TP, FP, TP: recall (1/3, 1/3, 2/3), precision (1, 1/2, 2/3).
    # Area: 1/3 * 1 + 1/3 * 2/3 = 5/9. 11-point: t = 0..0.3 -> 1 (4 points), t = 0.4..0.6 -> 2/3
    # (3 points), t = 0.7..1 -> 0: (4 + 2) / 11 = 6/11.
    gt = {1: _gt([A, B]), 2: _gt([C])}
    det = {1: _det([A, MISS], [0.9, 0.8]), 2: _det([C], [0.7])}
    out = voc_ap(gt, det, [1])
    assert out["voc_per_class"][1]["ap"] == pytest.approx(5 / 9)
    assert out["voc_per_class"][1]["ap07"] == pytest.approx(6 / 11)
    assert out["voc_AP50"] == pytest.approx(5 / 9)
    assert out["voc_AP50_07"] == pytest.approx(6 / 11)


def test_duplicates_are_false_positives():
    # 2 GT; ranked TP (A), duplicate of A, TP (B): recall (.5, .5, 1), precision (1, .5, 2/3).
    gt = {1: _gt([A, B])}
    det = {1: _det([A, [1, 1, 99, 99], B], [0.9, 0.8, 0.7])}
    out = voc_ap(gt, det, [1])["voc_per_class"][1]
    assert out["ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert out["ap07"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_difficult_ground_truth_is_ignored():
    # B is difficult: the top detection (on B) is neither TP nor FP, so the ranking is
    # (ignored, FP, TP) over 1 positive: precision at recall 1 is 1/2.
    det = {1: _det([B, MISS, A], [0.9, 0.85, 0.8])}
    out = voc_ap({1: _gt([A, B], difficult=[False, True])}, det, [1])
    assert out["voc_per_class"][1]["ap"] == pytest.approx(0.5)
    # Same detections with B not difficult: TP, FP, TP over 2 positives.
    out = voc_ap({1: _gt([A, B])}, det, [1])
    assert out["voc_per_class"][1]["ap"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_class_without_positive_ground_truth_is_left_out_of_the_mean():
    gt = {1: _gt([A, B, C], labels=[1, 2, 3], difficult=[False, True, False])}
    det = {1: _det([A, B], [0.9, 0.8], labels=[1, 2])}
    out = voc_ap(gt, det, [1, 2, 3, 4])
    assert out["voc_per_class"] == {
        1: {"ap": 1.0, "ap07": 1.0},
        2: {"ap": -1.0, "ap07": -1.0},   # only difficult GT
        3: {"ap": 0.0, "ap07": 0.0},     # GT but no detections
        4: {"ap": -1.0, "ap07": -1.0},   # no GT at all
    }
    assert out["voc_AP50"] == pytest.approx(0.5)
    assert out["voc_AP50_07"] == pytest.approx(0.5)


def test_no_detections_and_no_ground_truth():
    gt = {1: _gt([A, B])}
    assert voc_ap(gt, {}, [1])["voc_AP50"] == 0.0
    assert voc_ap(gt, {1: _det([], [])}, [1])["voc_AP50_07"] == 0.0
    assert voc_ap({}, {1: _det([A], [0.5])}, [1])["voc_AP50"] == -1.0


def test_plus_one_pixel_convention_and_inclusive_threshold():
    gt = {1: _gt([[0, 0, 9, 9]])}  # 10 x 10 pixels in the devkit convention
    # [0, 0, 9, 4] is 10 x 5 pixels: IoU exactly 0.5 (without the +1 it would be 36/81).
    assert voc_ap(gt, {1: _det([[0, 0, 9, 4]], [1.0])}, [1])["voc_AP50"] == 1.0
    assert voc_ap(gt, {1: _det([[0, 0, 9, 3]], [1.0])}, [1])["voc_AP50"] == 0.0  # IoU 0.4


def test_best_overlap_taken_means_duplicate_as_in_devkit():
    # Second detection overlaps A (IoU .905, already matched) more than B (IoU .739, free):
    # the devkit compares with A only, so it is a duplicate (FP), not a match of B.
    gt = {1: _gt([A, [0, 20, 99, 119]])}
    det = {1: _det([A, [0, 5, 99, 104]], [0.9, 0.8])}
    assert voc_ap(gt, det, [1])["voc_per_class"][1]["ap"] == pytest.approx(0.5)


def test_detections_are_ranked_across_images():
    # Image 2's FP outranks image 1's TP: ranking FP (img 2), TP (img 1) over 1 positive.
    gt = {1: _gt([A]), 2: _gt([], labels=[])}
    det = {1: _det([A], [0.5]), 2: _det([A], [0.9])}
    out = voc_ap(gt, det, [1])["voc_per_class"][1]
    assert out["ap"] == pytest.approx(0.5)
    # Detections on an image absent from ground_truth are false positives too.
    out = voc_ap({1: _gt([A])}, {1: _det([A], [0.5]), 7: _det([A], [0.9])}, [1])
    assert out["voc_per_class"][1]["ap"] == pytest.approx(0.5)


def _reference_voc_eval(gt: dict, det: dict, class_id: int, use_07: bool) -> float:
    """py-faster-rcnn voc_eval.py, loop for loop (threshold >= as in the devkit)."""
    class_recs, npos = {}, 0
    for image_id, g in gt.items():
        keep = g["labels"].numpy() == class_id
        difficult = g["difficult"].numpy()[keep]
        class_recs[image_id] = {"bbox": g["boxes"].numpy()[keep].astype(float),
                                "difficult": difficult, "det": [False] * int(keep.sum())}
        npos += int((~difficult).sum())
    image_ids, confidence, bbs = [], [], []
    for image_id in sorted(det):
        d = det[image_id]
        for box, score, label in zip(d["boxes"].numpy(), d["scores"].numpy(),
                                     d["labels"].numpy(), strict=True):
            if label == class_id:
                image_ids.append(image_id)
                confidence.append(score)
                bbs.append(box)
    sorted_ind = np.argsort(-np.array(confidence), kind="stable")
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        r = class_recs[image_ids[sorted_ind[d]]]
        bb = bbs[sorted_ind[d]].astype(float)
        ovmax, bbgt = -np.inf, r["bbox"]
        if bbgt.size > 0:
            ixmin = np.maximum(bbgt[:, 0], bb[0])
            iymin = np.maximum(bbgt[:, 1], bb[1])
            ixmax = np.minimum(bbgt[:, 2], bb[2])
            iymax = np.minimum(bbgt[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (bbgt[:, 2] - bbgt[:, 0] + 1.0) * (bbgt[:, 3] - bbgt[:, 1] + 1.0) - inters)
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
        if ovmax >= 0.5:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    tp[d] = 1.0
                    r["det"][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_voc_eval_reference_on_random_data(seed):
    gen = torch.Generator().manual_seed(seed)
    gt, det = {}, {}
    for image_id in range(8):
        m = int(torch.randint(1, 6, (1,), generator=gen))
        xy = torch.rand(m, 2, generator=gen) * 300
        wh = torch.rand(m, 2, generator=gen) * 150 + 10
        boxes = torch.cat([xy, xy + wh], 1).round()
        labels = torch.randint(1, 4, (m,), generator=gen)
        gt[image_id] = {"boxes": boxes, "labels": labels,
                        "difficult": torch.rand(m, generator=gen) < 0.2}
        copies = boxes.repeat(2, 1) + torch.randn(2 * m, 4, generator=gen) * 12
        noise = torch.rand(3, 4, generator=gen).sort(1).values * 400
        det[image_id] = {"boxes": torch.cat([copies, noise]),
                         "scores": torch.rand(2 * m + 3, generator=gen),
                         "labels": torch.cat([labels.repeat(2), torch.randint(1, 4, (3,),
                                                                               generator=gen)])}
    out = voc_ap(gt, det, [1, 2, 3])
    for c in (1, 2, 3):
        assert out["voc_per_class"][c]["ap"] == pytest.approx(
            _reference_voc_eval(gt, det, c, use_07=False), abs=1e-12)
        assert out["voc_per_class"][c]["ap07"] == pytest.approx(
            _reference_voc_eval(gt, det, c, use_07=True), abs=1e-12)
    assert 0.0 < out["voc_AP50"] < 1.0
