import copy
import math

import numpy as np
import pytest
import torch

from detkit.eval import (
    COCO_STAT_KEYS,
    build_coco_gt,
    evaluate_detections,
    format_metrics_table,
    to_coco_results,
)
from tests.eval.cases import (
    ANNOTATIONS,
    CATEGORIES,
    IMAGES,
    RESULTS,
    dataset_dict,
    random_case,
    reference_cocoeval,
)


def _gt(dataset: dict):
    return build_coco_gt(dataset["images"], dataset["annotations"], dataset["categories"])


def _assert_stats_equal(metrics: dict, stats: np.ndarray) -> None:
    assert [metrics[k] for k in COCO_STAT_KEYS] == [float(s) for s in stats]


def test_matches_pycocotools_on_hand_case():
    results = copy.deepcopy(RESULTS)
    metrics = evaluate_detections(_gt(dataset_dict()), results)
    ref = reference_cocoeval(dataset_dict(), RESULTS)
    _assert_stats_equal(metrics, ref.stats)
    # The case is not degenerate: every bucket has GT and no metric is trivially 0 or 1.
    assert all(0.0 < metrics[k] < 1.0 for k in COCO_STAT_KEYS)
    assert results == RESULTS  # not modified (loadRes adds keys to the dicts it gets)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pycocotools_on_random_cases(seed):
    dataset, results = random_case(seed)
    metrics = evaluate_detections(_gt(dataset), results)
    _assert_stats_equal(metrics, reference_cocoeval(dataset, results).stats)


def test_image_ids_restricts_evaluation():
    metrics = evaluate_detections(_gt(dataset_dict()), RESULTS, image_ids=[2, 5])
    ref = reference_cocoeval(dataset_dict(), RESULTS, img_ids=[2, 5])
    _assert_stats_equal(metrics, ref.stats)
    assert metrics["AP"] != evaluate_detections(_gt(dataset_dict()), RESULTS)["AP"]


def test_perfect_detections_give_one():
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
         "score": 1.0}
        for a in ANNOTATIONS if not a["iscrowd"]
    ]
    metrics = evaluate_detections(_gt(dataset_dict()), perfect)
    assert all(metrics[k] == pytest.approx(1.0) for k in COCO_STAT_KEYS if k != "AR1")
    # AR1: one detection per image and category; image 1 has two cats, so one is missed.
    assert 0.5 < metrics["AR1"] < 1.0
    assert metrics["per_class"] == {
        "cat": pytest.approx(1.0), "dog": pytest.approx(1.0), "bird": pytest.approx(1.0),
        "zebra": -1.0,
    }
    assert metrics["pr_curve"]["0.50:0.95"] == pytest.approx([1.0] * 101)


def _single_class_case() -> tuple[dict, list[dict]]:
    """2 GT (large), detections: exact match 0.9, false positive 0.8, exact match 0.7."""
    images = [{"id": 1, "width": 400, "height": 400, "file_name": "a.jpg"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 100, 100],
             "area": 10000.0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [200, 200, 100, 100],
             "area": 10000.0, "iscrowd": 0}]
    results = [
        {"image_id": 1, "category_id": 5, "bbox": [0, 0, 100, 100], "score": 0.9},
        {"image_id": 1, "category_id": 5, "bbox": [0, 250, 100, 100], "score": 0.8},
        {"image_id": 1, "category_id": 5, "bbox": [200, 200, 100, 100], "score": 0.7},
    ]
    return dataset_dict(images, anns, [{"id": 5, "name": "thing"}]), results


def test_hand_computed_ap():
    dataset, results = _single_class_case()
    metrics = evaluate_detections(_gt(dataset), results)
    # PR points (r, p): (.5, 1), (.5, .5), (1, 2/3). Interpolated precision is 1 at the 51
    # recall thresholds 0..0.50 and 2/3 at the 50 thresholds 0.51..1.00; IoU is 1 throughout.
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    for key in ("AP", "AP50", "AP75", "APl"):
        assert metrics[key] == pytest.approx(expected, abs=1e-12)
    assert metrics["APs"] == metrics["APm"] == -1.0  # no ground truth in those buckets
    assert metrics["ARs"] == metrics["ARm"] == -1.0
    assert metrics["AR1"] == pytest.approx(0.5)
    assert metrics["AR10"] == metrics["AR100"] == pytest.approx(1.0)
    assert metrics["per_class"] == {"thing": pytest.approx(expected, abs=1e-12)}
    assert metrics["pr_curve"]["0.50"] == pytest.approx([1.0] * 51 + [2 / 3] * 50)
    _assert_stats_equal(metrics, reference_cocoeval(dataset, results).stats)


def test_crowd_ground_truth_ignores_detections_on_it():
    dataset, results = _single_class_case()
    dataset["annotations"][1]["iscrowd"] = 1  # the second box becomes a crowd region
    # A top-scored detection inside the crowd region is neither TP nor FP.
    results = [results[0], {**results[2], "score": 0.99}]
    metrics = evaluate_detections(_gt(dataset), results)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AR100"] == pytest.approx(1.0)  # the crowd box is never required
    _assert_stats_equal(metrics, reference_cocoeval(dataset, results).stats)


def test_empty_results_give_zeros_and_minus_one_for_empty_buckets():
    dataset, _ = _single_class_case()  # only large objects
    metrics = evaluate_detections(_gt(dataset), [])
    for key in COCO_STAT_KEYS:
        expected = -1.0 if key in ("APs", "APm", "ARs", "ARm") else 0.0
        assert metrics[key] == expected, key
    assert metrics["per_class"] == {"thing": 0.0}
    assert metrics["pr_curve"]["0.50"] == [0.0] * 101
    # pycocotools itself, fed a detection it filters out (unknown category) = no detection.
    dummy = [{"image_id": 1, "category_id": 999, "bbox": [0, 0, 10, 10], "score": 1.0}]
    _assert_stats_equal(metrics, reference_cocoeval(dataset, dummy).stats)


def test_empty_results_on_hand_case():
    metrics = evaluate_detections(_gt(dataset_dict()), [])
    assert all(metrics[k] == 0.0 for k in COCO_STAT_KEYS)
    assert metrics["per_class"] == {"cat": 0.0, "dog": 0.0, "bird": 0.0, "zebra": -1.0}


def test_per_class_equals_single_category_evaluation():
    metrics = evaluate_detections(_gt(dataset_dict()), RESULTS)
    assert list(metrics["per_class"]) == ["cat", "dog", "bird", "zebra"]
    for cat in CATEGORIES:
        ref = reference_cocoeval(dataset_dict(), RESULTS, cat_ids=[cat["id"]])
        assert metrics["per_class"][cat["name"]] == pytest.approx(ref.stats[0], abs=1e-12)
    assert metrics["per_class"]["zebra"] == -1.0
    assert 0.0 < metrics["per_class"]["cat"] < 1.0


def test_pr_curve_is_category_mean_of_precision():
    metrics = evaluate_detections(_gt(dataset_dict()), RESULTS)
    precision = reference_cocoeval(dataset_dict(), RESULTS).eval["precision"]  # [T,R,K,A,M]
    curves = metrics["pr_curve"]
    assert set(curves) == {"0.50", "0.75", "0.50:0.95"}
    assert all(len(c) == 101 for c in curves.values())
    for name, t_index in (("0.50", [0]), ("0.75", [5]), ("0.50:0.95", list(range(10)))):
        p = precision[t_index][:, :, :, 0, 2]  # [t, R, K]
        expected = [float(np.mean(p[:, r][p[:, r] > -1])) for r in range(101)]
        assert curves[name] == pytest.approx(expected, abs=1e-12)
    assert curves["0.50"][0] >= curves["0.50"][-1]
    # AP is the mean of the 0.50:0.95 curve when every category with GT has a curve.
    assert float(np.mean(curves["0.50:0.95"])) == pytest.approx(metrics["AP"], abs=1e-12)


def test_to_coco_results_maps_labels_and_boxes():
    label_to_category_id = [0, 3, 7, 12]  # index = contiguous label, 0 = background
    results = to_coco_results(
        42, torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.5, 1.5, 2.5, 4.0]]),
        torch.tensor([0.9, 0.25]), torch.tensor([3, 1]), label_to_category_id,
    )
    assert results == [
        {"image_id": 42, "category_id": 12, "bbox": [10.0, 20.0, 20.0, 40.0],
         "score": pytest.approx(0.9)},
        {"image_id": 42, "category_id": 3, "bbox": [0.5, 1.5, 2.0, 2.5],
         "score": pytest.approx(0.25)},
    ]
    assert all(type(v) is float for r in results for v in r["bbox"] + [r["score"]])
    assert type(results[0]["category_id"]) is int
    empty = torch.zeros(0)
    assert to_coco_results(1, torch.zeros(0, 4), empty, empty.long(), label_to_category_id) == []
    with pytest.raises(ValueError, match="background"):
        to_coco_results(1, torch.zeros(1, 4), torch.ones(1), torch.tensor([0]),
                        label_to_category_id)


def test_to_coco_results_round_trip_through_evaluation():
    gt_boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [100.0, 100.0, 160.0, 150.0]])
    results = to_coco_results(1, gt_boxes, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]),
                              [0, 3])
    metrics = evaluate_detections(_gt(dataset_dict()), results, image_ids=[1])
    assert metrics["per_class"]["cat"] == pytest.approx(1.0)  # both cats of image 1 exact
    assert metrics["per_class"]["dog"] == 0.0  # the dog of image 1 is missed
    assert metrics["APs"] == pytest.approx(1.0)


def test_build_coco_gt_assigns_ids_and_defaults():
    anns = [
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 20]},
        {"id": 7, "image_id": 1, "category_id": 3, "bbox": [5, 5, 4, 4], "area": 3.0,
         "iscrowd": 1},
        {"image_id": 2, "category_id": 7, "bbox": [1, 1, 2, 2]},
    ]
    original = copy.deepcopy(anns)
    coco = build_coco_gt(IMAGES, anns, CATEGORIES)
    assert anns == original
    assert sorted(coco.anns) == [7, 8, 9]
    first = coco.anns[8]
    assert first["area"] == 200.0 and first["iscrowd"] == 0  # box area, not crowd
    assert coco.anns[7]["area"] == 3.0 and coco.anns[7]["iscrowd"] == 1  # kept from input
    assert coco.getImgIds() == [1, 2, 5, 9, 10]
    assert coco.getAnnIds(imgIds=[1]) == [8, 7]
    assert coco.cats[12]["name"] == "bird"


def test_build_coco_gt_rejects_id_zero_and_duplicates():
    with pytest.raises(ValueError, match=">= 1"):
        build_coco_gt(IMAGES, [{"id": 0, "image_id": 1, "category_id": 3,
                                "bbox": [0, 0, 1, 1]}], CATEGORIES)
    dup = {"id": 4, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}
    with pytest.raises(ValueError, match=r"annotations\[1\] \(id 4\) repeats"):
        build_coco_gt(IMAGES, [dup, dup], CATEGORIES)


def test_results_on_unknown_image_raise():
    bad = [{"image_id": 12345, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0}]
    with pytest.raises(ValueError, match="12345"):
        evaluate_detections(_gt(dataset_dict()), bad)


def test_format_metrics_table():
    dataset, results = _single_class_case()
    metrics = evaluate_detections(_gt(dataset), results)
    metrics |= {"proposal_AR@100": 0.4567, "proposal_ARs@100": -1.0,
                "voc_AP50": 0.75, "voc_AP50_07": 0.7272,
                "voc_per_class": {1: {"ap": 0.75, "ap07": 0.7272}}}
    table = format_metrics_table(metrics)
    lines = table.splitlines()
    names = [line.split()[0] for line in lines[2:]]
    assert names[:12] == list(COCO_STAT_KEYS)
    assert names[12:16] == ["proposal_AR@100", "proposal_ARs@100", "voc_AP50", "voc_AP50_07"]
    row = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert row["AP"] == [f"{metrics['AP']:.3f}"] == ["0.835"]
    assert row["APs"] == ["n/a"]
    assert row["AR100"] == ["1.000"]
    assert row["proposal_AR@100"] == ["0.457"] and row["proposal_ARs@100"] == ["n/a"]
    assert row["voc_AP50_07"] == ["0.727"]
    assert row["thing"] == ["0.835"]
    assert row["1"] == ["0.750", "/", "0.727"]
    assert table.index("per-class") < table.index("thing")
    value_columns = {line.rfind(" ") for line in lines[2:14]}
    assert len(value_columns) == 1  # names padded to one column width
    nan_table = format_metrics_table({"AP": math.nan})
    assert nan_table.splitlines()[-1].split() == ["AP", "n/a"]


def test_prints_nothing(capsys):
    evaluate_detections(_gt(dataset_dict()), RESULTS)
    evaluate_detections(_gt(dataset_dict()), [])
    assert capsys.readouterr().out == ""


def test_ap_per_iou_matches_ap50_ap75_and_averages_to_ap():
    metrics = evaluate_detections(_gt(dataset_dict()), copy.deepcopy(RESULTS))
    per_iou = metrics["AP_per_iou"]
    assert list(per_iou) == [f"{0.5 + 0.05 * i:.2f}" for i in range(10)]
    assert per_iou["0.50"] == pytest.approx(metrics["AP50"])
    assert per_iou["0.75"] == pytest.approx(metrics["AP75"])
    assert sum(per_iou.values()) / 10 == pytest.approx(metrics["AP"])
