"""Detection metrics: COCO AP/AR and RPN proposal recall (pycocotools' definitions, computed on
arrays), Pascal VOC AP, the metric definitions every table and log reads, and the COCO ground
truth builder."""

from detkit.eval.coco import (
    detections_to_coco_results,
    evaluate_detections,
    to_coco_results,
)
from detkit.eval.groundtruth import build_coco_gt, check_annotation_ids, complete_annotations
from detkit.eval.metrics import (
    COCO_STAT_KEYS,
    METRICS,
    Metric,
    format_metrics_table,
    metric,
    ordered_metrics,
    proposal_key,
    scalar_metrics,
)
from detkit.eval.proposals import proposal_budgets, proposal_recall
from detkit.eval.voc import voc_ap

__all__ = [
    "COCO_STAT_KEYS",
    "METRICS",
    "Metric",
    "build_coco_gt",
    "check_annotation_ids",
    "complete_annotations",
    "detections_to_coco_results",
    "evaluate_detections",
    "format_metrics_table",
    "metric",
    "ordered_metrics",
    "proposal_budgets",
    "proposal_key",
    "proposal_recall",
    "scalar_metrics",
    "to_coco_results",
    "voc_ap",
]
