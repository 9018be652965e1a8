"""COCO-format detection dataset (a JSON annotation file and a folder of images)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from detkit.data.base import (
    DetectionDataset,
    RecordArrays,
    Transform,
    clip_boxes_xyxy,
    decodes,
    find_missing_files,
)
from detkit.eval import check_annotation_ids

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


def _drop_segmentation(entry: dict[str, Any]) -> dict[str, Any]:
    """``json`` object hook: polygons and RLE masks are dropped as soon as each annotation is
    parsed, so they never pile up (in COCO train2017 they are most of the file's 389 MB, and as
    Python floats they took gigabytes); box detection and its evaluation never read them."""
    entry.pop("segmentation", None)
    return entry


# A "segmentation" member's value as COCO writes it: polygons (a list of flat lists of
# numbers), or RLE (an object without nested objects: {"counts": [...] or "...", "size": [h, w]}).
_SEGMENTATION_VALUE = re.compile(
    rb'"segmentation"\s*:\s*(?:\[(?:\s*\[[^\[\]{}"]*\]\s*,?)*\s*\]|\{[^{}]*\})')


def _parse(raw: bytes) -> Any:
    """``json.loads`` with segmentation dropped, fast: each polygon or RLE value is replaced by
    ``0`` in the raw bytes before parsing (parsing train2017's polygons into Python floats,
    only to drop them, was most of the load time), and the object hook drops what is left (the
    ``0`` s, and any segmentation written in another shape). The replacement keeps the JSON
    valid whenever the file is; should it ever not parse, the file is parsed as it is, so the
    result and any error message are those of the plain parse."""
    stripped, replaced = _SEGMENTATION_VALUE.subn(b'"segmentation":0', raw)
    if replaced:
        try:
            return json.loads(stripped, object_hook=_drop_segmentation)
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    return json.loads(raw, object_hook=_drop_segmentation)


def _read_json(ann_file: Path) -> dict[str, Any]:
    try:
        data = _parse(ann_file.read_bytes())
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


_NUMBER_TYPES = frozenset((int, float))  # what json gives for numbers (bool is its own type)


def _all_well_formed(annotations: list[Any], image_ids: set[int], category_ids: set[int]
                     ) -> bool:
    """True when every annotation passes :func:`_check_annotation`: the same rules, checked per
    column in C loops (a Python call per annotation cost seconds on train2017's 860k). False
    leaves the naming of the first bad entry to the per-entry check."""
    try:
        if set(map(type, annotations)) - {dict}:
            return False
        bboxes = [a.get("bbox") for a in annotations]
        if (set(map(type, bboxes)) - {list} or set(map(len, bboxes)) - {4}
                or set(map(type, chain.from_iterable(bboxes))) - _NUMBER_TYPES
                or not np.isfinite(np.array(bboxes, np.float64)).all()):
            return False
        for key, known in (("image_id", image_ids), ("category_id", category_ids)):
            values = [a.get(key) for a in annotations]
            if set(map(type, values)) - {int} or not known.issuperset(values):
                return False
        areas = [a["area"] for a in annotations if "area" in a]
        if (set(map(type, areas)) - _NUMBER_TYPES
                or not np.isfinite(np.array(areas, np.float64)).all()):
            return False
        return not set(type(a["id"]) for a in annotations if "id" in a) - {int}
    except (OverflowError, ValueError):  # e.g. an int too large for a float
        return False


def _check_annotations(
    annotations: list[Any], image_ids: set[int], category_ids: set[int], ann_file: Path
) -> None:
    """Validate every annotation, and that given ids are unique and >= 1 (as
    ``detkit.eval.check_annotation_ids``), naming the file and the entry."""
    try:
        if not _all_well_formed(annotations, image_ids, category_ids):
            for i, ann in enumerate(annotations):
                _check_annotation(ann, _entry("annotations", i, ann), image_ids, category_ids)
        check_annotation_ids(annotations)
    except ValueError as error:
        raise ValueError(f"{ann_file}: {error}") from None


@dataclass(frozen=True)
class _AnnotationArrays:
    """The annotations as training needs them, one row per annotation in file order.

    Attributes:
        image_index: ``int64 [A]`` index of the annotation's image in ``images``.
        boxes_xyxy: ``float64 [A, 4]`` the file's boxes in original pixels.
        labels: ``int64 [A]`` contiguous labels in ``1..K``.
        crowd: ``bool [A]`` ``iscrowd`` set.
    """

    image_index: np.ndarray
    boxes_xyxy: np.ndarray
    labels: np.ndarray
    crowd: np.ndarray

    @classmethod
    def build(cls, annotations: list[dict[str, Any]], index_of: dict[int, int],
              label_of: dict[int, int]) -> _AnnotationArrays:
        """From validated annotation dicts (``index_of``: image id -> index)."""
        boxes_xywh = np.array([a["bbox"] for a in annotations], np.float64).reshape(-1, 4)
        return cls(
            image_index=np.array([index_of[a["image_id"]] for a in annotations], np.int64),
            boxes_xyxy=np.concatenate([boxes_xywh[:, :2], boxes_xywh[:, :2] + boxes_xywh[:, 2:]],
                                      axis=1),
            labels=np.array([label_of[a["category_id"]] for a in annotations], np.int64),
            crowd=np.array([bool(a.get("iscrowd", 0)) for a in annotations], bool),
        )


class CocoDetection(DetectionDataset):
    """Detection dataset read from a COCO annotation file.

    Items follow :class:`~detkit.data.base.DetectionDataset`. Category ids (in any order, with
    gaps) map to labels ``1..K`` in sorted id order; ``label_to_category_id[label]`` maps back
    (index 0, background, is -1) and ``category_names[label - 1]`` names them.

    Training targets leave out crowd annotations, clip boxes to the image and drop boxes empty
    after clipping; images without objects are kept as negatives. ``coco_gt`` keeps the original
    annotations of the kept images (original category ids, the file's ``area`` - COCO's size
    buckets use it - or the box area when missing, crowd as ``iscrowd=1``) without their
    ``segmentation`` (dropped while parsing: box evaluation does not read it).

    Memory: ``records`` are :class:`~detkit.data.base.RecordArrays` (flat numpy arrays, shared
    by DataLoader workers without copying); with ``keep_coco_gt=False`` (training sets) no
    annotation dict is kept at all, so a train2017-sized file loads into ~1/20 of the memory.

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
        keep_coco_gt: keep the image and annotation dicts that ``coco_gt`` is built from (for
            the evaluated split); False keeps only the training records, and ``coco_gt`` raises.

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
        keep_coco_gt: bool = True,
    ) -> None:
        images_dir, ann_file = Path(images_dir), Path(ann_file)
        data = _read_json(ann_file)
        images = _check_images(data["images"], ann_file)
        categories = _check_categories(data["categories"], ann_file)
        self.category_names = [c["name"] for c in categories]
        self.label_to_category_id = [-1] + [c["id"] for c in categories]
        label_of = {c["id"]: label for label, c in enumerate(categories, start=1)}
        index_of = {image["id"]: i for i, image in enumerate(images)}
        _check_annotations(data["annotations"], set(index_of), set(label_of), ann_file)
        anns = _AnnotationArrays.build(data["annotations"], index_of, label_of)
        paths = [images_dir / img["file_name"] for img in images]
        kept = self._kept_images(images, paths, skip_bad_images, verify_images, ann_file)
        self.records = self._records(images, paths, kept, anns)
        if keep_coco_gt:
            self._coco_gt_dataset = {
                **{k: v for k, v in data.items() if k in ("info", "licenses")},
                "images": [image for image, ok in zip(images, kept, strict=True) if ok],
                "annotations": [a for a, ok in zip(data["annotations"], kept[anns.image_index],
                                                   strict=True) if ok],
                "categories": data["categories"],
            }
        else:
            self._coco_gt_dataset = None
        self._init_records(self.records, transforms, skip_bad_images=skip_bad_images,
                           verify_images=verify_images, source=ann_file)
        self._log_stats()

    def _kept_images(self, images: list[dict[str, Any]], paths: list[Path], skip: bool,
                     verify: bool, ann_file: Path) -> np.ndarray:
        """``bool [N]``: the images whose file exists (and decodes, with ``verify``); sets
        ``stats`` with the skipped counts."""
        self.stats = dict.fromkeys(
            ("images", "annotations", "crowd_excluded", "boxes_clipped", "boxes_dropped_empty",
             "images_without_boxes", "missing_images_skipped", "undecodable_images_skipped"), 0)
        kept = np.array(find_missing_files(paths, what=str(ann_file), skip=skip), bool)
        self.stats["missing_images_skipped"] = int((~kept).sum())
        if verify:
            for i in np.flatnonzero(kept):
                size_hw = (int(images[i]["height"]), int(images[i]["width"]))
                if not decodes(paths[i], size_hw, skip=skip):
                    kept[i] = False
                    self.stats["undecodable_images_skipped"] += 1
        return kept

    def _records(self, images: list[dict[str, Any]], paths: list[Path], kept: np.ndarray,
                 anns: _AnnotationArrays) -> RecordArrays:
        """Training boxes of the kept images: crowd left out, clipped, empty ones dropped; all
        images at once (a loop over 118k images would cost seconds)."""
        heights = np.array([int(image["height"]) for image in images], np.int64)
        widths = np.array([int(image["width"]) for image in images], np.int64)
        of_kept = kept[anns.image_index]
        objects = of_kept & ~anns.crowd
        image_index = anns.image_index[objects]
        clipped, keep, changed = clip_boxes_xyxy(
            anns.boxes_xyxy[objects], heights[image_index, None], widths[image_index, None])
        # record order = image order; boxes of an image keep their file order (stable sort)
        record_of = (np.cumsum(kept) - 1)[image_index[keep]]
        order = np.argsort(record_of, kind="stable")
        counts = np.bincount(record_of, minlength=int(kept.sum()))
        self.stats.update(
            images=int(kept.sum()), annotations=int(of_kept.sum()),
            crowd_excluded=int((of_kept & anns.crowd).sum()), boxes_clipped=int(changed.sum()),
            boxes_dropped_empty=int((~keep).sum()), images_without_boxes=int((counts == 0).sum()))
        return RecordArrays(
            image_ids=np.array([image["id"] for image in images], np.int64)[kept],
            heights=heights[kept], widths=widths[kept], box_counts=counts,
            boxes_xyxy=clipped[keep][order], labels=anns.labels[objects][keep][order],
            paths=[path for path, ok in zip(paths, kept, strict=True) if ok])
