"""FPN level mapping: which pyramid level a RoI is pooled from."""

from __future__ import annotations

import torch
from torch import Tensor

# FPN paper, eq. (1): a 224x224 RoI (ImageNet pre-training size) maps to level k0 = 4 (C4/P4).
CANONICAL_SCALE = 224
CANONICAL_LEVEL = 4


def map_levels(
    boxes_xyxy: Tensor, min_level: int, max_level: int, *, canonical_scale: float = CANONICAL_SCALE,
    canonical_level: int = CANONICAL_LEVEL, eps: float = 1e-6,
) -> Tensor:
    """FPN eq. (1): ``k = floor(k0 + log2(sqrt(w * h) / s0))``, clamped to the levels given.

    Args:
        boxes_xyxy: ``Tensor[K, 4]`` boxes in input-image pixels (or ``Tensor[K, 5]`` RoIs, whose
            first column, the batch index, is ignored).
        min_level, max_level: the available levels (e.g. 2 and 5 for P2-P5).
        canonical_scale, canonical_level: ``s0`` and ``k0`` of the paper.
        eps: added before the floor, as torchvision's ``LevelMapper`` does, so a box of exactly
            the canonical size lands on its level despite rounding in log2.

    Returns:
        ``Tensor[K]`` int64 levels in ``[min_level, max_level]``. Degenerate (zero-area) and NaN
        boxes map to ``min_level``.
    """
    if boxes_xyxy.dim() != 2 or boxes_xyxy.shape[1] not in (4, 5):
        raise ValueError(
            "boxes_xyxy must be a Tensor[K, 4] (or RoIs Tensor[K, 5]), got "
            f"{tuple(boxes_xyxy.shape)}"
        )
    if min_level > max_level:
        raise ValueError(f"min_level ({min_level}) must not exceed max_level ({max_level})")
    boxes = boxes_xyxy[:, -4:].detach()
    if boxes.dtype != torch.float64:
        boxes = boxes.float()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    scale = torch.sqrt(area.clamp(min=0))
    levels = torch.floor(canonical_level + torch.log2(scale / canonical_scale) + eps)
    levels = torch.nan_to_num(levels, nan=float(min_level), neginf=float(min_level))
    return levels.clamp(min_level, max_level).to(torch.int64)
