"""Scenes: placing objects and distractors while keeping every object visible enough and in its
size bucket, and the annotations of what stays visible."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from detkit.data.synthetic.painting import background, composite
from detkit.data.synthetic.rendering import render_sized
from detkit.data.synthetic.shapes import blob_fills, category_fills, random_shape
from detkit.data.synthetic.spec import (
    BUCKET_EDGES,
    CATEGORY_NAMES,
    SIZE_BUCKETS,
    SPLITS,
    Deformation,
    SceneSpec,
    SyntheticSpec,
    size_bucket,
)

# Distractor blobs are always deformed this much (the hard set's ranges), whatever the objects'
# deformation: the deformation factor changes the objects only, not the clutter.
BLOB_DEFORMATION = Deformation(max_aspect=1.6, max_shear=0.35, elastic_strength=0.15)


def image_rng(spec: SyntheticSpec, split: str, index: int) -> np.random.Generator:
    """Image ``index`` of ``split``'s own generator: no dependence on other images or splits."""
    return np.random.default_rng(np.random.SeedSequence([spec.seed, SPLITS.index(split), index]))


@dataclass
class _Object:
    """A placed object: ``visible`` ``bool [S, S]`` shrinks as occluders are added."""

    category_id: int
    bucket: str
    full_area: int
    visible: np.ndarray


def _paste(crop: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """``crop`` ``[h, w]`` pasted at ``(top, left)`` into a zero ``float32 [size, size]``
    (clipped at the borders)."""
    full = np.zeros((size, size), np.float32)
    h, w = crop.shape
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, size), min(left + w, size)
    if y1 > y0 and x1 > x0:
        full[y0:y1, x0:x1] = crop[y0 - top:y1 - top, x0 - left:x1 - left]
    return full


def _random_offset(crop: np.ndarray, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Where the crop's top-left goes: its mask box inside the image, or sticking out by up to
    15% of its side (more where it is larger than the image)."""
    rows, cols = np.nonzero(crop >= 0.5)
    offsets = []
    for low, high in ((rows.min(), rows.max() + 1), (cols.min(), cols.max() + 1)):
        extent, slack = high - low, 0.15 * (high - low)
        start = rng.uniform(min(0, size - extent) - slack, max(0, size - extent) + slack)
        offsets.append(int(round(start)) - int(low))
    return offsets[0], offsets[1]


def _fits(mask: np.ndarray, full_area: int, bucket: str, scene: SceneSpec) -> bool:
    area = int(mask.sum())
    return area >= scene.min_visibility * full_area and area > 0 and size_bucket(area) == bucket


def _occlusion_ok(objects: list[_Object], cover: np.ndarray, scene: SceneSpec) -> bool:
    """Whether every object keeps ``min_visibility`` and its bucket under the mask ``cover``."""
    return all(_fits(obj.visible & ~cover, obj.full_area, obj.bucket, scene) for obj in objects)


def _place(
    crop: np.ndarray, objects: list[_Object], scene: SceneSpec, size: int,
    rng: np.random.Generator,
    bucket: str | None = None, tries: int = 12,
) -> np.ndarray | None:
    """Find a position for ``crop`` that the placed ``objects`` tolerate as an occluder (and, for
    an object of ``bucket``, where it is itself visible enough); full-image alpha or None."""
    full_area = int((crop >= 0.5).sum())
    if full_area == 0:
        return None
    for _ in range(tries):
        alpha = _paste(crop, *_random_offset(crop, size, rng), size)
        mask = alpha >= 0.5
        if bucket is not None and not _fits(mask, full_area, bucket, scene):
            continue
        if _occlusion_ok(objects, mask, scene):
            return alpha
    return None


def _stroke_alpha(size: int, rng: np.random.Generator) -> np.ndarray:
    """A line, polyline or thin partial arc as full-image coverage ``float32 [size, size]``."""
    canvas = np.zeros((size, size), np.uint8)
    thickness = int(rng.integers(1, 6))
    if rng.random() < 0.5:
        points = rng.uniform(-0.1, 1.1, (int(rng.integers(2, 5)), 2)) * size
        cv2.polylines(canvas, [points.astype(np.int32)], False, 255, thickness, cv2.LINE_AA)
    else:
        center = tuple(int(v) for v in rng.uniform(0, size, 2))
        axes = tuple(int(v) for v in rng.uniform(6, size / 4, 2))
        start = rng.uniform(0, 360)
        cv2.ellipse(canvas, center, axes, rng.uniform(0, 180), start,
                    start + rng.uniform(45, 240), 255, thickness, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255


def _distractor_alpha(
    objects: list[_Object], scene: SceneSpec, size: int, rng: np.random.Generator
) -> np.ndarray | None:
    """A blob (half the time) or a stroke that the placed ``objects`` tolerate, or None."""
    if rng.random() < 0.5:
        shape = random_shape(blob_fills(rng), BLOB_DEFORMATION, rng)
        side = rng.uniform(8, 0.3 * size)
        return _place(render_sized(shape, side, (0, np.inf)), objects, scene, size, rng)
    for _ in range(4):
        alpha = _stroke_alpha(size, rng)
        if _occlusion_ok(objects, alpha >= 0.5, scene):
            return alpha
    return None


def _sample_objects(scene: SceneSpec, rng: np.random.Generator) -> list[tuple[int, str, float]]:
    """``(category_id, bucket, sqrt-area side)`` for each object, largest first (painter's
    order: large objects at the back, so small ones occlude them and not the reverse)."""
    bounds = scene.size_bounds()
    buckets = list(bounds)
    drawn = []
    for _ in range(int(rng.integers(1, scene.max_objects + 1))):
        bucket = buckets[int(rng.integers(len(buckets)))]
        side = rng.uniform(*bounds[bucket])
        drawn.append((int(rng.integers(len(CATEGORY_NAMES))) + 1, bucket, float(side)))
    return sorted(drawn, key=lambda item: -item[2])


def _bucket_bounds(bucket: str) -> tuple[float, float]:
    edges = (0.0, *BUCKET_EDGES, np.inf)
    i = SIZE_BUCKETS.index(bucket)
    return edges[i], edges[i + 1]


def _occlude(
    image: np.ndarray, objects: list[_Object], alpha: np.ndarray, rng: np.random.Generator
) -> None:
    """Paint the layer ``alpha`` ``[S, S]`` into ``image`` and hide what it covers."""
    mask = alpha >= 0.5
    for obj in objects:
        obj.visible &= ~mask
    composite(image, alpha, rng)


def _add_objects(
    image: np.ndarray, scene: SceneSpec, rng: np.random.Generator
) -> list[_Object]:
    """Draw the objects (each a possible occluder of the earlier ones) into ``image``."""
    objects: list[_Object] = []
    for category_id, bucket, side in _sample_objects(scene, rng):
        fills = category_fills(CATEGORY_NAMES[category_id - 1], rng)
        crop = render_sized(random_shape(fills, scene.deformation, rng), side,
                            _bucket_bounds(bucket))
        alpha = _place(crop, objects, scene, len(image), rng, bucket=bucket)
        if alpha is not None:
            _occlude(image, objects, alpha, rng)
            objects.append(_Object(category_id, bucket, int((crop >= 0.5).sum()), alpha >= 0.5))
    return objects


def _annotations(objects: list[_Object]) -> list[dict[str, Any]]:
    """COCO annotations (without ``id``/``image_id``) from the visible masks."""
    annotations = []
    for obj in objects:
        rows, cols = np.nonzero(obj.visible)
        area = len(rows)
        if area == 0:  # cannot happen: occluders that hide this much are rejected
            continue
        x, y = int(cols.min()), int(rows.min())
        annotations.append({
            "category_id": obj.category_id,
            "bbox": [x, y, int(cols.max()) + 1 - x, int(rows.max()) + 1 - y],
            "area": area,
            "iscrowd": 0,
            "visibility": round(area / obj.full_area, 3),
        })
    return annotations


def render_image(
    spec: SyntheticSpec, split: str, index: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Image ``index`` of ``split``, the same every time.

    Returns:
        ``(image uint8 [S, S, 3] RGB, annotations)``: COCO annotation dicts (``category_id``,
        ``bbox`` ``[x, y, w, h]`` in image pixels, ``area``, ``iscrowd``, ``visibility``) without
        ``id`` and ``image_id``.
    """
    rng = image_rng(spec, split, index)
    scene, size = spec.scene, spec.image_size
    image = background(size, scene.background_contrast, rng)
    num_distractors = int(rng.integers(0, scene.max_distractors + 1))
    num_under = int(rng.integers(0, num_distractors + 1))
    for _ in range(num_under):
        alpha = _distractor_alpha([], scene, size, rng)
        if alpha is not None:
            _occlude(image, [], alpha, rng)
    objects = _add_objects(image, scene, rng)
    for _ in range(num_distractors - num_under):
        alpha = _distractor_alpha(objects, scene, size, rng)
        if alpha is not None:
            _occlude(image, objects, alpha, rng)
    image += rng.normal(0, rng.uniform(1, 6), image.shape).astype(np.float32)  # sensor noise
    return np.round(image.clip(0, 255)).astype(np.uint8), _annotations(objects)
