"""All-level extractors: every RoI pooled from every FPN level and the results fused."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from detkit._validation import check_choice
from detkit.models.roi_extractors.base import FPN_LEVELS, scale_of
from detkit.models.roi_extractors.level_mapped import RoIAlignExtractor


class PyramidFusionExtractor(RoIAlignExtractor):
    """Every RoI pooled from all FPN levels and fused (``pyramid_fusion``).

    PANet's adaptive feature pooling and GRoIE pool a RoI from every level rather than one;
    ``fusion`` is ``"sum"``, ``"max"`` (PANet's element-wise max), or ``"concat"`` followed by a
    1x1 convolution back to ``in_channels`` (a learned per-channel weighting of the levels).
    Each level is pooled by RoIAlign (:meth:`RoIAlignExtractor.pool_level`), ``aligned`` here.
    """

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS, output_size: int = 7,
        sampling_ratio: int = 2, aligned: bool = True,
        fusion: Literal["sum", "max", "concat"] = "sum",
    ) -> None:
        check_choice("fusion", fusion, ("sum", "max", "concat"))
        super().__init__(in_channels=in_channels, featmap_names=featmap_names,
                         output_size=output_size, sampling_ratio=sampling_ratio, aligned=aligned)
        self.fusion = fusion
        self.reduce = None
        if fusion == "concat":
            self.reduce = nn.Conv2d(in_channels * len(self.featmap_names), in_channels, 1)

    def pool_rois(self, features: dict[str, Tensor], rois: Tensor) -> Tensor:
        """Every RoI from every level, fused: ``Tensor[K, in_channels, P, P]``."""
        pooled = [self.pool_level(features[name], rois, scale_of(name))
                  for name in self.featmap_names]
        if self.fusion == "sum":
            return torch.stack(pooled).sum(dim=0)
        if self.fusion == "max":
            return torch.stack(pooled).amax(dim=0)
        assert self.reduce is not None
        return self.reduce(torch.cat(pooled, dim=1))
