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
consecutive samples, so a bag is described by the offset of its first sample. ``SampleLayout``
generates any slice of that order on demand and ``pool_chunks`` pools it in chunks of at most
``MAX_SAMPLES_PER_CHUNK`` samples (splitting RoIs and bins if needed, recomputing chunks in
backward), so memory is bounded for any RoI size. Max pooling (RoIAlign's max mode) interpolates
each sample on its own (a bag of 4 corners) and keeps the first maximum per bin (``bag_max``).
PrRoIPool uses the same kernel with one row per sample (a pixel) and exact-integral weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

# At most this many sample points are materialised at once. A chunk costs about 200 bytes per
# sample at its forward+backward peak (indices, corner weights, positions, their gradients), so
# 2**18 bounds the extra memory of any RoI near 50 MB (tools/benchmark_ops.py --huge-roi measures
# it). A training batch (512 RoIs x 49 bins x 4 samples = 10**5) is one chunk; only huge adaptive
# grids (a 20,000-px RoI has 4 * 10**8 samples) are split, within a RoI and within a bin.
MAX_SAMPLES_PER_CHUNK = 1 << 18
# Max pooling materialises one interpolated value per sample and channel (``Tensor[T, C]``): at
# most this many per chunk (64 MB in float32; 65,536 samples at 256 channels).
MAX_VALUES_PER_CHUNK = 1 << 24


@dataclass(frozen=True)
class SampleSlice:
    """Samples ``[start, stop)`` of a :class:`SampleLayout`, with the bags they fall in.

    Attributes:
        roi, bag: ``Tensor[T]`` long, RoI index and global bag (``roi * P + bin``) of each sample.
        ph, pw: ``Tensor[T]`` long, output bin of each sample.
        iy, ix: ``Tensor[T]`` long, position of each sample in its bin's ``grid_h x grid_w`` grid.
        bag_offsets: ``Tensor[hi - lo]`` long, first sample (local to the slice) of bags ``lo ..
            hi - 1``; a bag split with the previous slice starts at 0.
        lo, hi: the bags this slice contributes to (an empty bag belongs to exactly one slice).
        uniform: ``S > 0`` when each of these bags has all its ``S`` samples here, else 0.
    """

    roi: Tensor
    bag: Tensor
    ph: Tensor
    pw: Tensor
    iy: Tensor
    ix: Tensor
    bag_offsets: Tensor
    lo: int
    hi: int
    uniform: int


class SampleLayout:
    """Flat layout of the sample points of ``K`` RoIs with ``P = PH * PW`` bins each.

    Every bin of RoI ``k`` holds a ``grid_h[k] x grid_w[k]`` grid of samples; samples are ordered
    ``(roi, ph, pw, iy, ix)``, so each bin (a *bag*) is a run of consecutive samples. A zero grid
    gives empty bags (they pool to 0). Slices of this order are generated on demand, so no tensor
    ever has more entries than one chunk.
    """

    def __init__(self, output_size: tuple[int, int], grid_h: Tensor, grid_w: Tensor) -> None:
        self.output_size = output_size
        self.bins = output_size[0] * output_size[1]
        self.grid_h = grid_h
        self.grid_w = grid_w
        self.per_bin = grid_h * grid_w  # (K,)
        per_roi = self.per_bin * self.bins
        self.roi_ends = torch.cumsum(per_roi, 0)
        self.roi_starts = self.roi_ends - per_roi
        bag_sizes = self.per_bin.repeat_interleave(self.bins)
        self.bag_ends = torch.cumsum(bag_sizes, 0)
        self.bag_starts = self.bag_ends - bag_sizes
        self.num_bags = bag_sizes.shape[0]
        self.total = int(self.roi_ends[-1]) if self.num_bags else 0
        equal = self.num_bags and bool(self.per_bin.min() == self.per_bin.max())
        self.constant = int(self.per_bin[0]) if equal else None  # samples per bag, if all equal

    def chunks(self, limit: int) -> list[tuple[int, int, int, int]]:
        """``(start, stop, lo, hi)`` per chunk of at most ``limit`` samples.

        A chunk ends at a bag boundary unless a single bag holds more than ``limit`` samples; then
        that bag is split over chunks (``lo`` of the next chunk is the split bag).
        """
        if self.total <= limit:
            return [(0, self.total, 0, self.num_bags)]
        out = []
        start, lo = 0, 0
        while True:
            stop = min(start + limit, self.total)
            if stop == self.total:
                out.append((start, stop, lo, self.num_bags))
                return out
            at_or_before = int(torch.searchsorted(self.bag_starts, stop, right=True))
            boundary = int(self.bag_starts[at_or_before - 1])
            stop = boundary if boundary > start else stop
            hi = int(torch.searchsorted(self.bag_starts, stop))  # bags starting before stop
            out.append((start, stop, lo, hi))
            lo = hi - 1 if int(self.bag_ends[hi - 1]) > stop else hi
            start = stop

    def slice(self, start: int, stop: int, lo: int, hi: int) -> SampleSlice:
        """The samples ``[start, stop)`` of chunk ``(start, stop, lo, hi)``."""
        device = self.grid_h.device
        s = torch.arange(start, stop, device=device)
        if self.constant is not None and self.constant > 0:
            roi = torch.div(s, self.constant * self.bins, rounding_mode="floor")
        elif start == 0 and stop == self.total:  # all samples: cheaper than a search
            per_roi = self.per_bin * self.bins
            roi = torch.arange(per_roi.shape[0], device=device).repeat_interleave(
                per_roi, output_size=self.total)
        else:
            roi = torch.searchsorted(self.roi_ends, s, right=True)
        local = s - self.roi_starts[roi]
        n = self.per_bin[roi]
        bin_index = torch.div(local, n, rounding_mode="floor")
        within = local - bin_index * n
        gw = self.grid_w[roi]
        iy = torch.div(within, gw, rounding_mode="floor")
        pw_count = self.output_size[1]
        ph = torch.div(bin_index, pw_count, rounding_mode="floor")
        uniform = 0
        if self.constant and stop - start == (hi - lo) * self.constant:
            uniform = self.constant
        return SampleSlice(
            roi=roi, bag=roi * self.bins + bin_index, ph=ph, pw=bin_index - ph * pw_count, iy=iy,
            ix=within - iy * gw, bag_offsets=(self.bag_starts[lo:hi] - start).clamp(min=0),
            lo=lo, hi=hi, uniform=uniform,
        )


def pool_chunks(
    layout: SampleLayout, pool_slice: Callable[[SampleSlice], Tensor],
    merge: Callable[[Tensor, Tensor], Tensor], limit: int | None = None,
) -> Tensor:
    """Run ``pool_slice`` (``SampleSlice -> Tensor[hi - lo, C]``) over chunks of ``layout``.

    With one chunk this is ``pool_slice`` on all samples. With several, each chunk is pooled under
    activation checkpointing (its samples are regenerated in backward), so neither the forward
    nor the saved state for backward ever holds more than one chunk of samples; a bag split over
    chunks is combined with ``merge(earlier_rows, later_rows)`` (sum for averages, max for max).

    Args:
        limit: samples per chunk; default ``MAX_SAMPLES_PER_CHUNK`` (read at call time).

    Returns:
        ``Tensor[num_bags, C]``.
    """
    plan = layout.chunks(MAX_SAMPLES_PER_CHUNK if limit is None else limit)
    if len(plan) == 1:
        return pool_slice(layout.slice(*plan[0]))
    parts: list[Tensor] = []
    previous_hi = 0
    for chunk in plan:
        def run(chunk: tuple[int, int, int, int] = chunk) -> Tensor:
            return pool_slice(layout.slice(*chunk))

        grad = torch.is_grad_enabled()
        part = checkpoint(run, use_reentrant=False, preserve_rng_state=False) if grad else run()
        if chunk[2] < previous_hi:  # the first bag continues the previous chunk's last bag
            last = parts.pop()
            parts += [last[:-1], merge(last[-1:], part[:1])]
            part = part[1:]
        if part.shape[0]:  # the last entry of parts is always the latest bag
            parts.append(part)
        previous_hi = chunk[3]
    return torch.cat(parts, dim=0)


def bag_sum(table: Tensor, index: Tensor, weight: Tensor, bag_offsets: Tensor) -> Tensor:
    """``out[b] = sum_s weight[s] * table[index[s]]`` over the samples ``s`` of bag ``b``.

    Args:
        table: ``Tensor[R, C]``.
        index: ``Tensor[T, r]`` long, ``r`` table rows per sample (4 bilinear corners, or 1).
        weight: ``Tensor[T, r]`` per-row weights (may require grad).
        bag_offsets: ``Tensor[B]`` long, first sample of each bag; bags are consecutive.

    Returns:
        ``Tensor[B, C]``.
    """
    rows = index.shape[1]
    return F.embedding_bag(index.reshape(-1), table, bag_offsets * rows, mode="sum",
                           per_sample_weights=weight.reshape(-1))


def bag_max(values: Tensor, sl: SampleSlice) -> Tensor:
    """Per bag and channel the value of the first sample with the largest value (mmcv's argmax).

    Args:
        values: ``Tensor[T, C]``, one row per sample of ``sl``.

    Returns:
        ``Tensor[hi - lo, C]``; an empty bag gives 0. The gradient goes to the first maximal
        sample only, as in mmcv's RoIAlign max mode.
    """
    num_bags, channels = sl.hi - sl.lo, values.shape[1]
    if sl.uniform:  # every bag complete and of equal size: a dense reduction (first max wins)
        return values.view(num_bags, sl.uniform, channels).max(dim=1).values
    if values.shape[0] == 0:
        return values.new_zeros((num_bags, channels)) + values.sum()
    detached = values.detach()
    local = (sl.bag - sl.lo)[:, None].expand_as(detached)
    best = detached.new_full((num_bags, channels), -math.inf)
    best = best.scatter_reduce(0, local, detached, "amax")
    order = torch.arange(values.shape[0], device=values.device)[:, None].expand_as(detached)
    last = values.shape[0] - 1
    candidates = torch.where(detached == best.gather(0, local), order, last + 1)
    first = torch.full_like(best, last + 1, dtype=torch.long)
    first = first.scatter_reduce(0, local, candidates, "amin")
    empty = first > last
    return torch.where(empty, 0.0, values.gather(0, first.clamp(max=last)))


def first_max(earlier: Tensor, later: Tensor) -> Tensor:
    """Combine the maxima of two parts of a bag; on a tie the earlier sample wins."""
    return torch.where(later > earlier, later, earlier)


def bilinear_corners(
    row_base: Tensor, ys: Tensor, xs: Tensor, weight: Tensor, height: int, width: int
) -> tuple[Tensor, Tensor]:
    """Table rows and weights of the four bilinear corners of each sample.

    Args:
        row_base: ``Tensor[T]`` long; pixel ``(y, x)`` of sample ``s`` is table row ``row_base[s]
            + y * width + x``.
        ys, xs: ``Tensor[T]`` sample positions in feature-map pixels, already clamped into
            ``[0, height - 1] x [0, width - 1]`` and finite (may require grad).
        weight: ``Tensor[T]`` multiplier of each sample (0 for a sample that contributes nothing).

    Returns:
        ``(index, weights)``, both ``Tensor[T, 4]``. Corners follow torchvision's RoIAlign: ``y0 =
        floor(y)``, ``y1 = min(y0 + 1, height - 1)``, so at the last row both corners are the last
        pixel.
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
    return index, corner_weights


def bilinear_bag_sum(
    table: Tensor, row_base: Tensor, ys: Tensor, xs: Tensor, weight: Tensor, bag_offsets: Tensor,
    height: int, width: int,
) -> Tensor:
    """Sum of weighted bilinear samples per bag: :func:`bilinear_corners` then :func:`bag_sum`.

    Returns:
        ``Tensor[B, C]`` for ``B = len(bag_offsets)`` bags over ``table: Tensor[R, C]``.
    """
    index, corner_weights = bilinear_corners(row_base, ys, xs, weight, height, width)
    return bag_sum(table, index, corner_weights, bag_offsets)


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
