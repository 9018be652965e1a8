"""Learned-sampling extractors: deformable, modulated deformable and deformable position-sensitive
RoI pooling. Each predicts per-bin offsets for every RoI, pools with them, and reports where its
bins went through :meth:`~detkit.models.roi_extractors.base.RoIExtractor.bin_layout`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from detkit import ops
from detkit.models.roi_extractors.base import FPN_LEVELS, BinLayout, RoIExtractor, pool_by_level
from detkit.models.roi_extractors.position_sensitive import thin_map_conv


def _fc_stack(in_features: int, hidden: int, out_features: int, layers: int) -> nn.Sequential:
    """``layers`` Linear layers with ReLU between them; the last starts at zero so that the
    deformable extractor starts as plain RoIAlign (mmdet's DeformRoIPoolPack initialisation)."""
    modules: list[nn.Module] = []
    width = in_features
    for _ in range(layers - 1):
        modules += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    last = nn.Linear(width, out_features)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    modules.append(last)
    return nn.Sequential(*modules)


class DeformRoIPoolExtractor(RoIExtractor):
    """Deformable RoI pooling, level-mapped (``deform_roi_pool``; Deformable ConvNets v1).

    Pool without offsets, predict per-bin offsets with an FC branch (3 layers, last zero-init),
    pool again with them (``gamma`` scales the offsets by the RoI size) — mmdetection's
    ``DeformRoIPoolPack``. One offset branch is shared by all levels (the FPN way: heads are
    shared across levels; mmdetection builds one per level).
    """

    modulated: ClassVar[bool] = False

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS,
        output_size: int = 7, sampling_ratio: int = 2, gamma: float = 0.1,
        offset_fc_channels: int = 1024,
    ) -> None:
        super().__init__(in_channels=in_channels, featmap_names=featmap_names,
                         output_size=output_size)
        self.sampling_ratio = sampling_ratio
        self.gamma = gamma
        bins = output_size * output_size
        self.offset_fc = _fc_stack(in_channels * bins, offset_fc_channels, 2 * bins, layers=3)
        # DCNv2's modulation: sigmoid of a zero-initialised FC -> every bin starts at 0.5
        self.mask_fc = (_fc_stack(in_channels * bins, offset_fc_channels, bins, layers=2)
                        if self.modulated else None)

    def level_offsets(self, feature: Tensor, rois: Tensor, scale: float) -> tuple[Tensor, ...]:
        """What moves the bins of ``rois`` on one level: ``(offset: Tensor[K, 2, P, P])``, plus
        ``mask: Tensor[K, 1, P, P]`` when modulated; bin ``(ph, pw)`` moves by ``gamma *
        roi_size * offset[:, :, ph, pw]``. Arguments as for :meth:`pool_level`."""
        size = self.output_size
        plain = ops.deform_roi_pool(feature, rois, output_size=size, spatial_scale=scale,
                                    sampling_ratio=self.sampling_ratio)
        flat = plain.flatten(1)
        offset = self.offset_fc(flat).view(-1, 2, *size)
        if self.mask_fc is None:
            return (offset,)
        return offset, torch.sigmoid(self.mask_fc(flat)).view(-1, 1, *size)

    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        offset, *mask = self.level_offsets(feature, rois, scale)
        return ops.deform_roi_pool(feature, rois, offset, mask[0] if mask else None,
                                   output_size=self.output_size, spatial_scale=scale,
                                   sampling_ratio=self.sampling_ratio, gamma=self.gamma)

    def bin_layout(self, features: dict[str, Tensor], boxes_per_image: list[Tensor]) -> BinLayout:
        """The ``P x P`` bins moved by ``gamma * roi_size * offset``; the modulation as mask."""
        rois = ops.boxes_to_rois(boxes_per_image)
        offset, *mask = pool_by_level(features, rois, self.featmap_names, self.level_offsets)
        return BinLayout.from_offsets(rois[:, 1:], offset, self.gamma,
                                      mask[0][:, 0] if mask else None)


class ModulatedDeformRoIPoolExtractor(DeformRoIPoolExtractor):
    """Modulated deformable RoI pooling (``mdeform_roi_pool``; DCNv2): the deformable extractor
    plus a sigmoid mask branch that weights each bin (mmdetection's ModulatedDeformRoIPoolPack)."""

    modulated = True


class DeformPSRoIPoolExtractor(RoIExtractor):
    """Deformable position-sensitive RoI pooling (``deform_psroi_pool``; Deformable R-FCN style).

    As in Deformable R-FCN, the offsets come from a no-offset PS pooling pass: a convolution makes
    a ``2 * part * part``-channel position-sensitive map (zero-initialised, so training starts
    without deformation), PS-pooled per RoI it gives class-agnostic normalised offsets
    ``Tensor[K, 2, part, part]``; the thin ``ps_channels * P * P`` map is then pooled with them
    (``trans_std`` scales offsets by the RoI size) and feeds the fc head.
    """

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS,
        output_size: int = 7, ps_channels: int = 10, part_size: int | None = None,
        sample_per_part: int = 2, trans_std: float = 0.1, kernel_size: int = 1,
    ) -> None:
        super().__init__(in_channels=in_channels, featmap_names=featmap_names,
                         output_size=output_size, out_channels=ps_channels)
        self.part_size = part_size or output_size
        self.sample_per_part = sample_per_part
        self.trans_std = trans_std
        self.thin = thin_map_conv(in_channels, ps_channels * output_size**2, kernel_size)
        self.offset_conv = thin_map_conv(in_channels, 2 * self.part_size**2, kernel_size)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def level_offsets(self, feature: Tensor, rois: Tensor, scale: float) -> tuple[Tensor]:
        """``(offset: Tensor[K, 2, part, part],)`` for ``rois`` on one level; bin ``(ph, pw)``
        uses part cell ``(ph * part // P, pw * part // P)`` and moves by ``trans_std * roi_size
        * offset``. Arguments as for :meth:`pool_level`."""
        part = self.part_size
        return (ops.deform_psroi_pool(
            self.offset_conv(feature), rois, output_dim=2, group_size=part, pooled_size=part,
            spatial_scale=scale, sample_per_part=self.sample_per_part),)

    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        p, (offset,) = self.output_size[0], self.level_offsets(feature, rois, scale)
        return ops.deform_psroi_pool(
            self.thin(feature), rois, offset,
            output_dim=self.out_channels, group_size=p, pooled_size=p, spatial_scale=scale,
            part_size=self.part_size, sample_per_part=self.sample_per_part,
            trans_std=self.trans_std)

    def bin_layout(self, features: dict[str, Tensor], boxes_per_image: list[Tensor]) -> BinLayout:
        """The ``P x P`` bins, each moved by ``trans_std * roi_size`` times its part cell's
        offset."""
        rois = ops.boxes_to_rois(boxes_per_image)
        (offset,) = pool_by_level(features, rois, self.featmap_names, self.level_offsets)
        p = self.output_size[0]
        cell = torch.arange(p, device=offset.device) * self.part_size // p  # part cell of each bin
        offset = offset[:, :, cell][:, :, :, cell]
        return BinLayout.from_offsets(rois[:, 1:], offset, self.trans_std)
