"""The one place COCO ground truth is completed and turned into a pycocotools ``COCO``.

Used by ``detkit.data`` (every dataset's ``coco_gt``, and the COCO reader's annotation
completion) and by evaluation code that has no dataset (notebooks, tests). It lives in
``detkit.eval`` because the rules are evaluation rules (COCOeval reads id 0 as "unmatched",
uses ``area`` for size buckets and ``iscrowd`` for ignoring); ``detkit.data`` imports it, and
``detkit.eval`` never imports ``detkit.data``, so there is no cycle.
"""

from __future__ import annotations

from typing import Any

from pycocotools.coco import COCO

from detkit.eval._cocoapi import quiet


def _name(index: int, ann: dict[str, Any]) -> str:
    """``annotations[5] (id 12)``: how errors name an annotation."""
    return f"annotations[{index}] (id {ann['id']!r})" if "id" in ann else f"annotations[{index}]"


def check_annotation_ids(annotations: list[dict[str, Any]]) -> int:
    """Check the given annotation ids (missing ones are allowed) without copying anything.

    Returns:
        The largest given id (0 when none is given).

    Raises:
        ValueError: naming the annotation, for a repeated id or an id below 1.
    """
    given = [ann["id"] for ann in annotations if ann.get("id") is not None]
    if len(set(given)) == len(given) and all(i >= 1 for i in given):
        return max(given, default=0)
    used: set[int] = set()  # a repeat or a bad id: find and name the first
    for index, ann in enumerate(annotations):
        if ann.get("id") is None:
            continue
        if ann["id"] in used:
            raise ValueError(f"{_name(index, ann)} repeats an annotation id")
        if ann["id"] <= 0:
            raise ValueError(f"{_name(index, ann)}: annotation ids must be >= 1 (COCOeval "
                             "treats id 0 as 'no match')")
        used.add(ann["id"])
    return max(used, default=0)


def complete_annotations(annotations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``annotations`` with what COCOeval needs filled in.

    A missing ``id`` becomes the next one above the largest given id (ids start at 1:
    COCOeval uses 0 to mean "unmatched", so an annotation with id 0 could never be detected);
    a missing ``area`` becomes the box area ``w * h`` (COCO's own ``area`` is the mask area and
    decides the size bucket: keep it when the data has it); ``iscrowd`` becomes 0 or 1 (0 when
    missing); ``bbox`` values become floats. Nothing else changes; the inputs are not modified.

    Args:
        annotations: ``{"id"?, "image_id", "category_id", "bbox": [x, y, w, h], "area"?,
            "iscrowd"?, ...}`` in original image pixels.

    Raises:
        ValueError: naming the annotation, for a repeated id or an id below 1.
    """
    next_id = check_annotation_ids(annotations) + 1
    completed = []
    for ann in annotations:
        ann = dict(ann)
        if ann.get("id") is None:
            ann["id"], next_id = next_id, next_id + 1
        ann["bbox"] = [float(v) for v in ann["bbox"]]
        if "area" not in ann:
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        ann["iscrowd"] = int(bool(ann.get("iscrowd", 0)))
        completed.append(ann)
    return completed


def build_coco_gt(
    images: list[dict], annotations: list[dict], categories: list[dict],
    *, info: dict | None = None, licenses: list | None = None,
) -> COCO:
    """An in-memory pycocotools ``COCO`` ground truth (no annotation file needed).

    Args:
        images: ``{"id", "width", "height", "file_name"}`` per image.
        annotations: as for :func:`complete_annotations`, which completes copies of them.
        categories: ``{"id", "name"}`` per category; ids need not be contiguous.
        info, licenses: the annotation file's sections of those names, kept when given.

    Returns:
        A ``COCO`` object whose index is built (``createIndex`` run silently). The input dicts
        are copied, never modified.
    """
    coco = COCO()
    coco.dataset = {
        **({"info": dict(info)} if info is not None else {}),
        **({"licenses": list(licenses)} if licenses is not None else {}),
        "images": [dict(img) for img in images],
        "annotations": complete_annotations(annotations),
        "categories": [dict(cat) for cat in categories],
    }
    with quiet():
        coco.createIndex()
    return coco
