"""The one kernel behind every bilinear RoI operator: a weighted gather of feature rows.

Every bilinear RoI pooling variant (RoIAlign, position-sensitive RoIAlign, deformable and
modulated deformable RoI pooling, deformable PS RoI pooling) computes, for each output bin, a
weighted sum of feature-map pixels: each sample point contributes its four bilinear corners with
weights ``bilinear * scale``. With the feature map laid out as a table of rows (one row per pixel,
``C`` values wide) that is exactly ``F.embedding_bag(mode="sum", per_sample_weights=...)``:

- forward: one fused gather-multiply-add over the table, no ``K x C x PH x PW x samples x 4``
  intermediate (the table row is read straight into the bin's accumulator);
- backward to the features: embedding_bag's dense backward (a sorted scatter-add, memory in the
  number of samples, not samples x C);
- backward to the per-sample weights: one dot product per corner, from which autograd carries the
  gradient through the bilinear weights to the sample positions, hence to offsets and masks.

It is plain PyTorch (no compile step), runs wherever embedding_bag runs (CPU and CUDA), and on a
2-core CPU it is several times faster than torchvision's C++ RoIAlign, whose backward recomputes
the bilinear coefficients for every channel (``tools/benchmark_ops.py`` measures it).

Samples are flat: sample ``s`` belongs to bag ``bag[s]`` (one bag per output bin); bags hold
consecutive samples, so a bag is described by the offset of its first sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Above this many sample points in one call the RoIs are processed in chunks, which bounds the
# index/weight memory (about 100 bytes per sample point) for huge adaptive sampling grids.
MAX_SAMPLES_PER_CHUNK = 1 << 22


@dataclass(frozen=True)
class SampleGrid:
    """Flat layout of the sample points of ``K`` RoIs, each with ``P`` bins.

    Attributes:
        roi: ``Tensor[T]`` long, RoI index of each sample.
        bag: ``Tensor[T]`` long, bag (= ``roi * P + bin``) of each sample.
        fy, fx: ``Tensor[T]`` position of each sample inside its RoI in bin units: ``ph + (iy +
            0.5) / gh`` for RoIAlign-style grids.
        bag_offsets: ``Tensor[K * P]`` long, index of each bag's first sample.
    """

    roi: Tensor
    bag: Tensor
    fy: Tensor
    fx: Tensor
    bag_offsets: Tensor


def uniform_grid(
    num_rois: int, output_size: tuple[int, int], grid: tuple[int, int], dtype: torch.dtype,
    device: torch.device, centered: bool = True,
) -> SampleGrid:
    """Every bin of every RoI sampled on the same ``grid = (gh, gw)`` sub-grid.

    ``centered=True`` puts samples at ``(i + 0.5) / g`` of the bin (RoIAlign); ``False`` at
    ``i / g`` (Deformable ConvNets' PS RoI pooling, which has no half step).
    """
    ph_count, pw_count = output_size
    gh, gw = grid
    half = 0.5 if centered else 0.0
    sub_y = (torch.arange(gh, dtype=dtype, device=device) + half) / gh
    sub_x = (torch.arange(gw, dtype=dtype, device=device) + half) / gw
    fy = torch.arange(ph_count, dtype=dtype, device=device).view(-1, 1, 1, 1)
    fy = fy + sub_y.view(1, 1, -1, 1)
    fx = torch.arange(pw_count, dtype=dtype, device=device).view(1, -1, 1, 1)
    fx = fx + sub_x.view(1, 1, 1, -1)
    shape = (ph_count, pw_count, gh, gw)
    per_roi = ph_count * pw_count * gh * gw
    bins = num_rois * ph_count * pw_count
    return SampleGrid(
        roi=torch.arange(num_rois, device=device).repeat_interleave(per_roi),
        bag=torch.arange(bins, device=device).repeat_interleave(gh * gw),
        fy=fy.expand(shape).reshape(-1).repeat(num_rois),
        fx=fx.expand(shape).reshape(-1).repeat(num_rois),
        bag_offsets=torch.arange(bins, device=device) * (gh * gw),
    )


def ragged_grid(
    output_size: tuple[int, int], grid_h: Tensor, grid_w: Tensor, dtype: torch.dtype
) -> SampleGrid:
    """RoI ``k`` has its own ``grid_h[k] x grid_w[k]`` sub-grid in each bin (adaptive RoIAlign).

    A RoI with a zero grid has empty bags (they pool to 0, as in torchvision).
    """
    device = grid_h.device
    ph_count, pw_count = output_size
    bins_per_roi = ph_count * pw_count
    num_rois = grid_h.shape[0]
    per_bin = grid_h * grid_w  # (K,)
    per_roi = per_bin * bins_per_roi
    roi = torch.arange(num_rois, device=device).repeat_interleave(per_roi)
    roi_start = torch.cumsum(per_roi, 0) - per_roi
    local = torch.arange(roi.shape[0], device=device) - roi_start[roi]
    n = per_bin[roi]
    bin_index = torch.div(local, n, rounding_mode="floor")
    within = local - bin_index * n
    gw = grid_w[roi]
    iy = torch.div(within, gw, rounding_mode="floor")
    ix = within - iy * gw
    ph = torch.div(bin_index, pw_count, rounding_mode="floor")
    pw = bin_index - ph * pw_count
    bag_sizes = per_bin.repeat_interleave(bins_per_roi)
    return SampleGrid(
        roi=roi,
        bag=roi * bins_per_roi + bin_index,
        fy=ph.to(dtype) + (iy.to(dtype) + 0.5) / grid_h[roi].to(dtype),
        fx=pw.to(dtype) + (ix.to(dtype) + 0.5) / gw.to(dtype),
        bag_offsets=torch.cumsum(bag_sizes, 0) - bag_sizes,
    )


def bilinear_bag_sum(
    table: Tensor, row_base: Tensor, ys: Tensor, xs: Tensor, weight: Tensor, bag_offsets: Tensor,
    height: int, width: int,
) -> Tensor:
    """Sum of weighted bilinear samples per bag.

    Args:
        table: ``Tensor[R, C]``; pixel ``(y, x)`` of sample ``s`` is row ``row_base[s] + y * width
            + x``.
        row_base: ``Tensor[T]`` long.
        ys, xs: ``Tensor[T]`` sample positions in feature-map pixels, already clamped into
            ``[0, height - 1] x [0, width - 1]`` and finite (may require grad).
        weight: ``Tensor[T]`` multiplier of each sample (0 for a sample that contributes nothing).
        bag_offsets: ``Tensor[B]`` long, first sample of each bag; bags are consecutive.

    Returns:
        ``Tensor[B, C]``. Corners follow torchvision's RoIAlign: ``y0 = floor(y)``, ``y1 = min(y0 +
        1, height - 1)``, so at the last row both corners are the last pixel.
    """
    y0 = ys.detach().floor()
    x0 = xs.detach().floor()
    ly = ys - y0
    lx = xs - x0
    hy = 1.0 - ly
    hx = 1.0 - lx
    y0i = y0.long()
    x0i = x0.long()
    y1i = (y0i + 1).clamp_(max=height - 1)
    x1i = (x0i + 1).clamp_(max=width - 1)
    top = row_base + y0i * width
    bottom = row_base + y1i * width
    index = torch.stack([top + x0i, top + x1i, bottom + x0i, bottom + x1i], dim=1)
    corner_weights = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], dim=1) * weight.unsqueeze(1)
    return F.embedding_bag(
        index.view(-1), table, bag_offsets * 4, mode="sum",
        per_sample_weights=corner_weights.view(-1),
    )


def clamp_samples(
    ys: Tensor, xs: Tensor, height: int, width: int, margin: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Validity and clamped positions of sample points.

    A sample is valid inside ``[-margin, H - 1 + margin] x [-margin, W - 1 + margin]``: RoIAlign
    uses ``[-1, H] x [-1, W]`` (``margin=1``), Deformable ConvNets' PS RoI pooling ``[-0.5, H -
    0.5] x [-0.5, W - 0.5]`` (``margin=0.5``). NaN positions are invalid.

    Returns:
        ``(valid, ys, xs)`` with ``ys, xs`` clamped into the map and invalid samples moved to 0.
    """
    valid = (ys >= -margin) & (ys <= height - 1 + margin)
    valid &= (xs >= -margin) & (xs <= width - 1 + margin)
    zero = ys.new_zeros(())
    ys = torch.where(valid, ys.clamp(0, height - 1), zero)
    xs = torch.where(valid, xs.clamp(0, width - 1), zero)
    return valid, ys, xs
