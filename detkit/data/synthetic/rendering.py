"""Rendering: a shape at a scale -> a soft coverage mask ("alpha") in a local crop."""

from __future__ import annotations

import cv2
import numpy as np

from detkit.data.synthetic.shapes import Fills, Shape

_SHIFT = 4  # cv2.fillPoly fixed-point bits: polygon vertices at 1/16 pixel


def _fill_polygons(canvas: np.ndarray, fills: Fills, origin: np.ndarray, scale: float) -> None:
    """Fill ``fills`` (unit frame) into ``canvas`` at ``scale`` px per unit, unit 0 at origin."""
    for polygon, value in fills:
        points = np.round((polygon * scale - origin) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(canvas, [points], value, lineType=cv2.LINE_8, shift=_SHIFT)


def _unit_area(shape: Shape) -> float:
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


def _render(shape: Shape, scale: float) -> np.ndarray:
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


def render_sized(shape: Shape, side: float, bounds: tuple[float, float]) -> np.ndarray:
    """Render so that sqrt(mask area) is about ``side`` and inside ``bounds`` (one correction:
    the elastic warp changes the area a little)."""
    scale = side / np.sqrt(_unit_area(shape))
    alpha = _render(shape, scale)
    measured = np.sqrt(max(float((alpha >= 0.5).sum()), 1.0))
    if not bounds[0] <= measured < bounds[1]:
        alpha = _render(shape, scale * side / measured)
    return alpha
