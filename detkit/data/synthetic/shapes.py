"""Shapes: polygons in a unit frame (radius about 1, centred at 0), filled in order with 1 or 0,
and the per-instance deformation (aspect, shear, rotation, elastic warp) applied when rendered."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from detkit.data.synthetic.spec import CATEGORY_NAMES, Deformation

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


def category_fills(category: str, rng: np.random.Generator) -> Fills:
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


def blob_fills(rng: np.random.Generator, tries: int = 10) -> Fills:
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
class Shape:
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


def _random_linear(deformation: Deformation, rng: np.random.Generator) -> np.ndarray:
    """Rotation @ shear @ aspect change, a ``[2, 2]`` matrix of determinant 1."""
    aspect = np.exp(rng.uniform(-1, 1) * np.log(deformation.max_aspect))
    scale = np.diag([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    shear_factor = rng.uniform(-deformation.max_shear, deformation.max_shear)
    shear = np.array([[1.0, shear_factor], [0.0, 1.0]])
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return rotation @ shear @ scale


def random_shape(fills: Fills, deformation: Deformation, rng: np.random.Generator) -> Shape:
    """``fills`` with this instance's deformation drawn from ``deformation``'s ranges: an
    elastic grid of 3..5 nodes a side, then aspect, shear and rotation.

    The same random numbers are drawn whatever the ranges (they only scale them), so a set
    that differs in deformation alone draws the same scene otherwise."""
    grid = int(rng.integers(3, 6))
    warp = rng.uniform(-1, 1, (grid, grid, 2)) * deformation.elastic_strength
    return Shape(fills, _random_linear(deformation, rng), warp.astype(np.float32))
