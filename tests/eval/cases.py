"""Hand-made COCO-style data and direct pycocotools runs, shared by the eval tests.

The reference helpers call pycocotools exactly as its README does (COCO from a dataset dict,
loadRes, COCOeval evaluate/accumulate/summarize) and share no code with detkit.eval.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Non-contiguous ids; "zebra" has no ground truth at all.
CATEGORIES = [
    {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "bird"},
    {"id": 20, "name": "zebra"},
]
IMAGES = [
    {"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in (1, 2, 5, 9, 10)
]


def _ann(ann_id: int, image_id: int, cat: int, box: list[float], crowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": box,
            "area": box[2] * box[3], "iscrowd": crowd}


# Sizes: small < 32^2 = 1024 <= medium <= 96^2 = 9216 < large (by "area").
ANNOTATIONS = [
    _ann(1, 1, 3, [10, 10, 20, 20]),        # small cat
    _ann(2, 1, 3, [100, 100, 60, 50]),      # medium cat
    _ann(3, 1, 7, [300, 200, 150, 120]),    # large dog
    _ann(4, 1, 7, [0, 300, 200, 150], crowd=1),   # crowd of dogs
    _ann(5, 2, 12, [50, 60, 25, 30]),       # small bird (750)
    _ann(6, 2, 12, [400, 50, 80, 90]),      # medium bird
    _ann(7, 2, 3, [200, 200, 200, 200]),    # large cat
    _ann(8, 5, 7, [20, 20, 40, 40]),        # medium dog
    _ann(9, 5, 3, [300, 300, 110, 100]),    # large cat (image 5 gets no predictions)
    _ann(10, 9, 12, [500, 400, 20, 15]),    # small bird
    _ann(11, 9, 12, [0, 0, 640, 480], crowd=1),  # crowd covering the whole image
    # image 10: no ground truth
]


def _res(image_id: int, cat: int, box: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}


RESULTS = [
    _res(1, 3, [11, 10, 20, 21], 0.9),        # small cat, IoU ~0.9
    _res(1, 3, [11, 10, 20, 21], 0.85),       # duplicate of it
    _res(1, 3, [105, 100, 60, 50], 0.7),      # medium cat, IoU ~0.85
    _res(1, 7, [310, 210, 150, 120], 0.95),   # large dog, IoU ~0.77
    _res(1, 7, [10, 310, 80, 80], 0.99),      # inside the crowd: ignored, not FP
    _res(1, 12, [300, 200, 150, 120], 0.6),   # wrong class: FP bird
    _res(2, 12, [50, 60, 25, 30], 0.8),       # exact small bird
    _res(2, 12, [420, 60, 80, 90], 0.3),      # medium bird, IoU ~0.6
    _res(2, 3, [210, 190, 200, 220], 0.75),   # large cat, IoU ~0.8
    _res(2, 3, [0, 0, 30, 30], 0.65),         # FP cat
    _res(9, 12, [501, 401, 20, 15], 0.5),     # small bird
    _res(9, 12, [100, 100, 40, 40], 0.55),    # on the crowd: ignored
    _res(10, 7, [50, 50, 100, 100], 0.4),     # FP on an image without ground truth
    # image 5: no predictions
]


def dataset_dict(
    images: list[dict] = IMAGES, annotations: list[dict] = ANNOTATIONS,
    categories: list[dict] = CATEGORIES,
) -> dict:
    return {"images": copy.deepcopy(images), "annotations": copy.deepcopy(annotations),
            "categories": copy.deepcopy(categories)}


def reference_cocoeval(
    dataset: dict, results: list[dict], *, use_cats: int = 1, max_dets: list[int] | None = None,
    img_ids: list[int] | None = None, cat_ids: list[int] | None = None, summarize: bool = True,
) -> COCOeval:
    """pycocotools run directly, as in its README."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(dataset)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.params.useCats = use_cats
        if max_dets is not None:
            coco_eval.params.maxDets = max_dets
        if img_ids is not None:
            coco_eval.params.imgIds = img_ids
        if cat_ids is not None:
            coco_eval.params.catIds = cat_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        if summarize:
            coco_eval.summarize()
    return coco_eval


def random_case(seed: int, num_images: int = 6) -> tuple[dict, list[dict]]:
    """Random ground truth (all sizes, some crowd) and noisy detections around it."""
    gen = np.random.default_rng(seed)
    images = [{"id": 100 + i, "width": 500, "height": 400, "file_name": f"{i}.jpg"}
              for i in range(num_images)]
    annotations, results = [], []
    for img in images:
        for _ in range(gen.integers(0, 7)):
            w, h = gen.uniform(8, 200, size=2)
            x, y = gen.uniform(0, 300), gen.uniform(0, 200)
            cat = int(gen.choice([3, 7, 12]))
            annotations.append({
                "id": len(annotations) + 1, "image_id": img["id"], "category_id": cat,
                "bbox": [x, y, w, h], "area": float(w * h * gen.uniform(0.6, 1.0)),
                "iscrowd": int(gen.uniform() < 0.1),
            })
            for _ in range(gen.integers(0, 3)):  # 0, 1 or 2 (duplicate) detections
                jitter = gen.normal(0, 0.15, size=4) * [w, h, w, h]
                wrong = gen.uniform() < 0.15
                results.append({
                    "image_id": img["id"], "category_id": 7 if wrong else cat,
                    "bbox": [float(v) for v in np.array([x, y, w, h]) + jitter],
                    "score": float(gen.uniform()),
                })
        for _ in range(gen.integers(0, 3)):  # background false positives
            results.append({"image_id": img["id"], "category_id": int(gen.choice([3, 7, 12])),
                            "bbox": [float(v) for v in gen.uniform(0, 150, size=4)],
                            "score": float(gen.uniform())})
    return dataset_dict(images, annotations, CATEGORIES[:3]), results


def xywh_to_xyxy(boxes: list[list[float]]) -> torch.Tensor:
    t = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)
