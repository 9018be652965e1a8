"""The array COCOeval (detkit.eval._cocoeval) against pycocotools on cases built to hit its
corner rules: crowd, area-range boundaries, score ties, equal IoUs, more than maxDets
detections per group, unknown categories, image subsets. Every key detkit reports must equal
pycocotools' to 1e-12 (the issue asks 1e-6)."""

import numpy as np
import pytest
import torch

from detkit.eval import build_coco_gt, evaluate_detections, proposal_recall
from detkit.eval._cocoeval import accumulate, detection_boxes, ground_truth_boxes, match
from detkit.eval.coco import evaluated_params
from detkit.eval.reference import reference_evaluate_detections, reference_proposal_recall
from tests.eval.cases import random_case, reference_cocoeval


def _gt(dataset: dict):
    return build_coco_gt(dataset["images"], dataset["annotations"], dataset["categories"])


def _assert_all_keys_equal(fast: dict, ref: dict) -> None:
    assert list(fast) == list(ref)
    for key, value in ref.items():
        if isinstance(value, dict):
            assert list(fast[key]) == list(value), key
            for sub, v in value.items():
                assert np.allclose(fast[key][sub], v, rtol=0, atol=1e-12), (key, sub)
        else:
            assert fast[key] == pytest.approx(value, abs=1e-12), key


def _hard_case(seed: int) -> tuple[dict, list[dict]]:
    """random_case plus: detections with tied scores, exact duplicates of ground truth (equal
    IoUs with twin ground truth boxes), boxes whose area sits on the 32² and 96² bounds, and
    one image with 120 detections of one class (more than maxDets=100)."""
    dataset, results = random_case(seed, num_images=8)
    gen = np.random.default_rng(100 + seed)
    image = dataset["images"][0]["id"]
    twin = [40.0, 40.0, 32.0, 32.0]  # area exactly 32² = 1024: small AND medium
    start = max(a["id"] for a in dataset["annotations"]) + 1 if dataset["annotations"] else 1
    dataset["annotations"] += [
        {"id": start, "image_id": image, "category_id": 3, "bbox": twin, "area": 1024.0,
         "iscrowd": 0},
        {"id": start + 1, "image_id": image, "category_id": 3, "bbox": list(twin),
         "area": 1024.0, "iscrowd": 0},
        {"id": start + 2, "image_id": image, "category_id": 3, "bbox": [300, 10, 96, 96],
         "area": 9216.0, "iscrowd": 0},
    ]
    results += [{"image_id": image, "category_id": 3, "bbox": list(twin), "score": 0.5}
                for _ in range(3)]
    results += [{"image_id": image, "category_id": 3, "bbox": [301, 11, 96, 96], "score": 0.5}]
    for _ in range(120):
        w, h = gen.uniform(10, 150, 2)
        results.append({"image_id": dataset["images"][1]["id"], "category_id": 7,
                        "bbox": [float(v) for v in (*gen.uniform(0, 300, 2), w, h)],
                        "score": float(np.round(gen.uniform(), 1))})  # many ties
    results.append({"image_id": image, "category_id": 999, "bbox": [0, 0, 5, 5],
                    "score": 1.0})  # unknown category: COCOeval leaves it out
    return dataset, results


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_detections_equal_pycocotools_on_every_key(seed):
    dataset, results = _hard_case(seed)
    gt = _gt(dataset)
    fast = evaluate_detections(gt, results)
    _assert_all_keys_equal(fast, reference_evaluate_detections(gt, results))
    assert 0.0 < fast["AP"] < 1.0


def test_precision_and_recall_arrays_equal_pycocotools():
    dataset, results = _hard_case(5)
    gt = _gt(dataset)
    ref = reference_cocoeval(dataset, [r for r in results if r["category_id"] != 999],
                             summarize=False)
    params = evaluated_params(gt, None)
    cat_index = {c: k for k, c in enumerate(params.catIds)}
    kept = [r for r in results if r["category_id"] in cat_index]
    dt = detection_boxes(np.array([params.imgIds.index(r["image_id"]) for r in kept]),
                         np.array([cat_index[r["category_id"]] for r in kept]),
                         np.array([r["bbox"] for r in kept]), np.array([r["score"] for r in kept]))
    ours = accumulate(match(ground_truth_boxes(gt, params.imgIds, params.catIds), dt, params),
                      params, len(params.catIds))
    np.testing.assert_array_equal(ours["precision"], ref.eval["precision"])
    np.testing.assert_array_equal(ours["recall"], ref.eval["recall"])


def test_image_subset_equals_pycocotools():
    dataset, results = _hard_case(6)
    gt = _gt(dataset)
    subset = [dataset["images"][i]["id"] for i in (0, 2, 3)]
    _assert_all_keys_equal(evaluate_detections(gt, results, subset),
                           reference_evaluate_detections(gt, results, subset))


def _proposals_for(dataset: dict, seed: int, per_image: int = 40) -> dict[int, torch.Tensor]:
    """Jittered ground truth, exact copies (equal IoUs with twin boxes), background boxes."""
    gen = np.random.default_rng(seed)
    proposals = {}
    for img in dataset["images"][:-1]:  # the last image gets none
        anns = [a["bbox"] for a in dataset["annotations"] if a["image_id"] == img["id"]]
        boxes = [list(np.array(b) + gen.normal(0, 0.1, 4) * [b[2], b[3], b[2], b[3]])
                 for b in anns for _ in range(3)] + [list(b) for b in anns]
        boxes += [list(gen.uniform(0, 200, 4) + [0, 0, 5, 5])
                  for _ in range(max(0, per_image - len(boxes)))]
        boxes = [boxes[i] for i in gen.permutation(len(boxes))]
        t = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
        proposals[img["id"]] = torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)
    return proposals


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_proposal_recall_equals_cocoeval_reference(seed):
    dataset, _ = _hard_case(seed)
    gt = _gt(dataset)
    proposals = _proposals_for(dataset, seed)
    limits = (3, 10, 25, 1000)
    fast = proposal_recall(gt, proposals, limits=limits)
    ref = reference_proposal_recall(gt, proposals, limits=limits)
    assert list(fast) == list(ref)
    for key, value in ref.items():
        assert fast[key] == pytest.approx(value, abs=1e-12), key
    assert 0.0 < fast["proposal_AR@3"] < fast["proposal_AR@25"] <= 1.0
    subset = [dataset["images"][i]["id"] for i in (1, 2)]
    assert (proposal_recall(gt, proposals, limits=limits, image_ids=subset)
            == pytest.approx(reference_proposal_recall(gt, proposals, limits, subset), abs=1e-12))
