import numpy as np
import pytest
import torch

from detkit.eval import build_coco_gt, proposal_recall
from tests.eval.cases import dataset_dict, random_case, reference_cocoeval, xywh_to_xyxy

IMAGE = {"id": 1, "width": 800, "height": 600, "file_name": "a.jpg"}
CATS = [{"id": 4, "name": "a"}, {"id": 9, "name": "b"}]


def _gt(annotations: list[dict]):
    return build_coco_gt([IMAGE], annotations, CATS)


def _ann(box_xywh: list[float], cat: int = 4, crowd: int = 0) -> dict:
    return {"image_id": 1, "category_id": cat, "bbox": box_xywh, "iscrowd": crowd}


def _junk(n: int) -> torch.Tensor:
    """n boxes far from every ground truth box used here (bottom-right corner)."""
    return torch.tensor([[700.0, 500.0, 750.0, 550.0]]).repeat(n, 1)


def test_one_of_two_boxes_found():
    gt = _gt([_ann([0, 0, 100, 100]), _ann([200, 200, 20, 20], cat=9)])  # large a, small b
    proposals = {1: torch.cat([torch.tensor([[0.0, 0.0, 100.0, 100.0]]), _junk(5)])}
    metrics = proposal_recall(gt, proposals, limits=(100, 300, 1000))
    for n in (100, 300, 1000):
        assert metrics[f"proposal_AR@{n}"] == pytest.approx(0.5)
        assert metrics[f"proposal_ARl@{n}"] == pytest.approx(1.0)
        assert metrics[f"proposal_ARs@{n}"] == 0.0
        assert metrics[f"proposal_ARm@{n}"] == -1.0  # no medium ground truth
    assert list(metrics) == [f"proposal_AR{a}@{n}" for n in (100, 300, 1000)
                             for a in ("", "s", "m", "l")]


def test_partial_overlap_counts_at_low_iou_thresholds_only():
    gt = _gt([_ann([0, 0, 100, 100])])
    # IoU 0.72: matched at thresholds .50, .55, .60, .65, .70 -> 5 of 10.
    metrics = proposal_recall(gt, {1: torch.tensor([[0.0, 0.0, 100.0, 72.0]])}, limits=(10,))
    assert metrics["proposal_AR@10"] == pytest.approx(0.5)


def test_crowd_ground_truth_is_ignored():
    gt = _gt([_ann([0, 0, 100, 100]), _ann([200, 200, 20, 20], cat=9),
              _ann([300, 0, 300, 300], crowd=1)])
    proposals = {1: torch.tensor([[0.0, 0.0, 100.0, 100.0]])}
    assert proposal_recall(gt, proposals, limits=(100,))["proposal_AR@100"] == pytest.approx(0.5)
    # Proposals on the crowd region change nothing either.
    proposals = {1: torch.tensor([[300.0, 0.0, 600.0, 300.0], [0.0, 0.0, 100.0, 100.0]])}
    assert proposal_recall(gt, proposals, limits=(100,))["proposal_AR@100"] == pytest.approx(0.5)


def test_limit_truncates_by_rank():
    gt = _gt([_ann([0, 0, 100, 100])])
    # The only correct proposal is ranked 101st.
    proposals = {1: torch.cat([_junk(100), torch.tensor([[0.0, 0.0, 100.0, 100.0]])])}
    metrics = proposal_recall(gt, proposals, limits=(300, 100))
    assert metrics["proposal_AR@100"] == 0.0
    assert metrics["proposal_AR@300"] == pytest.approx(1.0)
    assert list(metrics)[0] == "proposal_AR@300"  # keys follow the order of limits


def test_images_without_proposals_and_no_proposals_at_all():
    dataset = dataset_dict()
    gt = build_coco_gt(dataset["images"], dataset["annotations"], dataset["categories"])
    metrics = proposal_recall(gt, {})
    assert all(v == 0.0 for v in metrics.values())
    assert len(metrics) == 12
    # Exact proposals for image 1 only: 3 of the 9 non-crowd GT boxes.
    image1 = [a["bbox"] for a in dataset["annotations"] if a["image_id"] == 1 and not a["iscrowd"]]
    metrics = proposal_recall(gt, {1: xywh_to_xyxy(image1), 2: torch.zeros(0, 4)}, limits=(10,))
    assert metrics["proposal_AR@10"] == pytest.approx(3 / 9)


@pytest.mark.parametrize("seed", [3, 4])
def test_matches_direct_cocoeval_use_cats_0(seed):
    dataset, _ = random_case(seed)
    gen = np.random.default_rng(seed)
    proposals, results = {}, []
    for img in dataset["images"][:-1]:  # the last image gets no proposals
        anns = [a["bbox"] for a in dataset["annotations"] if a["image_id"] == img["id"]]
        boxes = [list(np.array(b) + gen.normal(0, 0.1, 4) * [b[2], b[3], b[2], b[3]])
                 for b in anns for _ in range(3)]
        boxes += [list(gen.uniform(0, 200, 4) + [0, 0, 5, 5]) for _ in range(12)]
        order = gen.permutation(len(boxes))
        boxes = [boxes[i] for i in order]
        proposals[img["id"]] = xywh_to_xyxy(boxes)
        # Reference scores: any strictly decreasing sequence keeps the order.
        results += [{"image_id": img["id"], "category_id": 3, "bbox": [float(v) for v in b],
                     "score": 1.0 - r / len(boxes)} for r, b in enumerate(boxes)]
    limits = [5, 10, 20]
    gt = build_coco_gt(dataset["images"], dataset["annotations"], dataset["categories"])
    metrics = proposal_recall(gt, proposals, limits=limits)
    ref = reference_cocoeval(dataset, results, use_cats=0, max_dets=limits, summarize=False)
    recall = ref.eval["recall"]  # [T, 1, A, M]
    for m, n in enumerate(limits):
        for a, suffix in enumerate(("", "s", "m", "l")):
            r = recall[:, 0, a, m]
            expected = float(np.mean(r[r > -1])) if (r > -1).any() else -1.0
            assert metrics[f"proposal_AR{suffix}@{n}"] == pytest.approx(expected, abs=1e-12)
    assert 0.0 < metrics["proposal_AR@5"] < metrics["proposal_AR@20"] <= 1.0


def test_rejects_bad_shapes():
    gt = _gt([_ann([0, 0, 100, 100])])
    with pytest.raises(ValueError, match=r"Tensor\[P, 4\]"):
        proposal_recall(gt, {1: torch.zeros(3, 5)})


def test_image_ids_restrict_the_evaluation():
    gt = build_coco_gt(
        [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
         {"image_id": 2, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}],
        [{"id": 1, "name": "a"}],
    )
    proposals = {1: torch.tensor([[10.0, 10.0, 50.0, 50.0]])}
    assert proposal_recall(gt, proposals, limits=(100,))["proposal_AR@100"] == 0.5
    only_seen = proposal_recall(gt, proposals, limits=(100,), image_ids=[1])
    assert only_seen["proposal_AR@100"] == 1.0
