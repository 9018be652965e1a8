"""RoIAlign-family operators: ``roi_align``, ``ps_roi_align``, ``deform_roi_pool``.

All three sample each output bin on a RoIAlign grid and average bilinear samples; they differ in
which feature channels a bin reads (all of them, or its position-sensitive group) and in whether
the bins are moved by learned offsets and scaled by a mask. They share ``_align_pool``, built on
the weighted-gather kernel in ``_sampling.py``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torchvision.ops
from torch import Tensor

from detkit._validation import check_choice
from detkit.ops import _sampling
from detkit.ops._checks import (
    RoIs,
    as_roi_tensor,
    check_input,
    check_per_bin,
    compute_dtype,
    finite_rois_call,
    pair,
)
from detkit.ops._sampling import (
    SampleLayout,
    SampleSlice,
    bag_max,
    bag_sum,
    bilinear_corners,
    clamp_samples,
    first_max,
    pool_chunks,
)

Backend = Literal["auto", "detkit", "torchvision"]
PoolMode = Literal["avg", "max"]


def _grid_sizes(size: Tensor, bins: int, sampling_ratio: int) -> Tensor:
    """Samples per bin along one axis: ``sampling_ratio``, or ``ceil(size / bins)`` when <= 0."""
    if sampling_ratio > 0:
        return torch.full(size.shape, sampling_ratio, dtype=torch.long, device=size.device)
    return torch.ceil(size / bins).clamp(min=0).long()


def _roi_boxes(
    rois: Tensor, spatial_scale: float, aligned: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(finite, y1, x1, roi_h, roi_w)``, each ``Tensor[K]``, in feature-map pixels.

    A RoI with a NaN or infinite coordinate is marked not finite and given zero coordinates, so it
    pools to zeros and passes no NaN to any gradient.
    """
    finite = torch.isfinite(rois[:, 1:]).all(dim=1)
    coords = torch.where(finite[:, None], rois[:, 1:], 0.0)
    shift = 0.5 if aligned else 0.0
    x1 = coords[:, 0] * spatial_scale - shift
    y1 = coords[:, 1] * spatial_scale - shift
    roi_w = coords[:, 2] * spatial_scale - shift - x1
    roi_h = coords[:, 3] * spatial_scale - shift - y1
    if not aligned:  # legacy RoIAlign forces malformed RoIs to 1x1
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    return finite, y1, x1, roi_h, roi_w


def _deform_bins(
    y1: Tensor, x1: Tensor, roi_h: Tensor, roi_w: Tensor, scale: Tensor, bins: int,
    offset: Tensor | None, mask: Tensor | None, gamma: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin start ``(y, x)`` and sample weight, each ``Tensor[K * P]``, from per-RoI
    ``Tensor[K]`` values, ``offset: Tensor[K, 2, PH, PW]`` and ``mask: Tensor[K, 1, PH, PW]``.

    mmcv DeformRoIPool: the whole bin moves by ``gamma * roi_size * offset``; DCNv2: the mask
    multiplies the bin. A NaN or infinite offset or mask entry zeroes its bin only and passes no
    NaN to any gradient (``torch.where`` gives the masked-out entry a zero gradient).
    """
    num_rois = y1.shape[0]
    start_y = y1[:, None].expand(num_rois, bins)
    start_x = x1[:, None].expand(num_rois, bins)
    scale = scale[:, None].expand(num_rois, bins)
    if offset is not None:
        offset_ok = torch.isfinite(offset).all(dim=1, keepdim=True)
        offset = torch.where(offset_ok, offset, 0.0)
        start_x = start_x + gamma * roi_w[:, None] * offset[:, 0].reshape(num_rois, bins)
        start_y = start_y + gamma * roi_h[:, None] * offset[:, 1].reshape(num_rois, bins)
        scale = scale * offset_ok.reshape(num_rois, bins)
    if mask is not None:
        mask = mask.reshape(num_rois, bins)
        scale = scale * torch.where(torch.isfinite(mask), mask, 0.0)
    return start_y.reshape(-1), start_x.reshape(-1), scale.reshape(-1)


def _align_pool(
    table: Tensor, row_base: Tensor, rois: Tensor, feature_size: tuple[int, int],
    output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int, aligned: bool,
    offset: Tensor | None = None, mask: Tensor | None = None, gamma: float = 0.0,
    mode: PoolMode = "avg",
) -> Tensor:
    """RoIAlign-style pooling of ``K`` RoIs; returns ``Tensor[K * PH * PW, C]`` (bins in row order).

    ``row_base: Tensor[K, PH * PW]`` is the table row of pixel (0, 0) that each bin reads.
    Samples follow torchvision's RoIAlign (and mmcv's DeformRoIPool): a bin of size ``bh x bw``
    starting at ``(y1, x1)`` (plus ``gamma * roi_size * offset``) has samples at ``y1 + (ph + (iy
    + 0.5) / gh) * bh``; a sample outside ``[-1, H] x [-1, W]`` counts as 0 (in the average, or
    as a candidate for the max). Samples are generated and pooled in chunks (``pool_chunks``), so
    memory is bounded for any RoI size.
    """
    height, width = feature_size
    ph_count, pw_count = output_size
    bins = ph_count * pw_count
    num_rois, dtype = rois.shape[0], rois.dtype
    if num_rois == 0:
        return table.new_zeros((0, table.shape[1])) + table[:0].sum()  # keeps the graph
    finite, y1, x1, roi_h, roi_w = _roi_boxes(rois, spatial_scale, aligned)
    bin_w = roi_w / pw_count
    bin_h = roi_h / ph_count
    grid_h = _grid_sizes(roi_h.detach(), ph_count, sampling_ratio)
    grid_w = _grid_sizes(roi_w.detach(), pw_count, sampling_ratio)
    layout = SampleLayout(output_size, grid_h, grid_w)

    scale = finite.to(dtype)
    if mode == "avg":
        scale = scale / (grid_h * grid_w).clamp(min=1).to(dtype)
    start_y, start_x, scale = _deform_bins(y1, x1, roi_h, roi_w, scale, bins, offset, mask, gamma)
    row_base = row_base.reshape(-1)

    def pool_slice(sl: SampleSlice) -> Tensor:
        fy = sl.ph.to(dtype) + (sl.iy.to(dtype) + 0.5) / grid_h[sl.roi].to(dtype)
        fx = sl.pw.to(dtype) + (sl.ix.to(dtype) + 0.5) / grid_w[sl.roi].to(dtype)
        ys = start_y[sl.bag] + fy * bin_h[sl.roi]
        xs = start_x[sl.bag] + fx * bin_w[sl.roi]
        valid, ys, xs = clamp_samples(ys, xs, height, width, margin=1.0)
        index, weight = bilinear_corners(row_base[sl.bag], ys, xs, scale[sl.bag] * valid, height,
                                         width)
        if mode == "avg":
            return bag_sum(table, index, weight, sl.bag_offsets)
        one_per_sample = torch.arange(index.shape[0], device=index.device)
        return bag_max(bag_sum(table, index, weight, one_per_sample), sl)

    if mode == "avg":
        return pool_chunks(layout, pool_slice, merge=torch.add)
    limit = max(1, min(_sampling.MAX_SAMPLES_PER_CHUNK,
                       _sampling.MAX_VALUES_PER_CHUNK // table.shape[1]))
    return pool_chunks(layout, pool_slice, merge=first_max, limit=limit)


def _pool_nchw(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
    sampling_ratio: int, aligned: bool, offset: Tensor | None = None, mask: Tensor | None = None,
    gamma: float = 0.0, mode: PoolMode = "avg",
) -> Tensor:
    """RoIAlign over all channels with detkit's kernel; ``Tensor[K, C, PH, PW]`` in input dtype.

    The result is a channels-last view of the ``(K, PH, PW, C)`` kernel output (no copy).
    """
    n, c, h, w = input.shape
    num_rois = rois.shape[0]
    dtype = compute_dtype(input.dtype)
    with torch.autocast(device_type=input.device.type, enabled=False):
        table = input.to(dtype).permute(0, 2, 3, 1).reshape(n * h * w, c)
        rois = rois.to(dtype)
        bins = output_size[0] * output_size[1]
        row_base = (rois[:, 0].long() * (h * w))[:, None].expand(num_rois, bins)
        pooled = _align_pool(
            table, row_base, rois, (h, w), output_size, spatial_scale, sampling_ratio, aligned,
            None if offset is None else offset.to(dtype), None if mask is None else mask.to(dtype),
            gamma, mode,
        )
    out = pooled.view(num_rois, *output_size, c).permute(0, 3, 1, 2)
    return out.to(input.dtype)


def _use_detkit(backend: Backend, input: Tensor) -> bool:
    check_choice("backend", backend, ("auto", "detkit", "torchvision"))
    # auto: detkit's kernel where it was measured faster (CPU: tools/benchmark_ops.py); on CUDA
    # torchvision's fused kernels until a GPU run shows otherwise.
    return backend == "detkit" or (backend == "auto" and input.device.type == "cpu")


def roi_align(
    input: Tensor, rois: RoIs, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
    sampling_ratio: int = -1, aligned: bool = False, *, mode: PoolMode = "avg",
    backend: Backend = "auto",
) -> Tensor:
    """RoIAlign (Mask R-CNN), same arguments and results as ``torchvision.ops.roi_align``.

    ``mode="max"`` is mmcv's ``RoIAlign(pool_mode="max")``: each bin is the largest of its
    bilinearly interpolated samples (a sample outside ``[-1, H] x [-1, W]`` is a 0 candidate)
    instead of their mean, per channel. The gradient goes to the first maximal sample, as in
    mmcv; a bin without samples (a zero-size RoI with ``aligned=True`` and adaptive sampling)
    gives 0 where mmcv writes ``-FLT_MAX``. torchvision has no max mode, so ``mode="max"`` always
    runs detkit's kernel (on CPU and CUDA).

    Args:
        input: ``Tensor[N, C, H, W]`` feature map.
        rois: ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, or a list
            of ``Tensor[L_i, 4]`` xyxy boxes, one per image.
        output_size: ``(PH, PW)`` or ``P``.
        spatial_scale: feature-map size / image size (1 / stride).
        sampling_ratio: samples per bin along each axis; ``<= 0`` means ``ceil(roi_size / P)``
            (any RoI size: samples are pooled in chunks of bounded memory).
        aligned: shift RoI corners by -0.5 pixel (Detectron2's ``ROIAlignV2``).
        mode: ``"avg"`` (torchvision's RoIAlign) or ``"max"`` (mmcv's max mode).
        backend: ``"detkit"`` (weighted-gather kernel), ``"torchvision"``, or ``"auto"`` (detkit
            on CPU, where it is faster, and for ``mode="max"``; torchvision on CUDA).

    Returns:
        ``Tensor[K, C, PH, PW]`` in the input's dtype; half/bfloat16 accumulate in float32.
        Gradients flow to ``input`` (not to ``rois``); a RoI with a NaN or infinite coordinate
        pools to zeros and passes no NaN to any gradient.
    """
    check_input(input)
    output_size = pair(output_size, "output_size")
    roi_tensor = as_roi_tensor(rois, input)
    check_choice("mode", mode, ("avg", "max"))
    use_detkit = _use_detkit(backend, input)
    if mode == "max" and backend == "torchvision":
        raise ValueError("mode='max' needs backend 'detkit' or 'auto': torchvision's roi_align "
                         "has no max mode")
    if not use_detkit and mode == "avg":
        return finite_rois_call(torchvision.ops.roi_align, input, roi_tensor, output_size,
                                spatial_scale, sampling_ratio, aligned)
    return _pool_nchw(input, roi_tensor, output_size, spatial_scale, sampling_ratio, aligned,
                      mode=mode)


def ps_roi_align(
    input: Tensor, rois: RoIs, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
    sampling_ratio: int = -1, *, backend: Backend = "auto",
) -> Tensor:
    """Position-sensitive RoIAlign (R-FCN / Light-Head R-CNN), as ``torchvision.ops.ps_roi_align``.

    Output channel ``c`` of bin ``(ph, pw)`` reads input channel ``(c * PH + ph) * PW + pw``;
    sampling is RoIAlign's with ``aligned=True`` (torchvision's convention for this op).

    Args:
        input: ``Tensor[N, D * PH * PW, H, W]``.
        rois, output_size, spatial_scale, sampling_ratio, backend: as in :func:`roi_align`.

    Returns:
        ``Tensor[K, D, PH, PW]`` in the input's dtype.
    """
    check_input(input)
    output_size = pair(output_size, "output_size")
    bins = output_size[0] * output_size[1]
    n, c, h, w = input.shape
    if c % bins:
        raise ValueError(
            f"input has {c} channels, not divisible by output_size[0] * output_size[1] = {bins}"
        )
    roi_tensor = as_roi_tensor(rois, input)
    if not _use_detkit(backend, input):
        return finite_rois_call(torchvision.ops.ps_roi_align, input, roi_tensor, output_size,
                                spatial_scale, sampling_ratio)
    num_rois, depth = roi_tensor.shape[0], c // bins
    dtype = compute_dtype(input.dtype)
    with torch.autocast(device_type=input.device.type, enabled=False):
        # rows ordered (bin, image, y, x): bin p of RoI k reads block p*N + batch_index
        table = input.to(dtype).view(n, depth, bins, h, w).permute(2, 0, 3, 4, 1)
        table = table.reshape(bins * n * h * w, depth)
        rois32 = roi_tensor.to(dtype)
        bin_index = torch.arange(bins, device=input.device)
        row_base = (bin_index[None, :] * n + rois32[:, 0].long()[:, None]) * (h * w)
        pooled = _align_pool(table, row_base, rois32, (h, w), output_size, spatial_scale,
                             sampling_ratio, aligned=True)
    return pooled.view(num_rois, *output_size, depth).permute(0, 3, 1, 2).to(input.dtype)


def deform_roi_pool(
    input: Tensor, rois: RoIs, offset: Tensor | None = None, mask: Tensor | None = None, *,
    output_size: int | tuple[int, int], spatial_scale: float = 1.0, sampling_ratio: int = 0,
    gamma: float = 0.1,
) -> Tensor:
    """Deformable RoI pooling (DCNv1) and, with ``mask``, modulated deformable RoI pooling (DCNv2).

    Semantics of mmcv's ``DeformRoIPool`` / ``ModulatedDeformRoIPoolPack`` ops: RoIAlign sampling
    with ``aligned=True``; bin ``(ph, pw)`` of RoI ``k`` moves by ``gamma * roi_w * offset[k, 0,
    ph, pw]`` along x and ``gamma * roi_h * offset[k, 1, ph, pw]`` along y (RoI size in feature-map
    pixels); the bin's average is multiplied by ``mask[k, 0, ph, pw]``. With no offset (or zeros)
    it equals ``torchvision.ops.roi_align(..., aligned=True)``.

    Gradients flow to ``input``, ``offset`` and ``mask`` (not to ``rois``). At a clamped border
    sample the gradient is the true one (0 along the clamped axis), so gradcheck holds.

    Args:
        input: ``Tensor[N, C, H, W]``.
        rois: ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, or a list
            of ``Tensor[L_i, 4]``.
        offset: ``Tensor[K, 2, PH, PW]``, channel 0 = x, 1 = y, in units of ``gamma * roi_size``.
            A bin whose offset is NaN or infinite pools to 0; other bins and RoIs are unaffected
            and every gradient stays finite (that entry's gradient is 0).
        mask: ``Tensor[K, 1, PH, PW]``, usually a sigmoid output; a NaN or infinite entry makes
            its bin 0, in the same way.
        output_size: ``(PH, PW)`` or ``P``.
        spatial_scale: 1 / stride of ``input``.
        sampling_ratio: samples per bin per axis; ``0`` means ``ceil(roi_size / P)``.
        gamma: offset scale.

    Returns:
        ``Tensor[K, C, PH, PW]`` in the input's dtype (half/bfloat16 accumulate in float32).
    """
    check_input(input)
    output_size = pair(output_size, "output_size")
    roi_tensor = as_roi_tensor(rois, input)
    check_per_bin(offset, "offset", 2, roi_tensor.shape[0], output_size)
    check_per_bin(mask, "mask", 1, roi_tensor.shape[0], output_size)
    if not math.isfinite(gamma):
        raise ValueError(f"gamma must be finite, got {gamma}")
    return _pool_nchw(input, roi_tensor, output_size, spatial_scale, sampling_ratio, True,
                      offset, mask, gamma)
