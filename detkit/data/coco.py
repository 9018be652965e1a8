"""COCO-format detection dataset (a JSON annotation file and a folder of images)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from detkit.data.base import (
    DetectionDataset,
    ImageRecord,
    Transform,
    clip_boxes_xyxy,
    decodes,
    find_missing_files,
)
from detkit.eval import complete_annotations

_REQUIRED_KEYS = ("images", "annotations", "categories")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(section: str, index: int, entry: Any) -> str:
    """``annotations[5] (id 12)``: how errors name an entry."""
    if isinstance(entry, dict) and "id" in entry:
        return f"{section}[{index}] (id {entry['id']!r})"
    return f"{section}[{index}]"


def _read_json(ann_file: Path) -> dict[str, Any]:
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{ann_file}: not a JSON file ({error})") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{ann_file}: not a JSON text file ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{ann_file}: expected a JSON object, found {type(data).__name__}")
    missing = [key for key in _REQUIRED_KEYS if not isinstance(data.get(key), list)]
    if missing:
        raise ValueError(f"{ann_file}: missing or non-list key(s) {missing} (COCO needs "
                         f"{list(_REQUIRED_KEYS)})")
    return data


def _check_images(images: list[Any], ann_file: Path) -> list[dict[str, Any]]:
    """Every image has an int ``id``, a ``file_name`` and positive ``width``/``height``."""
    seen: set[int] = set()
    for i, image in enumerate(images):
        name = _entry("images", i, image)
        if not isinstance(image, dict) or not _is_id(image.get("id")):
            raise ValueError(f"{ann_file}: {name} has no integer 'id'")
        if not isinstance(image.get("file_name"), str):
            raise ValueError(f"{ann_file}: {name} has no 'file_name'")
        for key in ("width", "height"):
            if not (_is_number(image.get(key)) and image[key] > 0):
                raise ValueError(f"{ann_file}: {name} has no positive '{key}'")
        if image["id"] in seen:
            raise ValueError(f"{ann_file}: {name} repeats an image id")
        seen.add(image["id"])
    return images


def _check_categories(categories: list[Any], ann_file: Path) -> list[dict[str, Any]]:
    """Categories sorted by id (label ``i + 1`` is the ``i``-th); ids must be unique ints."""
    seen: set[int] = set()
    for i, category in enumerate(categories):
        name = _entry("categories", i, category)
        if not isinstance(category, dict) or not _is_id(category.get("id")):
            raise ValueError(f"{ann_file}: {name} has no integer 'id'")
        if not isinstance(category.get("name"), str):
            raise ValueError(f"{ann_file}: {name} has no 'name'")
        if category["id"] in seen:
            raise ValueError(f"{ann_file}: {name} repeats a category id")
        seen.add(category["id"])
    if not categories:
        raise ValueError(f"{ann_file}: 'categories' is empty")
    return sorted(categories, key=lambda c: c["id"])


def _check_annotation(ann: Any, name: str, image_ids: set[int], category_ids: set[int]) -> None:
    if not isinstance(ann, dict):
        raise ValueError(f"{name} is not an object")
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise ValueError(f"{name} has bbox {bbox!r}, expected 4 finite numbers [x, y, w, h]")
    if not (_is_id(ann.get("image_id")) and ann["image_id"] in image_ids):
        raise ValueError(f"{name} refers to image_id {ann.get('image_id')!r}, not in 'images'")
    if not (_is_id(ann.get("category_id")) and ann["category_id"] in category_ids):
        raise ValueError(f"{name} has unknown category_id {ann.get('category_id')!r}")
    if "area" in ann and not _is_number(ann["area"]):
        raise ValueError(f"{name} has area {ann['area']!r}, expected a finite number")
    if "id" in ann and not _is_id(ann["id"]):
        raise ValueError(f"{name} has a non-integer id")


def _check_annotations(
    annotations: list[Any], image_ids: set[int], category_ids: set[int], ann_file: Path
) -> dict[int, list[dict[str, Any]]]:
    """Validate annotations and complete them for ``coco_gt``, grouped by image id.

    Completion is ``detkit.eval.complete_annotations`` (a missing ``area`` becomes the box area
    ``w * h``, a missing ``iscrowd`` 0 and a missing ``id`` a fresh one above the largest id in
    the file; repeated ids and ids below 1 are errors).
    """
    try:
        for i, ann in enumerate(annotations):
            _check_annotation(ann, _entry("annotations", i, ann), image_ids, category_ids)
        completed = complete_annotations(annotations)
    except ValueError as error:
        raise ValueError(f"{ann_file}: {error}") from None
    per_image: dict[int, list[dict[str, Any]]] = {}
    for ann in completed:
        per_image.setdefault(ann["image_id"], []).append(ann)
    return per_image


class CocoDetection(DetectionDataset):
    """Detection dataset read from a COCO annotation file.

    Items follow :class:`~detkit.data.base.DetectionDataset`. Category ids (in any order, with
    gaps) map to labels ``1..K`` in sorted id order; ``label_to_category_id[label]`` maps back
    (index 0, background, is -1) and ``category_names[label - 1]`` names them.

    Training targets leave out crowd annotations, clip boxes to the image and drop boxes empty
    after clipping; images without objects are kept as negatives. ``coco_gt`` keeps the original
    annotations of the kept images (original category ids, the file's ``area`` - COCO's size
    buckets use it - or the box area when missing, crowd as ``iscrowd=1``).

    ``stats`` counts: ``images``, ``annotations`` (of kept images), ``crowd_excluded``,
    ``boxes_clipped``, ``boxes_dropped_empty``, ``images_without_boxes``,
    ``missing_images_skipped``, ``undecodable_images_skipped`` (updated at load time).

    Args:
        images_dir: folder the images' ``file_name`` s are relative to.
        ann_file: COCO JSON with ``images``, ``annotations`` and ``categories``.
        transforms: albumentations-style callable (see :data:`~detkit.data.base.Transform`),
            e.g. :func:`~detkit.data.transforms.train_transforms`; None gives ``[0, 1]`` pixels.
        skip_bad_images: drop images whose file is missing (at construction) and replace
            undecodable ones by the next index (at load) instead of raising.
        verify_images: decode every image at construction; with ``skip_bad_images`` the
            undecodable ones are left out of the items and ``coco_gt`` (as missing ones are),
            otherwise the first one raises.

    Raises:
        ValueError: a malformed annotation file (naming the file and the entry), or missing image
            files without ``skip_bad_images`` (naming the first few and how many).
    """

    def __init__(
        self,
        images_dir: str | Path,
        ann_file: str | Path,
        transforms: Transform | None = None,
        *,
        skip_bad_images: bool = False,
        verify_images: bool = False,
    ) -> None:
        images_dir, ann_file = Path(images_dir), Path(ann_file)
        data = _read_json(ann_file)
        images = _check_images(data["images"], ann_file)
        categories = _check_categories(data["categories"], ann_file)
        self.category_names = [c["name"] for c in categories]
        self.label_to_category_id = [-1] + [c["id"] for c in categories]
        label_of = {c["id"]: label for label, c in enumerate(categories, start=1)}
        anns_per_image = _check_annotations(
            data["annotations"], {img["id"] for img in images}, set(label_of), ann_file
        )
        paths = [images_dir / img["file_name"] for img in images]
        exists = find_missing_files(paths, what=str(ann_file), skip=skip_bad_images)

        self.stats = dict.fromkeys(
            ("images", "annotations", "crowd_excluded", "boxes_clipped", "boxes_dropped_empty",
             "images_without_boxes", "missing_images_skipped", "undecodable_images_skipped"), 0)
        records, kept_images, kept_anns = [], [], []
        for image, path, ok in zip(images, paths, exists, strict=True):
            if not ok:
                self.stats["missing_images_skipped"] += 1
                continue
            size_hw = (int(image["height"]), int(image["width"]))
            if verify_images and not decodes(path, size_hw, skip=skip_bad_images):
                self.stats["undecodable_images_skipped"] += 1
                continue
            anns = anns_per_image.get(image["id"], [])
            records.append(self._record(image, path, anns, label_of))
            kept_images.append(image)
            kept_anns.extend(anns)
        self._coco_gt_dataset = {
            **{k: v for k, v in data.items() if k in ("info", "licenses")},
            "images": kept_images,
            "annotations": kept_anns,
            "categories": data["categories"],
        }
        self._init_records(records, transforms, skip_bad_images=skip_bad_images,
                           verify_images=verify_images, source=ann_file)
        self._log_stats()

    def _record(
        self,
        image: dict[str, Any],
        path: Path,
        anns: list[dict[str, Any]],
        label_of: dict[int, int],
    ) -> ImageRecord:
        """Training boxes of one image: crowd left out, clipped, empty ones dropped."""
        height, width = int(image["height"]), int(image["width"])
        crowd = [a for a in anns if a["iscrowd"] == 1]
        objects = [a for a in anns if a["iscrowd"] != 1]
        boxes_xywh = np.array([a["bbox"] for a in objects], np.float64).reshape(-1, 4)
        labels = np.array([label_of[a["category_id"]] for a in objects], np.int64)
        boxes_xyxy = np.concatenate([boxes_xywh[:, :2], boxes_xywh[:, :2] + boxes_xywh[:, 2:]], 1)
        clipped, keep, changed = clip_boxes_xyxy(boxes_xyxy, height, width)
        self.stats["images"] += 1
        self.stats["annotations"] += len(anns)
        self.stats["crowd_excluded"] += len(crowd)
        self.stats["boxes_clipped"] += int(changed.sum())
        self.stats["boxes_dropped_empty"] += int((~keep).sum())
        self.stats["images_without_boxes"] += int(not keep.any())
        return ImageRecord(image["id"], path, height, width, clipped[keep], labels[keep])
