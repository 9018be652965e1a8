"""Level-mapped extractors whose bins are RoIAlign's, recombined by learned sigmoid gates:
mixed average/max pooling (``mixed_pool``) and channel + spatial attention (``attention_pool``).

Both keep the regular bin grid (they learn *how much* of each value to keep, not where to sample)
and start from a known state: every gate is ``sigmoid(0) = 0.5`` at initialisation (zero-initialised
gate parameters), the convention of DCNv2's modulation in ``mdeform_roi_pool``. At 0.5 the sigmoid
is steepest (slope 1/4), so a gate can learn in either direction at once; a gate started near 1
(a large positive bias) would start as plain pooling but in the saturated part of the sigmoid,
learning several times slower. The uniform 0.5 is a constant scale the box head's first linear
layer absorbs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from detkit import ops
from detkit._validation import check_choice
from detkit.models.roi_extractors.base import FPN_LEVELS
from detkit.models.roi_extractors.level_mapped import RoIAlignExtractor


class MixedPoolExtractor(RoIAlignExtractor):
    """Mixed average/max RoIAlign pooling, level-mapped (``mixed_pool``).

    Each bin's RoIAlign samples (``sampling_ratio`` per axis) are pooled twice, by their mean
    (torchvision's RoIAlign) and by their maximum (mmcv's max mode, ``ops.roi_align(...,
    mode="max")``), and combined:

    - ``mode="gate"``: ``a_c * max + (1 - a_c) * avg`` with a learned per-channel mixing
      proportion ``a_c = sigmoid(gate_logit_c)`` (mixed max-average pooling, Lee, Gallagher and
      Tu, AISTATS 2016, eq. (1), one proportion per channel; the sigmoid keeps it in ``[0, 1]``).
      ``gate_logit`` starts at zero: an even mix.
    - ``mode="concat"``: ``[avg, max]`` along channels, ``2 * in_channels`` outputs, no parameters
      (the box head's first layer learns the mix, per bin as well as per channel).

    Args:
        in_channels, featmap_names, output_size, sampling_ratio, aligned: as for
            :class:`RoIAlignExtractor` (same defaults, so ``avg`` is exactly ``roi_align``).
        mode: ``"gate"`` or ``"concat"``.

    Output: ``Tensor[K, C, P, P]`` (gate) or ``Tensor[K, 2C, P, P]`` (concat).
    """

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS,
        output_size: int = 7, sampling_ratio: int = 2, aligned: bool = False,
        mode: Literal["gate", "concat"] = "gate",
    ) -> None:
        check_choice("mode", mode, ("gate", "concat"))
        super().__init__(in_channels=in_channels, featmap_names=featmap_names,
                         output_size=output_size, sampling_ratio=sampling_ratio, aligned=aligned)
        self.mode = mode
        self.gate_logit = None
        if mode == "concat":
            self.out_channels = 2 * in_channels
        else:
            self.gate_logit = nn.Parameter(torch.zeros(in_channels))  # sigmoid(0) = 0.5

    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        avg = super().pool_level(feature, rois, scale)
        peak = ops.roi_align(feature, rois, self.output_size, scale, self.sampling_ratio,
                             self.aligned, mode="max")
        if self.gate_logit is None:
            return torch.cat([avg, peak], dim=1)
        gate = torch.sigmoid(self.gate_logit).to(avg.dtype)[None, :, None, None]
        return avg + gate * (peak - avg)  # = gate * max + (1 - gate) * avg


class AttentionPoolExtractor(RoIAlignExtractor):
    """RoIAlign reweighted by channel and spatial attention, level-mapped (``attention_pool``).

    CBAM's order (Woo et al., ECCV 2018): the pooled RoI ``x: Tensor[K, C, P, P]`` is first
    scaled per channel, then per bin.

    - Channel (``channel=True``): squeeze-and-excitation (Hu et al., CVPR 2018) over the RoI:
      ``sigmoid(W2 relu(W1 mean_bins(x)))``, hidden width ``C // reduction`` (SE's reduction 16).
    - Spatial (``spatial=True``): CBAM's spatial attention, a ``k x k`` convolution over the
      channel-wise mean and max maps ``[2, P, P]`` giving one sigmoid weight per bin. CBAM uses
      ``k = 7`` on whole feature maps; on a 7 x 7 bin grid a 3 x 3 kernel (``spatial_kernel``)
      already sees a bin's neighbours. No BatchNorm after it (CBAM has one): RoI batches and
      from-scratch training, where trainable BatchNorm is unstable.

    The last layer of each branch (``W2``, the spatial convolution) starts at zero, so every
    weight starts at exactly 0.5 (see the module docstring); with both branches off the output is
    exactly :class:`RoIAlignExtractor`'s.

    Args:
        in_channels, featmap_names, output_size, sampling_ratio, aligned: as for
            :class:`RoIAlignExtractor`.
        channel: use the channel (SE) attention.
        spatial: use the spatial (per-bin) attention.
        reduction: SE's reduction ratio (hidden width ``max(1, in_channels // reduction)``).
        spatial_kernel: odd kernel size of the spatial attention's convolution.

    Output: ``Tensor[K, C, P, P]``.
    """

    def __init__(
        self, *, in_channels: int, featmap_names: Sequence[str] = FPN_LEVELS,
        output_size: int = 7, sampling_ratio: int = 2, aligned: bool = False,
        channel: bool = True, spatial: bool = True, reduction: int = 16, spatial_kernel: int = 3,
    ) -> None:
        if reduction < 1:
            raise ValueError(f"reduction must be at least 1, got {reduction}")
        if spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ValueError(f"spatial_kernel must be a positive odd size, got {spatial_kernel}")
        super().__init__(in_channels=in_channels, featmap_names=featmap_names,
                         output_size=output_size, sampling_ratio=sampling_ratio, aligned=aligned)
        self.channel_attention = None
        self.spatial_attention = None
        if channel:
            hidden = max(1, in_channels // reduction)
            excite = nn.Linear(hidden, in_channels)
            self.channel_attention = nn.Sequential(
                nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), _zeroed(excite))
        if spatial:
            self.spatial_attention = _zeroed(
                nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2))

    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        pooled = super().pool_level(feature, rois, scale)
        if self.channel_attention is not None:
            weight = torch.sigmoid(self.channel_attention(pooled.mean(dim=(2, 3))))
            pooled = pooled * weight[:, :, None, None]
        if self.spatial_attention is not None:
            maps = torch.cat([pooled.mean(dim=1, keepdim=True),
                              pooled.amax(dim=1, keepdim=True)], dim=1)
            pooled = pooled * torch.sigmoid(self.spatial_attention(maps))
        return pooled


def _zeroed(layer: nn.Linear | nn.Conv2d) -> nn.Linear | nn.Conv2d:
    """``layer`` with zero weight and bias: the sigmoid after it starts at exactly 0.5."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
