"""Learned-sampling extractors: deformable and modulated deformable RoI pooling, position-sensitive
RoIAlign, and deformable position-sensitive RoI pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detkit import ops
from detkit.models.roi_extractors.base import (
    RoIExtractor,
    check_featmap_names,
    pool_by_level,
    scale_of,
)
from detkit.models.roi_extractors.pooling import FPN_LEVELS


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

    modulated = False

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS,
        output_size: int = 7, sampling_ratio: int = 2, gamma: float = 0.1,
        offset_fc_channels: int = 1024,
    ) -> None:
        super().__init__()
        self.featmap_names = check_featmap_names(featmap_names)
        self.out_channels = in_channels
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.gamma = gamma
        bins = output_size * output_size
        self.offset_fc = _fc_stack(in_channels * bins, offset_fc_channels, 2 * bins, layers=3)
        # DCNv2's modulation: sigmoid of a zero-initialised FC -> every bin starts at 0.5
        self.mask_fc = (_fc_stack(in_channels * bins, offset_fc_channels, bins, layers=2)
                        if self.modulated else None)

    def forward(self, features: dict[str, Tensor], boxes_per_image: list[Tensor],
                image_sizes: list[tuple[int, int]]) -> Tensor:
        return self.forward_with_offsets(features, boxes_per_image)[0]

    def forward_with_offsets(
        self, features: dict[str, Tensor], boxes_per_image: list[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Pooled features plus what moved them.

        Returns:
            ``(pooled: Tensor[K, C, P, P], offset: Tensor[K, 2, P, P], mask: Tensor[K, 1, P, P]
            or None)``; bin ``(ph, pw)`` of RoI ``k`` moved by ``gamma * roi_size * offset``.
        """
        size = self.output_size

        def pool(name: str, rois: Tensor) -> tuple[Tensor, ...]:
            feature, scale = features[name], scale_of(name)
            plain = ops.deform_roi_pool(feature, rois, output_size=size, spatial_scale=scale,
                                        sampling_ratio=self.sampling_ratio)
            flat = plain.flatten(1)
            offset = self.offset_fc(flat).view(-1, 2, *size)
            mask = None
            if self.mask_fc is not None:
                mask = torch.sigmoid(self.mask_fc(flat)).view(-1, 1, *size)
            pooled = ops.deform_roi_pool(feature, rois, offset, mask, output_size=size,
                                         spatial_scale=scale, sampling_ratio=self.sampling_ratio,
                                         gamma=self.gamma)
            return (pooled, offset) if mask is None else (pooled, offset, mask)

        results = pool_by_level(features, ops.boxes_to_rois(boxes_per_image), self.featmap_names,
                                pool)
        return results[0], results[1], results[2] if self.modulated else None


class ModulatedDeformRoIPoolExtractor(DeformRoIPoolExtractor):
    """Modulated deformable RoI pooling (``mdeform_roi_pool``; DCNv2): the deformable extractor
    plus a sigmoid mask branch that weights each bin (mmdetection's ModulatedDeformRoIPoolPack)."""

    modulated = True


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
        super().__init__()
        self.featmap_names = check_featmap_names(featmap_names)
        self.out_channels = ps_channels
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.thin = nn.Conv2d(in_channels, ps_channels * output_size * output_size, kernel_size,
                              padding=kernel_size // 2)

    def forward(self, features: dict[str, Tensor], boxes_per_image: list[Tensor],
                image_sizes: list[tuple[int, int]]) -> Tensor:
        def pool(name: str, rois: Tensor) -> Tensor:
            return ops.ps_roi_align(self.thin(features[name]), rois, self.output_size,
                                    scale_of(name), self.sampling_ratio)

        return pool_by_level(features, ops.boxes_to_rois(boxes_per_image), self.featmap_names, pool)


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
        super().__init__()
        self.featmap_names = check_featmap_names(featmap_names)
        self.out_channels = ps_channels
        self.output_size = (output_size, output_size)
        self.part_size = part_size or output_size
        self.sample_per_part = sample_per_part
        self.trans_std = trans_std
        padding = kernel_size // 2
        self.thin = nn.Conv2d(in_channels, ps_channels * output_size**2, kernel_size,
                              padding=padding)
        self.offset_conv = nn.Conv2d(in_channels, 2 * self.part_size**2, kernel_size,
                                     padding=padding)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, features: dict[str, Tensor], boxes_per_image: list[Tensor],
                image_sizes: list[tuple[int, int]]) -> Tensor:
        return self.forward_with_offsets(features, boxes_per_image)[0]

    def forward_with_offsets(
        self, features: dict[str, Tensor], boxes_per_image: list[Tensor]
    ) -> tuple[Tensor, Tensor, None]:
        """``(pooled: Tensor[K, ps_channels, P, P], offset: Tensor[K, 2, part, part], None)``."""
        p, part = self.output_size[0], self.part_size

        def pool(name: str, rois: Tensor) -> tuple[Tensor, Tensor]:
            feature, scale = features[name], scale_of(name)
            offset = ops.deform_psroi_pool(
                self.offset_conv(feature), rois, output_dim=2, group_size=part, pooled_size=part,
                spatial_scale=scale, sample_per_part=self.sample_per_part)
            pooled = ops.deform_psroi_pool(
                self.thin(feature), rois, offset, output_dim=self.out_channels, group_size=p,
                pooled_size=p, spatial_scale=scale, part_size=part,
                sample_per_part=self.sample_per_part, trans_std=self.trans_std)
            return pooled, offset

        pooled, offset = pool_by_level(features, ops.boxes_to_rois(boxes_per_image),
                                       self.featmap_names, pool)
        return pooled, offset, None
