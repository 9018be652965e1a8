"""Precise RoI pooling (IoU-Net, Jiang et al., ECCV 2018): the exact average of the bilinear
interpolant of the feature map over each bin, differentiable in the RoI coordinates.

The bilinear interpolant is ``f(y, x) = sum_ij v[i, j] * tent(y - i) * tent(x - j)`` with
``tent(t) = max(0, 1 - |t|)`` and ``v = 0`` outside the map, so its integral over a bin
``[ya, yb] x [xa, xb]`` is separable: pixel ``(i, j)`` enters with weight ``Ty_i * Tx_j`` where
``Ty_i = integral of tent(y - i) over [ya, yb]`` (closed form below). A bin is therefore a weighted
sum of the pixels under it, one table row per pixel: the weighted-gather kernel of
``_sampling.py`` with ``weights = Ty * Tx / area``; autograd through the weights gives the gradient
with respect to the RoI coordinates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.ops._checks import RoIs, as_roi_tensor, check_input, compute_dtype, pair
from detkit.ops._sampling import SampleLayout, SampleSlice, bag_sum, pool_chunks


def _tent_antiderivative(t: Tensor) -> Tensor:
    """``integral of max(0, 1 - |u|) du over (-inf, t]``: 0 below -1, 1 above 1, piecewise
    quadratic between; continuously differentiable (its derivative is the tent)."""
    u = t.clamp(-1.0, 1.0)
    return torch.where(u <= 0, 0.5 * (u + 1.0) ** 2, 1.0 - 0.5 * (1.0 - u) ** 2)


def _pixel_span(start: Tensor, end: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """First pixel and number of pixels whose tent overlaps ``[start, end]`` along one axis.

    Pixel ``j`` overlaps when ``j - 1 < end`` and ``j + 1 > start``: ``j`` in ``[floor(start),
    ceil(end)]``, clipped to the map ``[0, size - 1]`` (pixels outside it are 0).
    """
    first = start.floor().clamp(0, size - 1)
    last = end.ceil().clamp(0, size - 1)
    return first.long(), (last - first + 1).clamp(min=0).long()


def _prroi_pool_rows(
    table: Tensor, rois: Tensor, feature_size: tuple[int, int], output_size: tuple[int, int],
    spatial_scale: float,
) -> Tensor:
    """Pool ``K`` RoIs over ``table: Tensor[N * H * W, C]``; returns ``Tensor[K * PH * PW, C]``."""
    height, width = feature_size
    ph_count, pw_count = output_size
    dtype = rois.dtype
    if rois.shape[0] == 0:  # keep the graph to both the features and the RoIs
        return table.new_zeros((0, table.shape[1])) + table[:0].sum() + rois[:0].sum()
    # A RoI with a NaN or infinite coordinate pools to zeros and passes no NaN to any gradient.
    finite = torch.isfinite(rois[:, 1:]).all(dim=1)
    coords = torch.where(finite[:, None], rois[:, 1:], 0.0) * spatial_scale  # no half-pixel shift
    bin_w = (coords[:, 2] - coords[:, 0]).clamp(min=0.0) / pw_count
    bin_h = (coords[:, 3] - coords[:, 1]).clamp(min=0.0) / ph_count
    area = bin_w * bin_h
    positive = area > 0
    # 1 / area, and 0 for a bin of zero area (no 0 * inf in the backward either)
    inv_area = torch.where(positive, 1.0 / torch.where(positive, area, 1.0), 0.0) * finite
    y_start = coords[:, 1, None] + bin_h[:, None] * torch.arange(ph_count, dtype=dtype,
                                                                 device=rois.device)
    x_start = coords[:, 0, None] + bin_w[:, None] * torch.arange(pw_count, dtype=dtype,
                                                                 device=rois.device)
    y_end = y_start + bin_h[:, None]  # (K, PH)
    x_end = x_start + bin_w[:, None]  # (K, PW)
    first_y, count_y = _pixel_span(y_start.detach(), y_end.detach(), height)
    first_x, count_x = _pixel_span(x_start.detach(), x_end.detach(), width)
    layout = SampleLayout(output_size, count_y.amax(dim=1), count_x.amax(dim=1))
    row_base = rois[:, 0].detach().long() * (height * width)

    def pool_slice(sl: SampleSlice) -> Tensor:
        # sample (iy, ix) of bin (ph, pw) is pixel (first_y + iy, first_x + ix)
        jy = first_y[sl.roi, sl.ph] + sl.iy
        jx = first_x[sl.roi, sl.pw] + sl.ix
        inside = (jy < height) & (jx < width)
        jy, jx = jy.clamp(max=height - 1), jx.clamp(max=width - 1)
        fy, fx = jy.to(dtype), jx.to(dtype)
        wy = (_tent_antiderivative(y_end[sl.roi, sl.ph] - fy)
              - _tent_antiderivative(y_start[sl.roi, sl.ph] - fy))
        wx = (_tent_antiderivative(x_end[sl.roi, sl.pw] - fx)
              - _tent_antiderivative(x_start[sl.roi, sl.pw] - fx))
        weight = wy * wx * inv_area[sl.roi] * inside
        index = row_base[sl.roi] + jy * width + jx
        return bag_sum(table, index[:, None], weight[:, None], sl.bag_offsets)

    return pool_chunks(layout, pool_slice, merge=torch.add)


def prroi_pool(
    input: Tensor, rois: RoIs, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """Precise RoI pooling (PrRoIPool, IoU-Net), with the reference implementation's semantics.

    - RoI corners are multiplied by ``spatial_scale`` (no half-pixel shift); width and height are
      at least 0; bin ``(ph, pw)`` is ``[y1 + ph * bh, y1 + (ph + 1) * bh] x [x1 + pw * bw, ...]``
      with ``bh = roi_h / PH``, ``bw = roi_w / PW`` in feature-map pixels.
    - Output = the exact integral of the bilinear interpolant of the map over the bin, divided by
      the bin's area; a bin of zero area gives 0. No sampling grid, no ``sampling_ratio``.
    - The map is 0 outside ``[0, H - 1] x [0, W - 1]``, so the interpolant falls off linearly to 0
      over the one-pixel border cell and is 0 beyond it.

    Unlike the other detkit ops, gradients flow to ``rois`` as well as to ``input`` (the reason
    IoU-Net uses it: boxes can be refined by gradient ascent). Give ``rois`` (the coordinate
    columns) ``requires_grad=True`` to get them; with ``requires_grad=False`` nothing changes. The
    batch-index column gets no gradient. A RoI with a NaN or infinite coordinate pools to zeros
    and its coordinate gradient is 0; other RoIs are unaffected.

    Args:
        input, rois, output_size, spatial_scale: as in :func:`detkit.ops.roi_align`
            (``Tensor[N, C, H, W]``; ``Tensor[K, 5]`` or a list of ``Tensor[L_i, 4]``; ...).

    Returns:
        ``Tensor[K, C, PH, PW]`` in the input's dtype (half/bfloat16 accumulate in float32).
    """
    check_input(input)
    output_size = pair(output_size, "output_size")
    roi_tensor = as_roi_tensor(rois, input, keep_grad=True)
    n, c, h, w = input.shape
    dtype = compute_dtype(input.dtype)
    with torch.autocast(device_type=input.device.type, enabled=False):
        table = input.to(dtype).permute(0, 2, 3, 1).reshape(n * h * w, c)
        pooled = _prroi_pool_rows(table, roi_tensor.to(dtype), (h, w), output_size, spatial_scale)
    out = pooled.view(roi_tensor.shape[0], *output_size, c).permute(0, 3, 1, 2)
    return out.to(input.dtype)
