"""The built-in synthetic detection set: deformed shapes on cluttered backgrounds, COCO format.

It is made to separate RoI feature extractors:

* **Sizes** span COCO's three buckets in about equal numbers: the bucket (small ``area < 32²``,
  medium ``32² <= area < 96²``, large ``area >= 96²``) is drawn first, then the object's
  square-root area uniformly inside it (``min_object_size..32``, ``32..96``,
  ``96..max_object_size`` px), and the final *visible* area is checked to stay in that bucket.
  Single-level pooling has to serve 10 px and 180 px objects alike; FPN level mapping need not.
* **Non-rigid deformation**: every instance gets its own aspect change, shear, rotation and a
  smooth elastic warp (a random displacement field on a coarse grid, cubic-upsampled), so the
  discriminative detail (a hole, a bite, a point) sits somewhere else in every box: a fixed
  pooling grid is at a disadvantage against deformable pooling.
* **Classes differ in shape detail, not colour** (colours are random per object):
  ``disk``, ``ring`` (a disk with a hole), ``crescent`` (a disk with a bite), ``triangle``,
  ``star`` (five points) and ``cross`` (a plus sign, at any rotation). Category ids are 1..6 in
  :data:`CATEGORY_NAMES` order.
* **Clutter**: textured backgrounds (noise, gradients, stripes, checks, blurred colour noise),
  distractors of no class (irregular blobs, lines, thin partial arcs) under and over the
  objects, and partial occlusion of objects by later objects and distractors (objects are
  drawn largest first). An occluder is only kept where every object it covers stays at least
  ``min_visibility`` visible and in its size bucket, so no object needs to be dropped.

Annotations come from the rendered masks (a pixel belongs to an object where its coverage is
>= 0.5): ``bbox`` is the tight ``[x, y, w, h]`` box of the *visible* pixels in image pixels
(pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``), ``area`` is the visible pixel count
(COCO semantics: the segmentation area, which COCO's size buckets use - not the box area),
``iscrowd`` is 0, and ``visibility`` (extra key) is the visible fraction of the full mask.
Image ids are unique across splits (``split_index * 1_000_000 + index + 1``).

Everything is deterministic by ``spec.seed``: each image draws from its own
``numpy.random.Generator`` seeded by ``(seed, split, index)``, so an image does not depend on the
order of generation nor on the other splits' sizes.

The default spec (seed 0; 1200/200/200 images of 256 px) gives 5525 objects (3.5 per image, no
image without objects): small 34%, medium 34%, large 32% overall and in every split (train
1431/1399/1329), 640..735 objects per class in train; about 30 s on one CPU core, 34 MB of JPEGs
(``python tools/make_dataset.py`` prints these statistics).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

CATEGORY_NAMES = ("disk", "ring", "crescent", "triangle", "star", "cross")
SPLITS = ("train", "val", "test")
SIZE_BUCKETS = ("small", "medium", "large")
# COCO's size-bucket boundaries on sqrt(area), in pixels (pycocotools' areaRng: 32², 96²).
BUCKET_EDGES = (32.0, 96.0)
# Bump when the generator changes what a spec produces, so old sets are not reused silently.
FORMAT_VERSION = 1
SPEC_FILE = "spec.json"


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Every field changes the images; ``spec.json`` records them all.

    COCO's size buckets are absolute pixel areas: the even balance holds at ``image_size`` 256
    and above; in much smaller images large objects stop fitting and small ones dominate.

    Args:
        seed: base seed (>= 0) of every image's generator.
        image_size: side of the square images in pixels.
        train_images, val_images, test_images: images per split.
        max_objects: objects per image are drawn uniformly from ``1..max_objects`` (fewer remain
            when a placement fails; an image without objects is a negative).
        min_object_size, max_object_size: sqrt(area) range in pixels that the small and large
            buckets are drawn from (the medium bucket is COCO's 32..96).
        max_distractors: distractors (blobs, lines, arcs) per image, uniform in ``0..max``.
        max_aspect: aspect change factor drawn log-uniformly from ``[1/max, max]``.
        max_shear: shear factor drawn uniformly from ``[-max, max]``.
        elastic_strength: largest elastic displacement at a grid node, as a fraction of the
            shape's radius (0 turns the warp off).
        min_visibility: an occluder is kept only where every object stays this visible.
        jpeg_quality: JPEG quality of the written images (1..95).
    """

    seed: int = 0
    image_size: int = 256
    train_images: int = 1200
    val_images: int = 200
    test_images: int = 200
    max_objects: int = 6
    min_object_size: float = 10.0
    max_object_size: float = 180.0
    max_distractors: int = 6
    max_aspect: float = 1.6
    max_shear: float = 0.35
    elastic_strength: float = 0.15
    min_visibility: float = 0.4
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        problems = []
        if self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        if not 64 <= self.image_size <= 4096:
            problems.append(f"image_size must be in 64..4096, got {self.image_size}")
        counts = (self.train_images, self.val_images, self.test_images)
        if min(counts) < 0 or max(counts) >= 1_000_000:
            problems.append(f"images per split must be in 0..999999, got {counts}")
        if self.max_objects < 1 or self.max_distractors < 0:
            problems.append("need max_objects >= 1 and max_distractors >= 0")
        if not 1 <= self.min_object_size < BUCKET_EDGES[0] < BUCKET_EDGES[1] < self.max_object_size:
            problems.append(f"need 1 <= min_object_size < 32 and max_object_size > 96, got "
                            f"{self.min_object_size}, {self.max_object_size}")
        if self.max_aspect < 1 or self.max_shear < 0 or self.elastic_strength < 0:
            problems.append("need max_aspect >= 1, max_shear >= 0 and elastic_strength >= 0")
        if not 0 < self.min_visibility <= 1 or not 1 <= self.jpeg_quality <= 95:
            problems.append("need 0 < min_visibility <= 1 and 1 <= jpeg_quality <= 95")
        if problems:
            raise ValueError("invalid SyntheticSpec: " + "; ".join(problems))

    def num_images(self, split: str) -> int:
        return {"train": self.train_images, "val": self.val_images,
                "test": self.test_images}[split]


def size_bucket(area: float) -> str:
    """COCO's size bucket (``"small"``, ``"medium"``, ``"large"``) of an annotation area."""
    side = float(np.sqrt(area))
    return SIZE_BUCKETS[int(side >= BUCKET_EDGES[0]) + int(side >= BUCKET_EDGES[1])]


def image_id(split: str, index: int) -> int:
    """The COCO image id of image ``index`` of ``split``: unique across splits."""
    return SPLITS.index(split) * 1_000_000 + index + 1


def _image_rng(spec: SyntheticSpec, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([spec.seed, SPLITS.index(split), index]))


# ---------------------------------------------------------------------------------------------
# Shapes: polygons in a unit frame (radius about 1, centred at 0), filled in order with 1 or 0.

Fills = list[tuple[np.ndarray, int]]
"""Polygons ``float [N, 2]`` (x, y) with the value (1 adds, 0 cuts) they are filled with."""


def _circle(radius: float, center: tuple[float, float] = (0.0, 0.0), n: int = 64) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], 1)


def _star_polygon(points: int, inner: float, radius_jitter: np.ndarray) -> np.ndarray:
    """Alternating outer (1) and ``inner`` radii, each times its ``radius_jitter [2 * points]``."""
    angles = np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner) * radius_jitter
    return np.stack([radii * np.cos(angles), -radii * np.sin(angles)], 1)


def _cross_polygon(half_width: float) -> np.ndarray:
    w = half_width
    return np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1],
                     [-w, w], [-1, w], [-1, -w], [-w, -w]], np.float64)


def _category_fills(category: str, rng: np.random.Generator) -> Fills:
    """The canonical shape of one instance of ``category`` (its own proportions)."""
    if category == "disk":
        return [(_circle(1.0), 1)]
    if category == "ring":
        return [(_circle(1.0), 1), (_circle(rng.uniform(0.45, 0.62)), 0)]
    if category == "crescent":
        # offset + radius > 1: the bite cuts through the rim, leaving two horns
        offset = rng.uniform(0.4, 0.55)
        return [(_circle(1.0), 1), (_circle(rng.uniform(0.72, 0.85), (offset, 0.0)), 0)]
    if category == "triangle":
        angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.15, 0.15, 3)
        radii = rng.uniform(0.9, 1.1, 3)
        return [(np.stack([radii * np.cos(angles), -radii * np.sin(angles)], 1), 1)]
    if category == "star":
        return [(_star_polygon(5, rng.uniform(0.38, 0.5), rng.uniform(0.9, 1.1, 10)), 1)]
    if category == "cross":
        return [(_cross_polygon(rng.uniform(0.22, 0.34)), 1)]
    raise ValueError(f"unknown category {category!r}, expected one of {CATEGORY_NAMES}")


def _solidity(polygon: np.ndarray) -> float:
    """Area over convex-hull area of a polygon ``[N, 2]``: 1 for convex shapes."""
    points = polygon.astype(np.float32)
    return cv2.contourArea(points) / max(cv2.contourArea(cv2.convexHull(points)), 1e-9)


def _blob_fills(rng: np.random.Generator, tries: int = 10) -> Fills:
    """An irregular blob (a distractor): a radius with random harmonics 2..7 around a circle,
    lumpy enough (solidity < 0.9) not to pass for a warped disk."""
    angles = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    for _ in range(tries):
        radius = np.ones_like(angles)
        for harmonic in range(2, 8):
            radius += rng.uniform(0, 0.4 / np.sqrt(harmonic)) * np.cos(
                harmonic * angles + rng.uniform(0, 2 * np.pi))
        radius = radius.clip(0.25, None)
        polygon = np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)
        if _solidity(polygon) < 0.9:
            break
    return [(polygon, 1)]


@dataclass(frozen=True)
class _Shape:
    """One instance before scaling.

    Attributes:
        fills: the canonical polygons (unit frame).
        linear: ``[2, 2]`` rotation @ shear @ aspect, determinant 1 (area preserving).
        warp: ``float32 [G, G, 2]`` elastic displacements (dx, dy) at a grid over the shape, in
            unit-frame lengths.
    """

    fills: Fills
    linear: np.ndarray
    warp: np.ndarray


def _random_linear(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """Rotation @ shear @ aspect change, a ``[2, 2]`` matrix of determinant 1."""
    aspect = np.exp(rng.uniform(-1, 1) * np.log(spec.max_aspect))
    scale = np.diag([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    shear = np.array([[1.0, rng.uniform(-spec.max_shear, spec.max_shear)], [0.0, 1.0]])
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return rotation @ shear @ scale


def _random_shape(fills: Fills, spec: SyntheticSpec, rng: np.random.Generator) -> _Shape:
    grid = int(rng.integers(3, 6))
    warp = rng.uniform(-1, 1, (grid, grid, 2)) * spec.elastic_strength
    return _Shape(fills, _random_linear(spec, rng), warp.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Rendering: a shape at a scale -> a soft coverage mask ("alpha") in a local crop.

_SHIFT = 4  # cv2.fillPoly fixed-point bits: polygon vertices at 1/16 pixel


def _fill_polygons(canvas: np.ndarray, fills: Fills, origin: np.ndarray, scale: float) -> None:
    """Fill ``fills`` (unit frame) into ``canvas`` at ``scale`` px per unit, unit 0 at origin."""
    for polygon, value in fills:
        points = np.round((polygon * scale - origin) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(canvas, [points], value, lineType=cv2.LINE_8, shift=_SHIFT)


def _unit_area(shape: _Shape) -> float:
    """Area of the (unwarped) shape in unit-frame units² (the linear part keeps areas)."""
    scale = 48.0  # px per unit; the 256 px canvas holds radii up to 2.6 (blobs reach about 2)
    canvas = np.zeros((256, 256), np.uint8)
    _fill_polygons(canvas, shape.fills, np.array([-128.0, -128.0]), scale)
    return float(canvas.sum()) / scale**2


def _elastic_warp(canvas: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """Resample ``canvas`` ``[H, W]`` along a smooth field cubic-upsampled from ``[G, G, 2]``
    pixel displacements: output ``(x, y)`` reads input ``(x + dx, y + dy)``."""
    height, width = canvas.shape
    field = cv2.resize(displacement, (width, height), interpolation=cv2.INTER_CUBIC)
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    return cv2.remap(canvas, grid_x + field[..., 0], grid_y + field[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _render(shape: _Shape, scale: float) -> np.ndarray:
    """The shape at ``scale`` px per unit as coverage ``float32 [h, w]`` in ``[0, 1]``.

    Drawn binary at ``ss`` times the resolution, warped there, then area-averaged down, so
    edges are anti-aliased. The crop holds the shape with a margin for the warp.
    """
    supersample = 4 if scale < 16 else 3 if scale < 48 else 2
    polygons = [(polygon @ shape.linear.T, value) for polygon, value in shape.fills]
    points = np.concatenate([p for p, _ in polygons]) * scale
    margin = 1.5 * float(np.abs(shape.warp).max(initial=0)) * scale + 2
    low = np.floor(points.min(0) - margin)
    size = (np.ceil(points.max(0) + margin) - low).astype(int)
    canvas = np.zeros((size[1] * supersample, size[0] * supersample), np.uint8)
    _fill_polygons(canvas, polygons, low * supersample, scale * supersample)
    displacement = (shape.warp * (scale * supersample)).astype(np.float32)
    canvas = _elastic_warp(canvas.astype(np.float32), displacement)
    return cv2.resize(canvas, (int(size[0]), int(size[1])), interpolation=cv2.INTER_AREA)


def _render_sized(shape: _Shape, side: float, bounds: tuple[float, float]) -> np.ndarray:
    """Render so that sqrt(mask area) is about ``side`` and inside ``bounds`` (one correction:
    the elastic warp changes the area a little)."""
    scale = side / np.sqrt(_unit_area(shape))
    alpha = _render(shape, scale)
    measured = np.sqrt(max(float((alpha >= 0.5).sum()), 1.0))
    if not bounds[0] <= measured < bounds[1]:
        alpha = _render(shape, scale * side / measured)
    return alpha


# ---------------------------------------------------------------------------------------------
# Backgrounds and compositing. Images are float32 [S, S, 3] RGB in 0..255 until the end.


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A textured background ``float32 [size, size, 3]``: two nearby colours mixed by a pattern."""
    color_a = rng.uniform(0, 255, 3)
    color_b = (color_a + rng.normal(0, 55, 3)).clip(0, 255)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    along = xs * np.cos(angle) + ys * np.sin(angle)
    across = -xs * np.sin(angle) + ys * np.cos(angle)
    period = rng.uniform(6, 40)
    kind = rng.choice(["noise", "gradient", "stripes", "checks", "blurred_noise"])
    if kind == "noise":
        mix = rng.normal(0.5, rng.uniform(0.05, 0.2), (size, size))
    elif kind == "gradient":
        mix = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif kind == "stripes":
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * along / period)
        mix = mix if rng.random() < 0.5 else np.round(mix)
    elif kind == "checks":
        mix = (np.floor(along / period) + np.floor(across / period)) % 2
    else:
        grid = int(rng.integers(3, 13))
        coarse = rng.uniform(0, 1, (grid, grid, 3)).astype(np.float32)
        mix = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    mix = np.asarray(mix, np.float32).reshape(size, size, -1)
    return (color_a + mix * (color_b - color_a)).astype(np.float32)


def _pick_color(under: np.ndarray, rng: np.random.Generator, tries: int = 12) -> np.ndarray:
    """A random colour that stands out from the pixels ``float32 [N, 3]`` it will cover: at
    RGB distance >= 80 from three quarters of them (the best of ``tries`` if none is), so an
    object on a patchwork of other objects still shows its outline."""
    if len(under) > 1024:  # a fixed-stride subsample: enough for a quantile, and deterministic
        under = under[:: len(under) // 1024]
    best, best_distance = rng.uniform(0, 255, 3), -1.0
    for _ in range(tries):
        color = rng.uniform(0, 255, 3)
        distances = np.linalg.norm(under - color, axis=1) if len(under) else np.full(1, 255.0)
        distance = float(np.quantile(distances, 0.25))
        if distance >= 80:
            return color
        if distance > best_distance:
            best, best_distance = color, distance
    return best


def _shaded_fill(color: np.ndarray, height: int, width: int, rng: np.random.Generator
                 ) -> np.ndarray:
    """``float32 [height, width, 3]``: ``color`` with a random linear shading (a 3-D look)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xs * np.cos(angle) + ys * np.sin(angle)) * rng.uniform(0, 60)
    return (color + ramp[..., None]).astype(np.float32)


def _composite(image: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> None:
    """Paint a colour (shaded, contrasting with what it covers) into ``image`` ``[S, S, 3]`` in
    place through the full-image coverage ``alpha`` ``float32 [S, S]``."""
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    if len(rows) == 0:
        return
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # work on the layer's box only
    patch, weight = image[box], alpha[box]
    color = _pick_color(patch[weight >= 0.5], rng)
    fill = _shaded_fill(color, *weight.shape, rng)
    patch += weight[..., None] * (fill - patch)


# ---------------------------------------------------------------------------------------------
# Scenes: placing layers while keeping every object visible enough and in its size bucket.


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


def _fits(mask: np.ndarray, full_area: int, bucket: str, spec: SyntheticSpec) -> bool:
    area = int(mask.sum())
    return area >= spec.min_visibility * full_area and area > 0 and size_bucket(area) == bucket


def _occlusion_ok(objects: list[_Object], cover: np.ndarray, spec: SyntheticSpec) -> bool:
    """Whether every object keeps ``min_visibility`` and its bucket under the mask ``cover``."""
    return all(_fits(obj.visible & ~cover, obj.full_area, obj.bucket, spec) for obj in objects)


def _place(
    crop: np.ndarray, objects: list[_Object], spec: SyntheticSpec, rng: np.random.Generator,
    bucket: str | None = None, tries: int = 12,
) -> np.ndarray | None:
    """Find a position for ``crop`` that the placed ``objects`` tolerate as an occluder (and, for
    an object of ``bucket``, where it is itself visible enough); full-image alpha or None."""
    full_area = int((crop >= 0.5).sum())
    if full_area == 0:
        return None
    for _ in range(tries):
        alpha = _paste(crop, *_random_offset(crop, spec.image_size, rng), spec.image_size)
        mask = alpha >= 0.5
        if bucket is not None and not _fits(mask, full_area, bucket, spec):
            continue
        if _occlusion_ok(objects, mask, spec):
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
    objects: list[_Object], spec: SyntheticSpec, rng: np.random.Generator
) -> np.ndarray | None:
    """A blob (half the time) or a stroke that the placed ``objects`` tolerate, or None."""
    if rng.random() < 0.5:
        shape = _random_shape(_blob_fills(rng), spec, rng)
        side = rng.uniform(8, 0.3 * spec.image_size)
        return _place(_render_sized(shape, side, (0, np.inf)), objects, spec, rng)
    for _ in range(4):
        alpha = _stroke_alpha(spec.image_size, rng)
        if _occlusion_ok(objects, alpha >= 0.5, spec):
            return alpha
    return None


def _sample_objects(spec: SyntheticSpec, rng: np.random.Generator) -> list[tuple[int, str, float]]:
    """``(category_id, bucket, sqrt-area side)`` for each object, largest first (painter's
    order: large objects at the back, so small ones occlude them and not the reverse)."""
    bounds = {"small": (spec.min_object_size, BUCKET_EDGES[0]),
              "medium": BUCKET_EDGES, "large": (BUCKET_EDGES[1], spec.max_object_size)}
    drawn = []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        bucket = SIZE_BUCKETS[int(rng.integers(3))]
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
    _composite(image, alpha, rng)


def _add_objects(
    image: np.ndarray, spec: SyntheticSpec, rng: np.random.Generator
) -> list[_Object]:
    """Draw the objects (each a possible occluder of the earlier ones) into ``image``."""
    objects: list[_Object] = []
    for category_id, bucket, side in _sample_objects(spec, rng):
        fills = _category_fills(CATEGORY_NAMES[category_id - 1], rng)
        crop = _render_sized(_random_shape(fills, spec, rng), side, _bucket_bounds(bucket))
        alpha = _place(crop, objects, spec, rng, bucket=bucket)
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
    rng = _image_rng(spec, split, index)
    image = _background(spec.image_size, rng)
    num_distractors = int(rng.integers(0, spec.max_distractors + 1))
    num_under = int(rng.integers(0, num_distractors + 1))
    for _ in range(num_under):
        alpha = _distractor_alpha([], spec, rng)
        if alpha is not None:
            _occlude(image, [], alpha, rng)
    objects = _add_objects(image, spec, rng)
    for _ in range(num_distractors - num_under):
        alpha = _distractor_alpha(objects, spec, rng)
        if alpha is not None:
            _occlude(image, objects, alpha, rng)
    image += rng.normal(0, rng.uniform(1, 6), image.shape).astype(np.float32)  # sensor noise
    return np.round(image.clip(0, 255)).astype(np.uint8), _annotations(objects)


# ---------------------------------------------------------------------------------------------
# Splits and files.


def _categories() -> list[dict[str, Any]]:
    return [{"id": i, "name": name, "supercategory": "shape"}
            for i, name in enumerate(CATEGORY_NAMES, start=1)]


def generate_split(spec: SyntheticSpec, split: str, images_dir: str | Path) -> dict[str, Any]:
    """Render every image of ``split``, write them as ``images_dir/NNNNNN.jpg`` and return the
    COCO dict (``info``, ``images``, ``annotations``, ``categories``).

    Annotation ids run from 1 within the split; image ids are unique across splits
    (:func:`image_id`).
    """
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(spec.num_images(split)):
        pixels, image_annotations = render_image(spec, split, index)
        file_name = f"{index:06d}.jpg"
        Image.fromarray(pixels).save(images_dir / file_name, quality=spec.jpeg_quality)
        images.append({"id": image_id(split, index), "file_name": file_name,
                       "width": spec.image_size, "height": spec.image_size})
        for annotation in image_annotations:
            annotations.append({"id": len(annotations) + 1, "image_id": images[-1]["id"],
                                **annotation})
    info = {"description": f"detkit synthetic shapes, {split} split",
            "format_version": FORMAT_VERSION, "spec": asdict(spec)}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations,
            "categories": _categories()}


def dataset_paths(root: str | Path) -> dict[str, str]:
    """``{"<split>_images": folder, "<split>_ann": COCO JSON}`` of a set under ``root``."""
    root = Path(root)
    paths = {}
    for split in SPLITS:
        paths[f"{split}_images"] = str(root / split)
        paths[f"{split}_ann"] = str(root / "annotations" / f"instances_{split}.json")
    return paths


def _spec_record(spec: SyntheticSpec) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "spec": asdict(spec)}


def _read_spec_record(root: Path) -> dict[str, Any] | None:
    """The ``spec.json`` record of a complete set under ``root``, or None where there is none."""
    spec_file = root / SPEC_FILE
    if not spec_file.is_file():
        return None
    try:
        record = json.loads(spec_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{spec_file}: unreadable ({error}); remove {root} to regenerate"
                         ) from None
    missing = [p for p in dataset_paths(root).values() if not Path(p).exists()]
    if missing:
        raise ValueError(f"{root} holds {SPEC_FILE} but not {missing}: an incomplete or edited "
                         f"synthetic set; remove {root} to regenerate")
    return record


def _write_set(directory: Path, spec: SyntheticSpec) -> None:
    """Generate every split into ``directory``; ``spec.json`` last (it marks completeness)."""
    paths = dataset_paths(directory)
    Path(paths["train_ann"]).parent.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        start = time.perf_counter()
        coco = generate_split(spec, split, paths[f"{split}_images"])
        with open(paths[f"{split}_ann"], "w", encoding="utf-8") as f:
            json.dump(coco, f)
        logger.info("synthetic %s: %d images, %d objects in %.1f s", split, len(coco["images"]),
                    len(coco["annotations"]), time.perf_counter() - start)
    (directory / SPEC_FILE).write_text(json.dumps(_spec_record(spec), indent=2) + "\n",
                                       encoding="utf-8")


def _generate(root: Path, spec: SyntheticSpec) -> None:
    """Generate into a hidden sibling of ``root``, then rename it to ``root``: a killed run
    leaves only the sibling (``.NAME.partial-*``), never a set that looks complete."""
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        _write_set(partial, spec)
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        os.replace(partial, root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def ensure_dataset(root: str | Path, spec: SyntheticSpec | None = None) -> dict[str, str]:
    """Generate the synthetic COCO-format set under ``root`` unless it is already there.

    Layout: ``root/{train,val,test}/NNNNNN.jpg``, ``root/annotations/instances_{split}.json``
    and ``root/spec.json`` (the spec and :data:`FORMAT_VERSION`).

    Args:
        root: the set's folder; it must not exist, be empty, or hold a complete set.
        spec: what to generate; None means the default :class:`SyntheticSpec` for a new set and
            accepts any complete set of this :data:`FORMAT_VERSION` that ``root`` already holds
            (so a set made by ``tools/make_dataset.py`` with other settings is used as is).

    Returns:
        COCO paths ``{"train_images", "train_ann", "val_images", "val_ann", "test_images",
        "test_ann"}`` (str).

    Raises:
        ValueError: ``root`` holds a set of another spec or format version (both named), an
            incomplete set, or other files: nothing is overwritten.
    """
    root = Path(root)
    wanted = _spec_record(spec if spec is not None else SyntheticSpec())
    found = _read_spec_record(root)
    if found is not None:
        other_version = found.get("format_version") != FORMAT_VERSION
        if other_version or (spec is not None and found != wanted):
            raise ValueError(f"{root} holds a synthetic set generated from {found}, not the "
                             f"requested {wanted}; choose another root or remove {root}")
        logger.info("synthetic set found at %s (%s), reusing it", root, found)
        return dataset_paths(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not a synthetic set (no {SPEC_FILE}); choose an "
                         "empty or new folder for the synthetic set")
    logger.info("generating the synthetic set %s into %s", wanted, root)
    start = time.perf_counter()
    _generate(root, spec if spec is not None else SyntheticSpec())
    logger.info("synthetic set written to %s in %.1f s", root, time.perf_counter() - start)
    return dataset_paths(root)


def dataset_statistics(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per split: ``images``, ``objects``, ``images_without_objects``, ``per_bucket`` (COCO size
    bucket of the annotation ``area``) and ``per_class`` (by category name) counts, read from
    the annotation files of :func:`ensure_dataset`'s ``paths``."""
    statistics = {}
    for split in SPLITS:
        if f"{split}_ann" not in paths:
            continue
        coco = json.loads(Path(paths[f"{split}_ann"]).read_text(encoding="utf-8"))
        names = {c["id"]: c["name"] for c in coco["categories"]}
        annotations = coco["annotations"]
        per_bucket = dict.fromkeys(SIZE_BUCKETS, 0)
        per_class = dict.fromkeys(names.values(), 0)
        for annotation in annotations:
            per_bucket[size_bucket(annotation["area"])] += 1
            per_class[names[annotation["category_id"]]] += 1
        with_objects = {annotation["image_id"] for annotation in annotations}
        statistics[split] = {
            "images": len(coco["images"]), "objects": len(annotations),
            "images_without_objects": len(coco["images"]) - len(with_objects),
            "per_bucket": per_bucket, "per_class": per_class,
        }
    return statistics


def format_statistics(statistics: dict[str, dict[str, Any]]) -> str:
    """:func:`dataset_statistics` as a small text table (counts and bucket shares)."""
    lines = []
    for split, stats in statistics.items():
        total = max(stats["objects"], 1)
        buckets = ", ".join(f"{name} {count} ({100 * count / total:.0f}%)"
                            for name, count in stats["per_bucket"].items())
        classes = ", ".join(f"{name} {count}" for name, count in stats["per_class"].items())
        lines.append(f"{split}: {stats['images']} images ({stats['images_without_objects']} "
                     f"without objects), {stats['objects']} objects")
        lines.append(f"  per size bucket: {buckets}")
        lines.append(f"  per class: {classes}")
    return "\n".join(lines)


def spec_fields() -> list[tuple[str, type, Any]]:
    """``(name, type, default)`` of every :class:`SyntheticSpec` field (for command lines)."""
    return [(f.name, type(f.default), f.default) for f in fields(SyntheticSpec)]
