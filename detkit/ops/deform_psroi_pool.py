"""Deformable position-sensitive RoI pooling (Deformable ConvNets / Deformable R-FCN)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from detkit.ops._checks import RoIs, as_roi_tensor, check_input, compute_dtype
from detkit.ops._sampling import MAX_SAMPLES_PER_CHUNK, bilinear_bag_sum, clamp_samples


def _round_half_away(x: Tensor) -> Tensor:
    """C's ``round``: halves go away from zero (``torch.round`` rounds them to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _check_offset(
    offset: Tensor | None, num_rois: int, output_dim: int, part_size: int
) -> int:
    """Validate ``offset: Tensor[K, 2 * num_classes, part, part]``; return ``num_classes``."""
    if offset is None:
        return 1
    shape = tuple(offset.shape) if isinstance(offset, Tensor) else None
    if (
        shape is None or len(shape) != 4 or shape[0] != num_rois or shape[1] < 2 or shape[1] % 2
        or shape[2:] != (part_size, part_size)
    ):
        raise ValueError(
            f"offset must have shape (K, 2 * num_classes, part_size, part_size) = ({num_rois}, "
            f"2 * num_classes, {part_size}, {part_size}), got {shape}"
        )
    num_classes = shape[1] // 2
    if output_dim % num_classes:
        raise ValueError(
            f"offset has {num_classes} classes (shape[1] = {shape[1]}), which must divide "
            f"output_dim = {output_dim}"
        )
    return num_classes


def _bin_to_cell(pooled_size: int, cells: int) -> Tensor:
    """``floor(p * cells / pooled_size)`` clamped to ``[0, cells - 1]``, in exact integer math.

    The original computes it in floating point (``p / pooled_size * cells``), which can land one
    ulp below an integer; the integer form is what it means.
    """
    return (torch.arange(pooled_size) * cells // pooled_size).clamp(0, cells - 1)


def _deform_psroi_chunk(
    table: Tensor, rois: Tensor, offset: Tensor | None, *, batch: int,
    feature_size: tuple[int, int],
    num_classes: int, group_size: int, pooled_size: int, part_size: int, spatial_scale: float,
    sample_per_part: int, trans_std: float,
) -> Tensor:
    """Pool ``K`` RoIs; returns ``Tensor[K * num_classes * P * P, D // num_classes]``."""
    height, width = feature_size
    device, dtype = rois.device, rois.dtype
    num_rois, p, s = rois.shape[0], pooled_size, sample_per_part
    finite = torch.isfinite(rois[:, 1:]).all(dim=1)
    corners = _round_half_away(torch.where(finite[:, None], rois[:, 1:], 0.0))
    start = corners[:, :2] * spatial_scale - 0.5
    end = (corners[:, 2:] + 1.0) * spatial_scale - 0.5
    size = (end - start).clamp(min=0.1)  # (K, 2) = roi width, height
    bin_size = size / p
    sub_bin = bin_size / s

    bin_index = torch.arange(p, device=device, dtype=dtype)
    # (K, cls, P, P) bin starts before the offset, in the original's order of operations
    wstart = (bin_index[None, None, None, :] * bin_size[:, 0, None, None, None]
              + start[:, 0, None, None, None])
    hstart = (bin_index[None, None, :, None] * bin_size[:, 1, None, None, None]
              + start[:, 1, None, None, None])
    if offset is not None:
        part = _bin_to_cell(p, part_size).to(device)
        trans = offset.view(num_rois, num_classes, 2, part_size, part_size)
        trans = trans[:, :, :, part][..., part]  # (K, cls, 2, P, P)
        wstart = wstart + trans[:, :, 0] * trans_std * size[:, 0, None, None, None]
        hstart = hstart + trans[:, :, 1] * trans_std * size[:, 1, None, None, None]
    # samples (K, cls, P, P, s, s) at bin_start + i * sub_bin, as the original adds them
    i = torch.arange(s, device=device, dtype=dtype)
    ws = wstart[..., None, None] + i.view(1, 1, 1, 1, 1, s) * sub_bin[:, 0].view(-1, 1, 1, 1, 1, 1)
    hs = hstart[..., None, None] + i.view(1, 1, 1, 1, s, 1) * sub_bin[:, 1].view(-1, 1, 1, 1, 1, 1)
    ws, hs = torch.broadcast_tensors(ws, hs)
    valid, hs, ws = clamp_samples(hs.reshape(-1), ws.reshape(-1), height, width, margin=0.5)
    bins = num_rois * num_classes * p * p
    valid = valid.view(bins, s * s) & finite.repeat_interleave(num_classes * p * p)[:, None]
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)  # samples that counted, per bin
    weight = (valid.to(dtype) / count.to(dtype)).view(-1)

    cell = _bin_to_cell(p, group_size).to(device)
    group = (cell[:, None] * group_size + cell[None, :]).view(1, 1, p, p)  # gh * G + gw
    cls = torch.arange(num_classes, device=device).view(1, -1, 1, 1)
    image = rois[:, 0].long().view(-1, 1, 1, 1)
    # table rows ordered (class, gh, gw, image, y, x)
    row_base = ((cls * group_size**2 + group) * batch + image) * (height * width)
    row_base = row_base[..., None].expand(num_rois, num_classes, p, p, s * s).reshape(-1)
    bag_offsets = torch.arange(bins, device=device) * (s * s)
    return bilinear_bag_sum(table, row_base, hs, ws, weight, bag_offsets, height, width)


def deform_psroi_pool(
    input: Tensor, rois: RoIs, offset: Tensor | None = None, *, output_dim: int, group_size: int,
    pooled_size: int, spatial_scale: float = 1.0, part_size: int | None = None,
    sample_per_part: int = 4, trans_std: float = 0.0,
) -> Tensor:
    """Deformable PS RoI pooling: the original Deformable ConvNets ``DeformablePSROIPooling``.

    - RoI corners rounded (half away from zero), end + 1, both times ``spatial_scale``, minus 0.5;
      RoI width and height at least 0.1; ``bin = roi_size / pooled_size``.
    - Sub-samples at ``bin_start + i * bin / sample_per_part`` (no half step); a sample outside
      ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` is skipped and not counted, others are clamped into
      the map and interpolated bilinearly; output = sum / count, 0 when nothing counted.
    - Output channel ``c``, bin ``(ph, pw)`` reads input channel ``(c * G + gh) * G + gw`` with
      ``gh = floor(ph * G / pooled_size)``.
    - ``offset[k, 2 * cls]`` (x) and ``offset[k, 2 * cls + 1]`` (y) at part ``(floor(ph * part /
      pooled_size), ...)`` move the bin start by ``trans_std * offset * roi_size``; output
      channel ``c`` uses class ``c // (output_dim // num_classes)``.
    - ``group_size=1`` gives DCN's (non position-sensitive) deformable RoI pooling.

    Gradients flow to ``input`` and ``offset``; the sample count is piecewise constant. A NaN or
    infinite offset entry moves its bins' samples off the map: those bins pool to 0, other bins
    and RoIs are unaffected, and every gradient stays finite (as for a NaN RoI).

    Args:
        input: ``Tensor[N, output_dim * group_size**2, H, W]``.
        rois: ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, or a list
            of ``Tensor[L_i, 4]``.
        offset: ``Tensor[K, 2 * num_classes, part_size, part_size]`` or None (the no-offset pass
            that feeds the offset predictor).

    Returns:
        ``Tensor[K, output_dim, pooled_size, pooled_size]`` in the input's dtype.
    """
    check_input(input)
    for name, value in (("output_dim", output_dim), ("group_size", group_size),
                        ("pooled_size", pooled_size), ("sample_per_part", sample_per_part)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    part_size = pooled_size if part_size is None else part_size
    if part_size < 1:
        raise ValueError(f"part_size must be a positive integer, got {part_size}")
    if not math.isfinite(trans_std):
        raise ValueError(f"trans_std must be finite, got {trans_std}")
    n, channels, h, w = input.shape
    if channels % (group_size * group_size):
        raise ValueError(
            f"input has {channels} channels, not divisible by group_size**2 = {group_size**2}"
        )
    if channels != output_dim * group_size**2:
        raise ValueError(
            f"input has {channels} channels but output_dim * group_size**2 = "
            f"{output_dim} * {group_size**2} = {output_dim * group_size**2}"
        )
    roi_tensor = as_roi_tensor(rois, input)
    num_rois = roi_tensor.shape[0]
    num_classes = _check_offset(offset, num_rois, output_dim, part_size)
    depth = output_dim // num_classes
    dtype = compute_dtype(input.dtype)
    with torch.autocast(device_type=input.device.type, enabled=False):
        table = input.to(dtype).view(n, num_classes, depth, group_size**2, h, w)
        table = table.permute(1, 3, 0, 4, 5, 2).reshape(-1, depth)
        rois32 = roi_tensor.to(dtype)
        off = None if offset is None else offset.to(dtype)
        per_roi = num_classes * pooled_size**2 * sample_per_part**2
        step = max(1, MAX_SAMPLES_PER_CHUNK // per_roi)
        parts = [
            _deform_psroi_chunk(
                table, rois32[i : i + step], None if off is None else off[i : i + step],
                batch=n, feature_size=(h, w), num_classes=num_classes, group_size=group_size,
                pooled_size=pooled_size, part_size=part_size, spatial_scale=spatial_scale,
                sample_per_part=sample_per_part, trans_std=trans_std,
            )
            for i in range(0, num_rois, step)
        ]
        if not parts:
            pooled = table.new_zeros((0, depth)) + table[:0].sum()
        else:
            pooled = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    out = pooled.view(num_rois, num_classes, pooled_size, pooled_size, depth)
    out = out.permute(0, 1, 4, 2, 3).reshape(num_rois, output_dim, pooled_size, pooled_size)
    return out.to(input.dtype)
