"""Position-sensitive extractors: a convolution makes a thin map with one channel group per bin,
and bin ``(ph, pw)`` of a RoI is pooled from its own group only (R-FCN, Light-Head R-CNN)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from detkit import ops
from detkit.models.roi_extractors.base import FPN_LEVELS, RoIExtractor


def thin_map_conv(in_channels: int, channels: int, kernel_size: int) -> nn.Conv2d:
    """The convolution from an FPN level to a position-sensitive map (shared by all levels);
    odd ``kernel_size`` keeps the map's size."""
    return nn.Conv2d(in_channels, channels, kernel_size, padding=kernel_size // 2)


class PSRoIAlignExtractor(RoIExtractor):
    """Position-sensitive RoIAlign on a thin ``P*P*ps_channels`` map (``psroi_align``).

    Light-Head R-CNN style: a convolution turns each FPN level into a thin position-sensitive
    map (Light-Head uses 10 * 7 * 7 = 490 channels), PS RoIAlign pools ``ps_channels`` per bin,
    and the fc head takes the ``ps_channels * P * P`` vector. The thin convolution is shared by all
    levels; RoIs are level-mapped.
    """

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS,
        output_size: int = 7, ps_channels: int = 10, sampling_ratio: int = 2,
        kernel_size: int = 1,
    ) -> None:
        super().__init__(in_channels=in_channels, featmap_names=featmap_names,
                         output_size=output_size, out_channels=ps_channels)
        self.sampling_ratio = sampling_ratio
        self.thin = thin_map_conv(in_channels, ps_channels * output_size**2, kernel_size)

    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        return ops.ps_roi_align(self.thin(feature), rois, self.output_size, scale,
                                self.sampling_ratio)
