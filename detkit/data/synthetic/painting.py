"""Backgrounds and compositing. Images are float32 [S, S, 3] RGB in 0..255 until the end."""

from __future__ import annotations

import cv2
import numpy as np


def background(size: int, contrast: float, rng: np.random.Generator) -> np.ndarray:
    """A textured background ``float32 [size, size, 3]``: two nearby colours (the second
    ``contrast`` RGB levels std away; 0: one plain colour) mixed by a pattern."""
    color_a = rng.uniform(0, 255, 3)
    color_b = (color_a + rng.normal(0, contrast, 3)).clip(0, 255)
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


def composite(image: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> None:
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
