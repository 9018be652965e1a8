"""A tiny COCO set of coloured shapes on noise, and fast settings for the engine tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {1: (255, 40, 40), 2: (40, 255, 40), 5: (40, 40, 255)}  # non-contiguous category ids


def write_shapes_coco(root: Path, split: str, n: int, seed: int, size: int = 64) -> tuple[Path,
                                                                                          Path]:
    rng = np.random.default_rng(seed)
    images_dir = root / split
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        image_id = 100 * seed + i + 1
        for j in range(int(rng.integers(1, 3))):
            cat = [1, 2, 5][int(rng.integers(0, 3))]
            w, h = (int(v) for v in rng.integers(10, 30, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            pixels[y : y + h, x : x + w] = COLOURS[cat]
            annotations.append({"id": image_id * 10 + j, "image_id": image_id, "category_id": cat,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        name = f"{split}-{i}.png"
        Image.fromarray(pixels).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "height": size, "width": size})
    categories = [{"id": c, "name": f"shape{c}"} for c in COLOURS]
    ann = root / f"{split}.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": categories}))
    return images_dir, ann


FAST_MODEL = [
    "--model.backbone", "resnet18",
    "--model.roi_head", '{"batch_size_per_image": 32, "representation_size": 64, '
    '"score_thresh": 0.0}',
    "--model.rpn", '{"anchor_sizes": [16, 32, 64, 128, 256], "pre_nms_top_n_train": 200, '
    '"post_nms_top_n_train": 100, "pre_nms_top_n_test": 100, "post_nms_top_n_test": 50}',
    "--model.optimizer", '{"name": "sgd", "lr": 0.01}',
    "--model.schedule", '{"warmup_steps": 2}',
]
FAST_TRAINER = [
    "--trainer.accelerator", "cpu",
    "--trainer.enable_progress_bar", "false",
    "--trainer.log_every_n_steps", "1",
    "--trainer.num_sanity_val_steps", "0",
]


def coco_args(root: Path) -> list[str]:
    train_images, train_ann = write_shapes_coco(root, "train", 6, seed=1)
    val_images, val_ann = write_shapes_coco(root, "val", 3, seed=2)
    return ["--data.format", "coco", "--data.train_images", str(train_images),
            "--data.train_ann", str(train_ann), "--data.val_images", str(val_images),
            "--data.val_ann", str(val_ann), "--data.min_size", "64", "--data.max_size", "64",
            "--data.batch_size", "2"]
