"""The RoI extractor interface and the FPN level-mapping loop the extractors share."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from detkit.ops import map_levels
from detkit.ops.level_mapping import CANONICAL_LEVEL, CANONICAL_SCALE


class RoIExtractor(nn.Module, ABC):
    """Pools a feature vector or map for every RoI from a dict of FPN features.

    Subclasses set ``out_channels`` and ``output_size``; the box head reads ``out_features``.

    Attributes:
        out_channels: channels of the pooled output.
        output_size: ``(PH, PW)`` of the pooled map, or ``None`` when the output is already flat.
    """

    out_channels: int
    output_size: tuple[int, int] | None

    @property
    def out_features(self) -> int:
        """Length of the flattened output per RoI (the box head's input size)."""
        if self.output_size is None:
            return self.out_channels
        return self.out_channels * self.output_size[0] * self.output_size[1]

    @abstractmethod
    def forward(
        self, features: dict[str, Tensor], boxes_per_image: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> Tensor:
        """Pool every box.

        Args:
            features: ``{"p2": Tensor[N, C, H/4, W/4], ...}`` keyed by pyramid level.
            boxes_per_image: ``N`` tensors ``Tensor[L_i, 4]``, xyxy in input-image pixels.
            image_sizes: ``(h, w)`` of each image before padding.

        Returns:
            ``Tensor[K, out_channels, PH, PW]`` (or ``Tensor[K, out_channels]`` when
            ``output_size`` is None), ``K = sum(L_i)``, in the order of the boxes.
        """


def level_of(name: str) -> int:
    """``"p3"`` -> 3: feature maps are keyed by pyramid level (stride ``2**level``)."""
    match = re.fullmatch(r"p(\d+)", name)
    if match is None:
        raise ValueError(f"feature map names must be pyramid levels like 'p2', got {name!r}")
    return int(match.group(1))


def scale_of(name: str) -> float:
    """Feature-map pixels per input pixel: ``1 / stride``."""
    return 2.0 ** -level_of(name)


def check_featmap_names(featmap_names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(featmap_names)
    if not names:
        raise ValueError("featmap_names must name at least one feature map")
    levels = [level_of(n) for n in names]
    if levels != list(range(levels[0], levels[0] + len(levels))):
        raise ValueError(f"featmap_names must be consecutive levels, got {names}")
    return names


def pool_by_level(
    features: dict[str, Tensor], rois: Tensor, featmap_names: Sequence[str],
    pool: Callable[[str, Tensor], Tensor | tuple[Tensor, ...]], *,
    canonical_scale: float = CANONICAL_SCALE, canonical_level: int = CANONICAL_LEVEL,
) -> Tensor | tuple[Tensor, ...]:
    """Pool each RoI from the level FPN eq. (1) assigns it to, keeping the RoIs' order.

    Args:
        features: the feature dict.
        rois: ``Tensor[K, 5]`` in input-image pixels.
        featmap_names: consecutive levels, finest first.
        pool: ``pool(level_name, level_rois) -> Tensor[K_level, ...]`` (or a tuple of such
            tensors, e.g. pooled features and the offsets used).

    Returns:
        ``Tensor[K, ...]`` (or a tuple): row ``k`` holds RoI ``k`` pooled from its level.
    """
    if len(featmap_names) == 1:
        return pool(featmap_names[0], rois)
    levels = map_levels(rois, level_of(featmap_names[0]), level_of(featmap_names[-1]),
                        canonical_scale=canonical_scale, canonical_level=canonical_level)
    levels = levels - level_of(featmap_names[0])
    results: list[Tensor] | None = None
    single = True
    for index, name in enumerate(featmap_names):
        selected = torch.nonzero(levels == index).squeeze(1)
        pooled = pool(name, rois[selected])
        single = isinstance(pooled, Tensor)
        parts = (pooled,) if single else pooled
        if results is None:
            results = [p.new_zeros((rois.shape[0], *p.shape[1:])) for p in parts]
        for result, part in zip(results, parts, strict=True):
            result.index_copy_(0, selected, part)
    assert results is not None
    return results[0] if single else tuple(results)
