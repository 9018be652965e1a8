"""Detection metrics: COCO AP/AR (pycocotools), RPN proposal recall, Pascal VOC AP."""

from detkit.eval.coco import (
    COCO_STAT_KEYS,
    build_coco_gt,
    evaluate_detections,
    format_metrics_table,
    to_coco_results,
)
from detkit.eval.proposals import proposal_recall
from detkit.eval.voc import voc_ap

__all__ = [
    "COCO_STAT_KEYS",
    "build_coco_gt",
    "evaluate_detections",
    "format_metrics_table",
    "proposal_recall",
    "to_coco_results",
    "voc_ap",
]
