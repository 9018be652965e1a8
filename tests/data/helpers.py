"""Tiny COCO and VOC data sets written into a test's tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_image(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A noise PNG (lossless, so pixel comparisons are exact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_coco(
    tmp_path: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]],
    *,
    write_files: bool = True,
    name: str = "ann.json",
) -> tuple[Path, Path]:
    """Write ``images/*.png`` (sizes from the entries) and a COCO JSON; returns both paths."""
    images_dir = tmp_path / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    if write_files:
        for i, image in enumerate(images):
            write_image(images_dir / image["file_name"], image["height"], image["width"], seed=i)
    ann_file = tmp_path / name
    data = {"images": images, "annotations": annotations, "categories": categories}
    ann_file.write_text(json.dumps(data))
    return images_dir, ann_file


def small_coco(tmp_path: Path) -> tuple[Path, Path]:
    """Four images, categories 11/3/7 (listed out of order), crowd, clipped, dropped, empty.

    img 1 (h 40, w 60): ann 101 cat 11 inside; ann 102 cat 3 crowd.
    img 2 (h 30, w 40): ann 201 cat 7 sticking out left (clipped), ann 202 outside the image
    (dropped), ann 203 with w = 0 (dropped).
    img 3 (h 20, w 20): no annotations (negative).  img 4 (h 50, w 30): ann 401 cat 3 with an
    explicit area.
    """
    images = [
        {"id": 1, "file_name": "a.png", "height": 40, "width": 60},
        {"id": 2, "file_name": "b.png", "height": 30, "width": 40},
        {"id": 3, "file_name": "c.png", "height": 20, "width": 20},
        {"id": 4, "file_name": "d.png", "height": 50, "width": 30},
    ]
    annotations = [
        {"id": 101, "image_id": 1, "category_id": 11, "bbox": [5, 6, 20, 10], "iscrowd": 0},
        {"id": 102, "image_id": 1, "category_id": 3, "bbox": [30, 10, 20, 20], "iscrowd": 1},
        {"id": 201, "image_id": 2, "category_id": 7, "bbox": [-5, 10, 20, 20]},
        {"id": 202, "image_id": 2, "category_id": 7, "bbox": [50, 5, 10, 10]},
        {"id": 203, "image_id": 2, "category_id": 3, "bbox": [10, 5, 0, 10]},
        {"id": 401, "image_id": 4, "category_id": 3, "bbox": [2, 3, 10, 20], "area": 123.5},
    ]
    categories = [
        {"id": 11, "name": "eleven"},
        {"id": 3, "name": "three"},
        {"id": 7, "name": "seven"},
    ]
    return write_coco(tmp_path, images, annotations, categories)


def voc_xml(
    filename: str | None,
    size: tuple[int, int] | None,
    objects: list[dict[str, Any]],
) -> str:
    """VOC XML text. ``size`` is (h, w); each object has name, box (xmin, ymin, xmax, ymax) and
    optionally difficult (left out of the XML when absent)."""
    parts = ["<annotation>", "<folder>x</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[1]}</width><height>{size[0]}</height>"
                     "<depth>3</depth></size>")
    for obj in objects:
        xmin, ymin, xmax, ymax = obj["box"]
        difficult = obj.get("difficult")
        parts.append("<object>")
        parts.append(f"<name>{obj['name']}</name><pose>Unspecified</pose>")
        if difficult is not None:
            parts.append(f"<difficult>{difficult}</difficult>")
        parts.append(f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
                     f"<ymax>{ymax}</ymax></bndbox>")
        parts.append("</object>")
    parts.append("</annotation>")
    return "\n".join(parts)


def write_voc_image(
    root: Path,
    stem: str,
    size: tuple[int, int],
    objects: list[dict[str, Any]],
    *,
    flat: bool = False,
    seed: int = 0,
    xml_size: bool = True,
) -> None:
    """One image + XML in the standard (``Annotations``/``JPEGImages``) or flat layout."""
    ann_dir = root / ("annotations" if flat else "Annotations")
    image_dir = root / ("images" if flat else "JPEGImages")
    ann_dir.mkdir(parents=True, exist_ok=True)
    write_image(image_dir / f"{stem}.png", *size, seed=seed)
    text = voc_xml(f"{stem}.png", size if xml_size else None, objects)
    (ann_dir / f"{stem}.xml").write_text(text)


def write_split(root: Path, split: str, stems: list[str]) -> None:
    split_dir = root / "ImageSets" / "Main"
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))


def flat_voc(root: Path, n: int, names: tuple[str, ...] = ("dog", "cat")) -> list[str]:
    """``n`` images ``img-0..`` in the flat layout, one or two objects each; returns the stems."""
    stems = []
    for i in range(n):
        stem = f"img-{i}"
        objects = [{"name": names[i % len(names)], "box": (3, 4, 20, 18), "difficult": 0}]
        if i % 3 == 0:
            objects.append({"name": names[0], "box": (10, 10, 30, 25)})
        write_voc_image(root, stem, (28, 36), objects, flat=True, seed=i)
        stems.append(stem)
    return stems
