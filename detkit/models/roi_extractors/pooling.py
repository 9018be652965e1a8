"""Non-learned extractors: RoIPool, RoIAlign (level-mapped or single-level), all-level fusion,
and spatial-pyramid pooling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from detkit import ops
from detkit.models.roi_extractors.base import (
    RoIExtractor,
    check_featmap_names,
    pool_by_level,
    scale_of,
)

FPN_LEVELS = ("p2", "p3", "p4", "p5")


class LevelMappedRoIAlign(RoIExtractor):
    """RoIAlign on the FPN level that eq. (1) of the FPN paper assigns (``roi_align``).

    With the defaults it computes what torchvision's ``MultiScaleRoIAlign(["0", "1", "2", "3"],
    7, 2)`` does inside its Faster R-CNN (legacy ``aligned=False``, 2x2 samples per bin).
    """

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS,
        output_size: int = 7, sampling_ratio: int = 2, aligned: bool = False,
    ) -> None:
        super().__init__()
        self.featmap_names = check_featmap_names(featmap_names)
        self.out_channels = in_channels
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, features: dict[str, Tensor], boxes_per_image: list[Tensor],
                image_sizes: list[tuple[int, int]]) -> Tensor:
        def pool(name: str, rois: Tensor) -> Tensor:
            return ops.roi_align(features[name], rois, self.output_size, scale_of(name),
                                 self.sampling_ratio, self.aligned)

        return pool_by_level(features, ops.boxes_to_rois(boxes_per_image), self.featmap_names, pool)


class SingleLevelRoIAlign(LevelMappedRoIAlign):
    """RoIAlign of every RoI on one feature map, no level mapping (``roi_align_single``).

    The no-multi-scale baseline: the FPN paper's ablation pools all RoIs from P2 only (Table 3).
    """

    def __init__(
        self, *, in_channels: int, featmap_name: str = "p2", output_size: int = 7,
        sampling_ratio: int = 2, aligned: bool = False,
    ) -> None:
        super().__init__(in_channels=in_channels, featmap_names=(featmap_name,),
                         output_size=output_size, sampling_ratio=sampling_ratio, aligned=aligned)


class LevelMappedRoIPool(RoIExtractor):
    """Quantized max RoIPool (Fast R-CNN) on the level-mapped FPN level (``roi_pool``)."""

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS, output_size: int = 7,
    ) -> None:
        super().__init__()
        self.featmap_names = check_featmap_names(featmap_names)
        self.out_channels = in_channels
        self.output_size = (output_size, output_size)

    def forward(self, features: dict[str, Tensor], boxes_per_image: list[Tensor],
                image_sizes: list[tuple[int, int]]) -> Tensor:
        def pool(name: str, rois: Tensor) -> Tensor:
            return ops.roi_pool(features[name], rois, self.output_size, scale_of(name))

        return pool_by_level(features, ops.boxes_to_rois(boxes_per_image), self.featmap_names, pool)


class PyramidFusion(RoIExtractor):
    """Every RoI pooled from all FPN levels and fused (``pyramid_fusion``).

    PANet's adaptive feature pooling and GRoIE pool a RoI from every level rather than one;
    ``fusion`` is ``"sum"``, ``"max"`` (PANet's element-wise max), or ``"concat"`` followed by a
    1x1 convolution back to ``in_channels`` (a learned per-channel weighting of the levels).
    """

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS, output_size: int = 7,
        sampling_ratio: int = 2, aligned: bool = True,
        fusion: Literal["sum", "max", "concat"] = "sum",
    ) -> None:
        super().__init__()
        if fusion not in ("sum", "max", "concat"):
            raise ValueError(f"fusion must be 'sum', 'max' or 'concat', got {fusion!r}")
        self.featmap_names = check_featmap_names(featmap_names)
        self.out_channels = in_channels
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.fusion = fusion
        self.reduce = None
        if fusion == "concat":
            self.reduce = nn.Conv2d(in_channels * len(self.featmap_names), in_channels, 1)

    def forward(self, features: dict[str, Tensor], boxes_per_image: list[Tensor],
                image_sizes: list[tuple[int, int]]) -> Tensor:
        rois = ops.boxes_to_rois(boxes_per_image)
        pooled = [
            ops.roi_align(features[name], rois, self.output_size, scale_of(name),
                          self.sampling_ratio, self.aligned)
            for name in self.featmap_names
        ]
        if self.fusion == "sum":
            return torch.stack(pooled).sum(dim=0)
        if self.fusion == "max":
            return torch.stack(pooled).amax(dim=0)
        assert self.reduce is not None
        return self.reduce(torch.cat(pooled, dim=1))


class SpatialPyramidPool(RoIExtractor):
    """Spatial-pyramid RoI pooling (SPP-net), level-mapped (``spp``).

    The RoI is pooled at several grids (default 1x1, 2x2, 4x4) and the flattened results are
    concatenated into one vector of ``in_channels * sum(g * g)`` features. ``mode="max"`` is
    SPP-net's max pooling per bin (quantized RoIPool); ``"align"`` uses RoIAlign averages.
    """

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS,
        grids: Sequence[int] = (1, 2, 4), mode: Literal["max", "align"] = "max",
        sampling_ratio: int = 2,
    ) -> None:
        super().__init__()
        if mode not in ("max", "align"):
            raise ValueError(f"mode must be 'max' or 'align', got {mode!r}")
        if not grids or min(grids) < 1:
            raise ValueError(f"grids must be positive sizes, got {tuple(grids)}")
        self.featmap_names = check_featmap_names(featmap_names)
        self.grids = tuple(int(g) for g in grids)
        self.mode = mode
        self.sampling_ratio = sampling_ratio
        self.out_channels = in_channels * sum(g * g for g in self.grids)
        self.output_size = None

    def forward(self, features: dict[str, Tensor], boxes_per_image: list[Tensor],
                image_sizes: list[tuple[int, int]]) -> Tensor:
        def pool(name: str, rois: Tensor) -> Tensor:
            feature, scale = features[name], scale_of(name)
            if self.mode == "max":
                pooled = [ops.roi_pool(feature, rois, g, scale) for g in self.grids]
            else:
                pooled = [ops.roi_align(feature, rois, g, scale, self.sampling_ratio, True)
                          for g in self.grids]
            return torch.cat([p.flatten(1) for p in pooled], dim=1)

        return pool_by_level(features, ops.boxes_to_rois(boxes_per_image), self.featmap_names, pool)
