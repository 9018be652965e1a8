"""Evaluation cost at COCO's size: detkit's COCO AP and proposal recall against pycocotools.

Data of COCO val2017's shape is generated (no download): 5,000 images of 640x480, about 7
ground-truth boxes per image (Poisson), 80 categories with COCO's non-contiguous ids, ~1%
crowd, COCO's spread of object sizes (box side log-uniform in 8..400 px, mask ``area`` 50-90%
of the box), 100 detections per image (jittered ground truth with 20% wrong classes, and
background boxes) and 1,000 ranked proposals per image (jittered ground truth and background).
Both paths score the same data in one process; the old path (pycocotools ``COCOeval``, which is
what detkit ran before) can be restricted to the first images, since at full size it takes
minutes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detkit.eval import build_coco_gt, evaluate_detections, proposal_recall
from detkit.eval.reference import reference_evaluate_detections, reference_proposal_recall

# COCO's 80 category ids (1..90 with gaps).
_COCO_MISSING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in _COCO_MISSING_IDS)


@dataclass(frozen=True)
class EvalData:
    """Generated COCO-shaped data.

    Attributes:
        dataset: COCO ground truth dict (``images``, ``annotations``, ``categories``).
        results: COCO results dicts, boxes ``[x, y, w, h]`` in image pixels.
        proposals: ``{image_id: Tensor[P, 4]}`` xyxy proposals, best first.
    """

    dataset: dict[str, list[dict]]
    results: list[dict]
    proposals: dict[int, Tensor]


def _jittered_xywh(gen: np.random.Generator, boxes_xywh: np.ndarray, sigma: float) -> np.ndarray:
    """Ground-truth boxes moved and resized by ``sigma`` times their size (normal noise)."""
    size = np.concatenate([boxes_xywh[:, 2:], boxes_xywh[:, 2:]], axis=1)
    out = boxes_xywh + gen.normal(0.0, sigma, boxes_xywh.shape) * size
    out[:, 2:] = np.maximum(out[:, 2:], 1.0)
    return out


def _background_xywh(gen: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    wh = np.exp(gen.uniform(np.log(8), np.log(300), (n, 2)))
    xy = gen.uniform(0, 1, (n, 2)) * np.maximum([width, height] - wh, 1.0)
    return np.concatenate([xy, wh], axis=1)


def make_coco_like(
    num_images: int = 5000, *, gt_per_image: float = 7.0, dets_per_image: int = 100,
    proposals_per_image: int = 1000, seed: int = 0,
) -> EvalData:
    """COCO-shaped ground truth, detections and proposals (see the module docstring)."""
    gen = np.random.default_rng(seed)
    width, height = 640, 480
    cat_ids = np.array(COCO_CATEGORY_IDS)
    images, annotations, results, proposals = [], [], [], {}
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": width, "height": height,
                       "file_name": f"{image_id:012d}.jpg"})
        n = int(gen.poisson(gt_per_image))
        wh = np.exp(gen.uniform(np.log(8), np.log(400), (n, 2)))
        xy = gen.uniform(0, 1, (n, 2)) * np.maximum([width, height] - wh, 1.0)
        gt = np.concatenate([xy, wh], axis=1)
        cats = gen.choice(cat_ids, n)
        areas = wh.prod(axis=1) * gen.uniform(0.5, 0.9, n)
        crowd = gen.uniform(size=n) < 0.01
        first_id = len(annotations) + 1
        annotations += [
            {"id": first_id + k, "image_id": image_id, "category_id": int(cats[k]),
             "bbox": gt[k].tolist(), "area": float(areas[k]), "iscrowd": int(crowd[k])}
            for k in range(n)
        ]
        hits = min(3 * n, dets_per_image)
        source = gen.integers(0, max(n, 1), hits)
        det_boxes = np.concatenate([_jittered_xywh(gen, gt[source], 0.1) if n else
                                    np.zeros((0, 4)),
                                    _background_xywh(gen, dets_per_image - hits, width, height)])
        det_cats = np.concatenate([cats[source], gen.choice(cat_ids, dets_per_image - hits)])
        wrong = gen.uniform(size=dets_per_image) < 0.2
        det_cats[wrong] = gen.choice(cat_ids, int(wrong.sum()))
        scores = gen.uniform(size=dets_per_image)
        results += [{"image_id": image_id, "category_id": int(c), "bbox": b, "score": float(s)}
                    for b, c, s in zip(det_boxes.tolist(), det_cats, scores, strict=True)]
        near = min(20 * n, proposals_per_image // 2)
        boxes = np.concatenate([
            _jittered_xywh(gen, gt[gen.integers(0, max(n, 1), near)], 0.15) if n else
            np.zeros((0, 4)),
            _background_xywh(gen, proposals_per_image - near, width, height)])
        boxes = boxes[gen.permutation(len(boxes))]
        proposals[image_id] = torch.from_numpy(
            np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1))
    categories = [{"id": int(c), "name": f"class{c}"} for c in cat_ids]
    return EvalData({"images": images, "annotations": annotations, "categories": categories},
                    results, proposals)


@dataclass
class EvalBenchConfig:
    """Sizes of the evaluation benchmark (defaults: COCO val2017's shape)."""

    num_images: int = 5000
    gt_per_image: float = 7.0
    dets_per_image: int = 100
    proposals_per_image: int = 1000
    # The old path (pycocotools COCOeval) runs on the first images only: at full size it takes
    # minutes (detections) or does not finish in reasonable time (proposals). 0 skips it;
    # a value >= num_images runs it on everything.
    reference_images: int = 500
    reference_proposal_images: int = 100
    seed: int = 0


@dataclass
class Timing:
    """One timed call: wall and process CPU seconds, and its result."""

    name: str
    images: int
    wall_s: float
    cpu_s: float
    result: Any = field(repr=False, default=None)


def timed(name: str, images: int, fn: Callable[[], Any]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return Timing(name, images, time.perf_counter() - wall, time.process_time() - cpu, result)


def max_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute difference over every number in two metrics dicts (nested dicts and
    lists included); infinite when their keys differ."""
    if list(a) != list(b):
        return float("inf")
    worst = 0.0
    for key, value in a.items():
        if isinstance(value, dict):
            worst = max(worst, max_difference(value, b[key]))
        else:
            diff = np.abs(np.asarray(value, np.float64) - np.asarray(b[key], np.float64))
            worst = max(worst, float(diff.max(initial=0.0)))
    return worst


def _subset(data: EvalData, count: int) -> tuple[list[int], list[dict], dict[int, Tensor]]:
    ids = [img["id"] for img in data.dataset["images"][:count]]
    keep = set(ids)
    return (ids, [r for r in data.results if r["image_id"] in keep],
            {i: p for i, p in data.proposals.items() if i in keep})


def run_eval_benchmark(cfg: EvalBenchConfig) -> dict[str, Any]:
    """Time the new and the old path on generated data; returns timings and parity."""
    generated = timed("generate data", cfg.num_images, lambda: make_coco_like(
        cfg.num_images, gt_per_image=cfg.gt_per_image, dets_per_image=cfg.dets_per_image,
        proposals_per_image=cfg.proposals_per_image, seed=cfg.seed))
    data: EvalData = generated.result
    ds = data.dataset
    gt = build_coco_gt(ds["images"], ds["annotations"], ds["categories"])
    timings = [generated,
               timed("evaluate_detections (detkit)", cfg.num_images,
                     lambda: evaluate_detections(gt, data.results)),
               timed("proposal_recall (detkit)", cfg.num_images,
                     lambda: proposal_recall(gt, data.proposals))]
    parity = {}
    if cfg.reference_images > 0:
        ids, results, _ = _subset(data, min(cfg.reference_images, cfg.num_images))
        new = timed("evaluate_detections (detkit)", len(ids),
                    lambda: evaluate_detections(gt, results, ids))
        old = timed("evaluate_detections (pycocotools)", len(ids),
                    lambda: reference_evaluate_detections(gt, results, ids))
        timings += [new, old]
        parity["evaluate_detections"] = max_difference(new.result, old.result)
    if cfg.reference_proposal_images > 0:
        ids, _, proposals = _subset(data, min(cfg.reference_proposal_images, cfg.num_images))
        new = timed("proposal_recall (detkit)", len(ids),
                    lambda: proposal_recall(gt, proposals, image_ids=ids))
        old = timed("proposal_recall (COCOeval, useCats=0)", len(ids),
                    lambda: reference_proposal_recall(gt, proposals, image_ids=ids))
        timings += [new, old]
        parity["proposal_recall"] = max_difference(new.result, old.result)
    return {"config": cfg, "timings": timings, "parity": parity,
            "annotations": len(ds["annotations"]), "results": len(data.results),
            "proposals": sum(len(p) for p in data.proposals.values())}


def format_eval_benchmark(report: dict[str, Any]) -> str:
    """The timings side by side, old/new ratios on the same images, and the parity check."""
    cfg: EvalBenchConfig = report["config"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"Evaluation at COCO's size: {cfg.num_images} images, {report['annotations']} "
             f"ground-truth boxes, {report['results']} detections, {report['proposals']} "
             f"proposals. {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
             f"load average {load:.1f} at the end (other work on the machine slows wall time; "
             "CPU time is this process's).", "",
             f"{'what':<40}{'images':>8}{'wall s':>10}{'CPU s':>9}{'s/1k img':>10}",
             "-" * 77]
    for t in report["timings"]:
        lines.append(f"{t.name:<40}{t.images:>8}{t.wall_s:>10.2f}{t.cpu_s:>9.2f}"
                     f"{1e3 * t.wall_s / max(t.images, 1):>10.2f}")
    by_name = {}
    for t in report["timings"][1:]:
        by_name.setdefault(t.name, []).append(t)
    lines.append("")
    for new_name, old_name in (("evaluate_detections (detkit)",
                                "evaluate_detections (pycocotools)"),
                               ("proposal_recall (detkit)",
                                "proposal_recall (COCOeval, useCats=0)")):
        if old_name not in by_name:
            continue
        old = by_name[old_name][0]
        new = next(t for t in by_name[new_name] if t.images == old.images)
        full = by_name[new_name][0]
        lines.append(f"{new_name.split()[0]}: old/new on the same {old.images} images "
                     f"{old.wall_s / new.wall_s:.1f}x (wall); old path extrapolated linearly to "
                     f"{full.images} images {old.wall_s * full.images / old.images:.0f} s "
                     f"against {full.wall_s:.1f} s measured new.")
    for name, diff in report["parity"].items():
        lines.append(f"{name}: largest difference to pycocotools over every reported number "
                     f"= {diff:.2e}")
    return "\n".join(lines)
