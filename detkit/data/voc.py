"""Pascal VOC-format detection dataset (one XML file per image).

Coordinates: VOC's ``xmin, ymin, xmax, ymax`` are 1-based inclusive pixel indices; like
detectron2 (``data/datasets/pascal_voc.py``) we subtract 1 from ``xmin``/``ymin`` to get
continuous 0-based coordinates, so a box covering the whole image is ``(0, 0, W, H)``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from detkit._validation import check_choice
from detkit.data.base import (
    DetectionDataset,
    ImageRecord,
    Transform,
    UnreadableImageError,
    clip_boxes_xyxy,
    decodes,
    find_missing_files,
)

logger = logging.getLogger(__name__)

# (annotations folder, images folder): the standard VOC layout, then the flat one.
_LAYOUTS = (("Annotations", "JPEGImages"), ("annotations", "images"))


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: class name, box ``(x1, y1, x2, y2)`` in continuous pixels, difficult."""

    name: str
    box_xyxy: tuple[float, float, float, float]
    difficult: bool


@dataclass(frozen=True)
class VocAnnotation:
    """One parsed XML file; ``width``/``height`` are 0 when the file does not give them."""

    xml_path: Path
    filename: str
    width: int
    height: int
    objects: list[VocObject]


def _text(element: ET.Element, tag: str) -> str | None:
    child = element.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _number(element: ET.Element, tag: str, xml_path: Path, where: str) -> float:
    text = _text(element, tag)
    try:
        value = float(text if text is not None else "missing")
    except ValueError:
        raise ValueError(f"{xml_path}: {where} has no numeric <{tag}> (found {text!r})") from None
    if not math.isfinite(value):
        raise ValueError(f"{xml_path}: {where} has a non-finite <{tag}> ({text!r})")
    return value


def _parse_object(element: ET.Element, index: int, xml_path: Path) -> VocObject:
    where = f"<object> #{index}"
    name = _text(element, "name")
    if not name:
        raise ValueError(f"{xml_path}: {where} has no <name>")
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise ValueError(f"{xml_path}: {where} ({name}) has no <bndbox>")
    xmin, ymin, xmax, ymax = (_number(bndbox, k, xml_path, where)
                              for k in ("xmin", "ymin", "xmax", "ymax"))
    difficult = _text(element, "difficult") or "0"  # missing -> not difficult
    if difficult not in ("0", "1"):
        raise ValueError(f"{xml_path}: {where} has <difficult> {difficult!r}, expected 0 or 1")
    return VocObject(name, (xmin - 1.0, ymin - 1.0, xmax, ymax), difficult == "1")


def parse_voc_xml(xml_path: Path) -> VocAnnotation:
    """Read one VOC XML file (filename, size, objects with name, bndbox and difficult).

    A missing ``<filename>`` defaults to ``<stem>.jpg``; a missing or zero ``<size>`` to 0 (the
    caller then reads the size from the image file).

    Raises:
        ValueError: naming the file, when it is not well-formed XML or an object lacks a name or
            numeric box coordinates.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        raise ValueError(f"{xml_path}: malformed XML ({error})") from None
    filename = _text(root, "filename") or f"{xml_path.stem}.jpg"
    size = root.find("size")
    width = height = 0
    if size is not None and _text(size, "width") and _text(size, "height"):
        width = int(_number(size, "width", xml_path, "<size>"))
        height = int(_number(size, "height", xml_path, "<size>"))
    objects = [_parse_object(o, i, xml_path) for i, o in enumerate(root.findall("object"))]
    return VocAnnotation(xml_path, filename, width, height, objects)


def _find_layout(root: Path) -> tuple[Path, Path]:
    for ann_name, image_name in _LAYOUTS:
        if (root / ann_name).is_dir() and (root / image_name).is_dir():
            return root / ann_name, root / image_name
    raise ValueError(
        f"{root}: not a VOC dataset folder: expected Annotations/ + JPEGImages/ (standard layout) "
        "or annotations/ + images/ (flat layout)"
    )


def _hash_fraction(stem: str) -> float:
    """A stable pseudo-random number in ``[0, 1)`` from a file stem (not Python's salted hash)."""
    return int.from_bytes(hashlib.sha1(stem.encode()).digest()[:8], "big") / 2.0**64


def ratio_split(stems: list[str], split_ratio: float) -> tuple[list[str], list[str]]:
    """Deterministic train/val split without split files.

    Stems are ordered by a SHA-1 hash of the stem (so neighbours like ``img-1``/``img-2`` are
    spread over both sides, and the result does not depend on file-system order) and the first
    ``round(split_ratio * n)`` go to train; when ``0 < split_ratio < 1`` and ``n >= 2`` each side
    gets at least one image. Both lists come back sorted by name.
    """
    if not 0.0 <= split_ratio <= 1.0:
        raise ValueError(f"split_ratio must be in [0, 1], got {split_ratio}")
    n = len(stems)
    n_train = round(split_ratio * n)
    if 0.0 < split_ratio < 1.0 and n >= 2:
        n_train = min(max(n_train, 1), n - 1)
    ordered = sorted(stems, key=lambda s: (_hash_fraction(s), s))
    return sorted(ordered[:n_train]), sorted(ordered[n_train:])


def _read_split_file(root: Path, split: str, all_stems: set[str], ann_dir: Path) -> list[str]:
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise ValueError(f"split file {split_file} does not exist (split={split!r})")
    stems = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    repeated = sorted(stem for stem, count in Counter(stems).items() if count > 1)
    if repeated:
        raise ValueError(f"{split_file}: image(s) listed more than once: {repeated[:5]}")
    unknown = [s for s in stems if s not in all_stems]
    if unknown:
        raise ValueError(f"{split_file}: {len(unknown)} listed image(s) have no annotation in "
                         f"{ann_dir}, e.g. {unknown[:5]}")
    return stems


class VocDetection(DetectionDataset):
    """Detection dataset in Pascal VOC XML format.

    Layouts (auto-detected): standard ``root/Annotations/*.xml`` + ``root/JPEGImages/`` (+
    ``root/ImageSets/Main/{split}.txt``), or flat ``root/annotations/*.xml`` + ``root/images/``.
    With ``split`` the split file lists the images; with ``split=None`` a deterministic hash split
    (:func:`ratio_split`) by ``split_ratio`` is taken and ``subset`` picks its side.

    Image ids: ``1 +`` the position of the XML stem among all XML files of the annotations folder
    sorted by name, so train and val of one root never share an id. Labels: ``class_names[i]`` is
    label ``i + 1``; ``coco_gt`` uses the labels as category ids (``label_to_category_id[l] = l``).

    Training targets leave out difficult objects, clip boxes to the image and drop boxes empty
    after clipping; images without objects are kept as negatives. ``coco_gt`` holds every object
    as read (difficult ones as ``iscrowd=1`` so COCO evaluation ignores them, as VOC does) with
    ``area`` = box area (VOC has no mask area). :meth:`voc_ground_truth` gives the same boxes
    with difficult flags for VOC AP. Boxes are in continuous pixels (see the module docstring).

    ``stats`` counts: ``images``, ``annotations`` (objects), ``difficult_excluded``,
    ``boxes_clipped``, ``boxes_dropped_empty``, ``images_without_boxes``,
    ``missing_images_skipped``, ``undecodable_images_skipped`` (updated at load time).

    Args:
        root: dataset folder.
        split: name of a split file in ``root/ImageSets/Main/``; None splits by ``split_ratio``.
        subset: ``"train"`` or ``"val"`` side of the ratio split (ignored with ``split``).
        split_ratio: fraction of images in the train side of the ratio split.
        class_names: class names in label order; None: the sorted set of names in ALL XML files
            of the folder (so both subsets agree).
        transforms: albumentations-style callable; None gives ``[0, 1]`` pixels.
        skip_bad_images, verify_images: as in :class:`~detkit.data.coco.CocoDetection`; an
            image whose size must be read from the file (no ``<size>``) and cannot be is
            skipped as undecodable with ``skip_bad_images``.

    Raises:
        ValueError: naming ``root`` when no layout matches; naming a missing split file; naming
            the XML file when it is malformed or has a class not in ``class_names``; missing
            image files without ``skip_bad_images``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        subset: Literal["train", "val"] = "train",
        split_ratio: float = 0.8,
        class_names: list[str] | None = None,
        transforms: Transform | None = None,
        skip_bad_images: bool = False,
        verify_images: bool = False,
    ) -> None:
        root = Path(root)
        ann_dir, image_dir = _find_layout(root)
        all_stems = sorted(p.stem for p in ann_dir.glob("*.xml"))
        if not all_stems:
            raise ValueError(f"{ann_dir}: no *.xml annotation files")
        id_of = {stem: i for i, stem in enumerate(all_stems, start=1)}
        stems = self._select(root, split, subset, split_ratio, all_stems, ann_dir)
        parsed = {s: parse_voc_xml(ann_dir / f"{s}.xml") for s in stems}
        if class_names is None:
            others = (parse_voc_xml(ann_dir / f"{s}.xml") for s in all_stems if s not in parsed)
            names = {o.name for a in [*parsed.values(), *others] for o in a.objects}
            class_names = sorted(names)
        self._set_classes(class_names, parsed.values())

        paths = [image_dir / parsed[s].filename for s in stems]
        exists = find_missing_files(paths, what=str(ann_dir), skip=skip_bad_images)
        self.stats = dict.fromkeys(
            ("images", "annotations", "difficult_excluded", "boxes_clipped", "boxes_dropped_empty",
             "images_without_boxes", "missing_images_skipped", "undecodable_images_skipped"), 0)
        self.stats["missing_images_skipped"] = exists.count(False)
        self._annotations: dict[int, VocAnnotation] = {}
        records = []
        for stem, path, ok in zip(stems, paths, exists, strict=True):
            if not ok:
                continue
            annotation = self._usable(parsed[stem], path, skip_bad_images, verify_images)
            if annotation is None:
                self.stats["undecodable_images_skipped"] += 1
                continue
            self._annotations[id_of[stem]] = annotation
            records.append(self._record(id_of[stem], path, annotation))
        self._coco_gt_dataset = self._coco_dataset(records)
        self._init_records(records, transforms, skip_bad_images=skip_bad_images,
                           verify_images=verify_images, source=ann_dir)
        self._log_stats()

    @staticmethod
    def _select(root: Path, split: str | None, subset: str, split_ratio: float,
                all_stems: list[str], ann_dir: Path) -> list[str]:
        if split is not None:
            return _read_split_file(root, split, set(all_stems), ann_dir)
        check_choice("subset", subset, ("train", "val"))
        train, val = ratio_split(all_stems, split_ratio)
        return train if subset == "train" else val

    def _set_classes(self, class_names: list[str], annotations: Iterable[VocAnnotation]) -> None:
        if not class_names or len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be non-empty and unique, got {class_names!r}")
        self.category_names = list(class_names)
        self.label_to_category_id = [-1, *range(1, len(class_names) + 1)]
        self._label_of = {name: label for label, name in enumerate(class_names, start=1)}
        for annotation in annotations:
            for obj in annotation.objects:
                if obj.name not in self._label_of:
                    raise ValueError(f"{annotation.xml_path}: class {obj.name!r} is not in "
                                     f"class_names {self.category_names}")

    @classmethod
    def _usable(cls, annotation: VocAnnotation, path: Path, skip: bool, verify: bool
                ) -> VocAnnotation | None:
        """The annotation with its size known, or None when the image is left out (``skip``
        and its size cannot be read, or ``verify`` and it does not decode)."""
        try:
            annotation = cls._with_size(annotation, path)
        except UnreadableImageError as error:
            if not skip:
                raise
            logger.warning("%s; left out of this dataset", error)
            return None
        if verify and not decodes(path, (annotation.height, annotation.width), skip=skip):
            return None
        return annotation

    @staticmethod
    def _with_size(annotation: VocAnnotation, path: Path) -> VocAnnotation:
        """Fill a missing ``<size>`` from the image file's header (no decoding)."""
        if annotation.width > 0 and annotation.height > 0:
            return annotation
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError as error:
            raise UnreadableImageError(f"cannot read the size of image {path} (its XML "
                                       f"{annotation.xml_path} has none): {error}") from error
        return VocAnnotation(annotation.xml_path, annotation.filename, width, height,
                             annotation.objects)

    def _record(self, image_id: int, path: Path, annotation: VocAnnotation) -> ImageRecord:
        """Training boxes of one image: difficult left out, clipped, empty ones dropped."""
        objects = [o for o in annotation.objects if not o.difficult]
        boxes = np.array([o.box_xyxy for o in objects], np.float32).reshape(-1, 4)
        labels = np.array([self._label_of[o.name] for o in objects], np.int64)
        clipped, keep, changed = clip_boxes_xyxy(boxes, annotation.height, annotation.width)
        self.stats["images"] += 1
        self.stats["annotations"] += len(annotation.objects)
        self.stats["difficult_excluded"] += len(annotation.objects) - len(objects)
        self.stats["boxes_clipped"] += int(changed.sum())
        self.stats["boxes_dropped_empty"] += int((~keep).sum())
        self.stats["images_without_boxes"] += int(not keep.any())
        return ImageRecord(image_id, path, annotation.height, annotation.width,
                           clipped[keep], labels[keep])

    def _coco_dataset(self, records: list[ImageRecord]) -> dict[str, object]:
        images, anns = [], []
        for record in records:
            image_id, annotation = record.image_id, self._annotations[record.image_id]
            images.append({"id": image_id, "file_name": record.path.name,
                           "width": annotation.width, "height": annotation.height})
            for obj in annotation.objects:
                x1, y1, x2, y2 = obj.box_xyxy
                anns.append({"id": len(anns) + 1, "image_id": image_id,
                             "category_id": self._label_of[obj.name],
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                             "iscrowd": int(obj.difficult)})
        categories = [{"id": label, "name": name}
                      for label, name in enumerate(self.category_names, start=1)]
        return {"images": images, "annotations": anns, "categories": categories}

    def voc_ground_truth(self) -> dict[int, dict[str, Tensor]]:
        """Every object per image for VOC AP, difficult ones included and flagged.

        Returns:
            ``{image_id: {"boxes": Tensor[M, 4] float32 xyxy in original continuous pixels,
            "labels": Tensor[M] int64 in 1..K, "difficult": Tensor[M] bool}}`` for every image
            of the dataset (M may be 0).
        """
        result = {}
        for image_id, annotation in self._annotations.items():
            objects = annotation.objects
            result[image_id] = {
                "boxes": torch.tensor([o.box_xyxy for o in objects],
                                      dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([self._label_of[o.name] for o in objects],
                                       dtype=torch.int64),
                "difficult": torch.tensor([o.difficult for o in objects], dtype=torch.bool),
            }
        return result
