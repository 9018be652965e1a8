"""The RoI extractor base class: shared constructor arguments, boxes -> RoIs, FPN level mapping,
and the bin layout that extractors which move their sampling bins report.

A level-mapped extractor subclasses :class:`RoIExtractor` and implements only
:meth:`RoIExtractor.pool_level` (how it pools the RoIs of one feature map); the base ``forward``
turns boxes into RoIs and sends each RoI to the level FPN eq. (1) assigns. An extractor that
pools every RoI from several levels overrides :meth:`RoIExtractor.pool_rois` instead; one that
learns where its bins go overrides :meth:`RoIExtractor.bin_layout`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from detkit import ops
from detkit.ops.level_mapping import CANONICAL_LEVEL, CANONICAL_SCALE

FPN_LEVELS = ("p2", "p3", "p4", "p5")
"""The FPN levels RoIs are pooled from (strides 4..32; P6 only feeds the RPN, as in the paper)."""


@dataclass
class BinLayout:
    """Where ``K`` RoIs' ``P x P`` sampling bins sit, xyxy in input-image pixels.

    Attributes:
        before: ``Tensor[K, P, P, 4]`` the regular grid, bin ``(ph, pw)`` at row ``ph``.
        after: ``Tensor[K, P, P, 4]`` each bin moved by its learned offset.
        mask: ``Tensor[K, P, P]`` per-bin modulation (DCNv2), or None.
    """

    before: Tensor
    after: Tensor
    mask: Tensor | None = None

    @classmethod
    def from_offsets(cls, boxes_xyxy: Tensor, offset: Tensor, scale: float,
                     mask: Tensor | None = None) -> BinLayout:
        """Bins moved the deformable-pooling way: bin ``(ph, pw)`` shifts by ``scale * roi_size *
        offset[:, :, ph, pw]`` (``gamma`` in DCN's RoI pooling, ``trans_std`` in Deformable
        R-FCN). The shift is proportional to the RoI size, so it is the same in image pixels as in
        feature-map pixels scaled by the stride.

        Args:
            boxes_xyxy: ``Tensor[K, 4]`` in input-image pixels.
            offset: ``Tensor[K, 2, P, P]`` normalised ``(dx, dy)`` per bin.
            scale: the extractor's offset scale.
            mask: ``Tensor[K, P, P]`` or None.
        """
        p = offset.shape[-1]
        x1, y1, x2, y2 = boxes_xyxy.unbind(dim=1)
        width, height = (x2 - x1)[:, None, None], (y2 - y1)[:, None, None]
        steps = torch.arange(p, dtype=boxes_xyxy.dtype, device=boxes_xyxy.device)
        left = x1[:, None, None] + steps[None, None, :] * width / p
        top = y1[:, None, None] + steps[None, :, None] * height / p
        before = torch.stack(
            torch.broadcast_tensors(left, top, left + width / p, top + height / p), dim=-1)
        shift = torch.stack([scale * width * offset[:, 0], scale * height * offset[:, 1]], dim=-1)
        return cls(before, before + shift.repeat(1, 1, 1, 2), mask)

    def cpu(self) -> BinLayout:
        return BinLayout(self.before.cpu(), self.after.cpu(),
                         None if self.mask is None else self.mask.cpu())


class RoIExtractor(nn.Module, ABC):
    """Pools a feature map or vector for every RoI from a dict of FPN features.

    Subclasses implement :meth:`pool_level`; by default each RoI is pooled from the one level FPN
    eq. (1) assigns it to (override :meth:`pool_rois` to use several levels per RoI).

    Args:
        in_channels: channels of every feature map.
        featmap_names: the pyramid levels to pool from, consecutive, finest first.
        output_size: ``P`` for a ``P x P`` pooled map, or None when the output is a flat vector.
        out_channels: channels of the pooled output (default ``in_channels``).

    Attributes:
        out_channels: channels of the pooled output.
        output_size: ``(PH, PW)`` of the pooled map, or ``None`` when the output is already flat.
        moves_bins: True for an extractor class that overrides :meth:`bin_layout` (learns where
            its sampling bins go); set on every subclass, readable on the class.
    """

    moves_bins: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.moves_bins = cls.bin_layout is not RoIExtractor.bin_layout

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS,
        output_size: int | None = 7, out_channels: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if output_size is not None and output_size < 1:
            raise ValueError(f"output_size must be positive, got {output_size}")
        self.featmap_names = check_featmap_names(featmap_names)
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.output_size = None if output_size is None else (output_size, output_size)

    @property
    def out_features(self) -> int:
        """Length of the flattened output per RoI (the box head's input size)."""
        if self.output_size is None:
            return self.out_channels
        return self.out_channels * self.output_size[0] * self.output_size[1]

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
        return self.pool_rois(features, ops.boxes_to_rois(boxes_per_image))

    def pool_rois(self, features: dict[str, Tensor], rois: Tensor) -> Tensor:
        """``rois: Tensor[K, 5]`` (input-image pixels) -> ``Tensor[K, ...]``, each RoI pooled by
        :meth:`pool_level` from the level FPN eq. (1) assigns it to."""
        return pool_by_level(features, rois, self.featmap_names, self.pool_level)

    @abstractmethod
    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        """Pool RoIs from one feature map.

        Args:
            feature: ``Tensor[N, C, H, W]``, one pyramid level.
            rois: ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.
            scale: feature-map pixels per input pixel (``1 / stride``).

        Returns:
            ``Tensor[K, out_channels, PH, PW]`` (or ``Tensor[K, out_channels]``).
        """

    def bin_layout(
        self, features: dict[str, Tensor], boxes_per_image: list[Tensor]
    ) -> BinLayout | None:
        """Where this extractor puts its sampling bins for these boxes, or None (the default)
        when the bins are the fixed regular grid. Extractors that learn offsets override this.

        Args:
            features: as for :meth:`forward`.
            boxes_per_image: ``N`` tensors ``Tensor[L_i, 4]``, xyxy in input-image pixels.

        Returns:
            The layout of the ``K = sum(L_i)`` boxes in order, in input-image pixels, or None.
        """
        return None


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
    pool: Callable[[Tensor, Tensor, float], Tensor | tuple[Tensor, ...]], *,
    canonical_scale: float = CANONICAL_SCALE, canonical_level: int = CANONICAL_LEVEL,
) -> Tensor | tuple[Tensor, ...]:
    """Pool each RoI from the level FPN eq. (1) assigns it to, keeping the RoIs' order.

    Args:
        features: the feature dict.
        rois: ``Tensor[K, 5]`` in input-image pixels.
        featmap_names: consecutive levels, finest first.
        pool: ``pool(feature, level_rois, scale) -> Tensor[K_level, ...]`` (or a tuple of such
            tensors, e.g. pooled features and the offsets used).

    Returns:
        ``Tensor[K, ...]`` (or a tuple): row ``k`` holds RoI ``k`` pooled from its level.
    """
    if len(featmap_names) == 1:
        name = featmap_names[0]
        return pool(features[name], rois, scale_of(name))
    levels = ops.map_levels(rois, level_of(featmap_names[0]), level_of(featmap_names[-1]),
                            canonical_scale=canonical_scale, canonical_level=canonical_level)
    levels = levels - level_of(featmap_names[0])
    results: list[Tensor] | None = None
    single = True
    for index, name in enumerate(featmap_names):
        selected = torch.nonzero(levels == index).squeeze(1)
        pooled = pool(features[name], rois[selected], scale_of(name))
        single = isinstance(pooled, Tensor)
        parts = (pooled,) if single else pooled
        if results is None:
            results = [p.new_zeros((rois.shape[0], *p.shape[1:])) for p in parts]
        for result, part in zip(results, parts, strict=True):
            result.index_copy_(0, selected, part)
    assert results is not None
    return results[0] if single else tuple(results)
