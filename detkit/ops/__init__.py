"""detkit.ops: RoI pooling operators as pure tensor functions (CPU and CUDA, no compile step).

RoIs are ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, or a list of
``Tensor[L_i, 4]`` xyxy boxes, one per image. Every op returns ``Tensor[K, C, PH, PW]`` (an empty
one for K = 0) and is differentiable with respect to its feature map (and offsets and masks;
``prroi_pool`` also with respect to the RoI coordinates).
"""

from detkit.ops._checks import boxes_to_rois
from detkit.ops.align import deform_roi_pool, ps_roi_align, roi_align
from detkit.ops.deform_psroi_pool import deform_psroi_pool
from detkit.ops.level_mapping import map_levels
from detkit.ops.pool import ps_roi_pool, roi_pool
from detkit.ops.prroi_pool import prroi_pool

__all__ = [
    "boxes_to_rois",
    "deform_psroi_pool",
    "deform_roi_pool",
    "map_levels",
    "prroi_pool",
    "ps_roi_align",
    "ps_roi_pool",
    "roi_align",
    "roi_pool",
]
