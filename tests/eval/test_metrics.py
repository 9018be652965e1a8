import math

import pytest

from detkit.eval import (
    COCO_STAT_KEYS,
    METRICS,
    complete_annotations,
    format_metrics_table,
    metric,
    ordered_metrics,
    proposal_budgets,
    proposal_key,
    scalar_metrics,
)
from detkit.eval.report import columns_for, delta_table, results_table, summarize


def test_every_fixed_key_has_one_definition():
    assert list(METRICS)[:12] == list(COCO_STAT_KEYS)
    assert {m.group for m in METRICS.values()} == {"coco", "voc", "speed", "model"}
    assert metric("infer_ms_per_image").higher_is_better is False
    assert metric("AP").is_accuracy and not metric("train_images_per_s").is_accuracy


def test_proposal_keys_are_a_family():
    m = metric("proposal_ARs@300")
    assert (m.title, m.group, m.higher_is_better) == ("pARs@300", "proposal", True)
    assert proposal_key("l", 1000) == "proposal_ARl@1000"
    with pytest.raises(ValueError, match="size"):
        proposal_key("xl", 10)


def test_unknown_keys_fail_loudly():
    with pytest.raises(KeyError, match="no metric definition for 'AP_huge'"):
        metric("AP_huge")
    with pytest.raises(KeyError, match="AP_huge"):
        scalar_metrics({"AP": 0.5, "AP_huge": 0.1})
    # non-scalar entries (per-class AP, curves, the checkpoint path) are not metrics
    assert scalar_metrics({"AP": 0.5, "per_class": {"a": 0.5}, "checkpoint": "x"}) == {"AP": 0.5}


def test_format_uses_the_definition():
    assert metric("AP").format(0.12345) == "0.123"
    assert metric("AP").format(-1.0) == "n/a"  # no ground truth in the bucket
    assert metric("AP").format(math.nan) == "n/a"
    assert metric("train_images_per_s").format(12.345) == "12.35"
    assert metric("params").format(11_234_567) == "11.2"


def test_table_json_and_tensorboard_share_one_order():
    metrics = {"per_class": {"a": 0.4}, "params": 2_000_000, "infer_ms_per_image": 12.0,
               "proposal_AR@300": 0.5, "AP50": 0.6, "voc_AP50": 0.7, "AP": 0.4}
    metrics["params"] = float(metrics["params"])
    order = ["AP", "AP50", "proposal_AR@300", "voc_AP50", "infer_ms_per_image", "params"]
    assert list(scalar_metrics(metrics)) == order
    assert list(ordered_metrics(metrics)) == [*order, "per_class"]
    rows = [line.split()[0] for line in format_metrics_table(metrics).splitlines()[2:]]
    assert rows[:len(order)] == order
    table = format_metrics_table(metrics)
    assert "12.0 ms" in table and "2.0M" in table


def test_report_columns_and_deltas_come_from_the_definitions():
    run = {"AP": 0.3, "AP50": 0.5, "AP75": 0.2, "APs": -1.0, "APm": 0.3, "APl": 0.4,
           "ARs": 0.1, "ARm": 0.4, "ARl": 0.5, "proposal_ARs@100": 0.2, "proposal_ARs@300": 0.3,
           "proposal_ARm@300": 0.4, "proposal_ARl@300": 0.5, "train_images_per_s": 10.0,
           "infer_ms_per_image": 20.0, "params": 1e7}
    runs = {"roi_align": [run], "roi_pool": [{**run, "AP": 0.25, "train_images_per_s": 20.0}]}
    columns = columns_for(runs)
    titles = [c.title for c in columns]
    assert "pARs@300" in titles and "pARs@1000" not in titles  # the budget the runs scored
    summary = summarize(runs, columns)
    table = results_table(summary, columns, seeds=1)
    assert "**0.300**" in table and "| n/a |" in table  # best AP bold; APs has no ground truth
    deltas = delta_table(runs, columns, "roi_align")  # paired by seed: it needs the runs
    assert "-0.050" in deltas and "2.00x" in deltas and "ΔpARs@300" in deltas
    assert "Δparams" not in deltas  # size is neither accuracy nor speed


def test_proposal_budgets_follow_the_kept_count():
    assert proposal_budgets(1000) == (100, 300, 1000)
    assert proposal_budgets(300) == (100, 300)
    assert proposal_budgets(500) == (100, 300, 500)
    assert proposal_budgets(50) == (50,)
    with pytest.raises(ValueError, match="at least 1"):
        proposal_budgets(0)


def test_complete_annotations_fills_what_cocoeval_needs():
    anns = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 20]},
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 3.5,
             "iscrowd": True}]
    done = complete_annotations(anns)
    assert [a["id"] for a in done] == [6, 5]
    assert done[0]["area"] == 200.0 and done[0]["iscrowd"] == 0
    assert done[1]["area"] == 3.5 and done[1]["iscrowd"] == 1
    assert "id" not in anns[0] and anns[1]["iscrowd"] is True  # inputs untouched
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id 0\).*>= 1"):
        complete_annotations([{"id": 0, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}])
