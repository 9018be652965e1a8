"""Max RoI pooling operators, backed by torchvision's C++/CUDA kernels.

Quantized max pooling does not fit the weighted-gather kernel of the bilinear ops (a max has no
per-sample weights), and torchvision's kernels are fast here; detkit adds the argument checks.
"""

from __future__ import annotations

import torchvision.ops
from torch import Tensor

from detkit.ops._checks import RoIs, as_roi_tensor, check_input, finite_rois_call, pair


def roi_pool(
    input: Tensor, rois: RoIs, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """Quantized max RoIPool (Fast R-CNN); ``torchvision.ops.roi_pool`` with argument checks.

    Args:
        input: ``Tensor[N, C, H, W]``.
        rois: ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, or a list
            of ``Tensor[L_i, 4]``.
        output_size: ``(PH, PW)`` or ``P``.
        spatial_scale: 1 / stride of ``input``.

    Returns:
        ``Tensor[K, C, PH, PW]``.
    """
    check_input(input)
    output_size = pair(output_size, "output_size")
    return finite_rois_call(torchvision.ops.roi_pool, input, as_roi_tensor(rois, input),
                            output_size, spatial_scale)


def ps_roi_pool(
    input: Tensor, rois: RoIs, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """Position-sensitive max RoIPool (R-FCN); ``torchvision.ops.ps_roi_pool`` with checks.

    Args:
        input: ``Tensor[N, D * PH * PW, H, W]``.
        rois, output_size, spatial_scale: as in :func:`roi_pool`.

    Returns:
        ``Tensor[K, D, PH, PW]``.
    """
    check_input(input)
    output_size = pair(output_size, "output_size")
    bins = output_size[0] * output_size[1]
    if input.shape[1] % bins:
        raise ValueError(
            f"input has {input.shape[1]} channels, not divisible by output_size[0] * "
            f"output_size[1] = {bins}"
        )
    return finite_rois_call(torchvision.ops.ps_roi_pool, input, as_roi_tensor(rois, input),
                            output_size, spatial_scale)
