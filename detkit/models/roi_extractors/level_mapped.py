"""Level-mapped extractors with fixed bins: each RoI is pooled from the one FPN level eq. (1)
assigns it to (RoIAlign, RoIPool, precise RoI pooling, spatial-pyramid pooling), or from one given
level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from detkit import ops
from detkit._validation import check_choice
from detkit.models.roi_extractors.base import FPN_LEVELS, RoIExtractor


class RoIAlignExtractor(RoIExtractor):
    """RoIAlign on the FPN level that eq. (1) of the FPN paper assigns (``roi_align``).

    With the defaults it computes what torchvision's ``MultiScaleRoIAlign(["0", "1", "2", "3"],
    7, 2)`` does inside its Faster R-CNN (legacy ``aligned=False``, 2x2 samples per bin).
    """

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS,
        output_size: int = 7, sampling_ratio: int = 2, aligned: bool = False,
    ) -> None:
        super().__init__(in_channels=in_channels, featmap_names=featmap_names,
                         output_size=output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        return ops.roi_align(feature, rois, self.output_size, scale, self.sampling_ratio,
                             self.aligned)


class SingleLevelRoIAlignExtractor(RoIAlignExtractor):
    """RoIAlign of every RoI on one feature map, no level mapping (``roi_align_single``).

    The no-multi-scale baseline: the FPN paper's ablation pools all RoIs from P2 only (Table 3).
    """

    def __init__(
        self, *, in_channels: int, featmap_name: str = "p2", output_size: int = 7,
        sampling_ratio: int = 2, aligned: bool = False,
    ) -> None:
        super().__init__(in_channels=in_channels, featmap_names=(featmap_name,),
                         output_size=output_size, sampling_ratio=sampling_ratio, aligned=aligned)


class RoIPoolExtractor(RoIExtractor):
    """Quantized max RoIPool (Fast R-CNN) on the level-mapped FPN level (``roi_pool``).

    Takes the base class's arguments: ``in_channels``, ``featmap_names``, ``output_size``.
    """

    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        return ops.roi_pool(feature, rois, self.output_size, scale)


class PrRoIPoolExtractor(RoIExtractor):
    """Precise RoI pooling (IoU-Net's PrRoIPool) on the level-mapped FPN level (``prroi_pool``).

    Each bin is the exact average of the bilinearly interpolated feature map over the bin (no
    sampling grid, so no ``sampling_ratio``; corners scaled without a half-pixel shift), see
    :func:`detkit.ops.prroi_pool`. Takes the base class's arguments: ``in_channels``,
    ``featmap_names``, ``output_size``. The op can also pass gradients to the RoI coordinates;
    Faster R-CNN's proposals are detached, so here only the features get them.
    """

    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        return ops.prroi_pool(feature, rois, self.output_size, scale)


class SpatialPyramidPoolExtractor(RoIExtractor):
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
        check_choice("mode", mode, ("max", "align"))
        if not grids or min(grids) < 1:
            raise ValueError(f"grids must be positive sizes, got {tuple(grids)}")
        grids = tuple(int(g) for g in grids)
        super().__init__(in_channels=in_channels, featmap_names=featmap_names, output_size=None,
                         out_channels=in_channels * sum(g * g for g in grids))
        self.grids = grids
        self.mode = mode
        self.sampling_ratio = sampling_ratio

    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        """``Tensor[K, in_channels * sum(g * g)]``: the grids' pooled maps, flattened."""
        if self.mode == "max":
            pooled = [ops.roi_pool(feature, rois, g, scale) for g in self.grids]
        else:
            pooled = [ops.roi_align(feature, rois, g, scale, self.sampling_ratio, True)
                      for g in self.grids]
        return torch.cat([p.flatten(1) for p in pooled], dim=1)
