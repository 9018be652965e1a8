"""Scalar-loop reference implementations written straight from the operators' published
semantics (mmcv DeformRoIPool and RoIAlign max mode, Deformable ConvNets DeformablePSROIPooling,
PreciseRoIPooling). Slow, tiny inputs only; they share no code with detkit.ops."""

from __future__ import annotations

import math

import torch


def _bilinear_roi_align(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision / mmcv bilinear_interpolate on img[C, H, W]."""
    _, h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return torch.zeros(img.shape[0], dtype=img.dtype)
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_low = y_high = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_low = x_high = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * img[:, y_low, x_low] + hy * lx * img[:, y_low, x_high]
            + ly * hx * img[:, y_high, x_low] + ly * lx * img[:, y_high, x_high])


def deform_roi_pool(x, rois, offset, mask, out_h, out_w, scale, sampling_ratio, gamma):
    k_count = rois.shape[0]
    out = torch.zeros(k_count, x.shape[1], out_h, out_w, dtype=x.dtype)
    for k in range(k_count):
        b = int(rois[k, 0])
        x1, y1, x2, y2 = (float(v) * scale - 0.5 for v in rois[k, 1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        bin_w, bin_h = roi_w / out_w, roi_h / out_h
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        count = max(gh * gw, 1)
        for ph in range(out_h):
            for pw in range(out_w):
                sx, sy = x1, y1
                if offset is not None:
                    sx += gamma * roi_w * float(offset[k, 0, ph, pw])
                    sy += gamma * roi_h * float(offset[k, 1, ph, pw])
                acc = torch.zeros(x.shape[1], dtype=x.dtype)
                for iy in range(gh):
                    yy = sy + ph * bin_h + (iy + 0.5) * bin_h / gh
                    for ix in range(gw):
                        xx = sx + pw * bin_w + (ix + 0.5) * bin_w / gw
                        acc += _bilinear_roi_align(x[b], yy, xx)
                value = acc / count
                if mask is not None:
                    value = value * float(mask[k, 0, ph, pw])
                out[k, :, ph, pw] = value
    return out


def _c_round(v: float) -> float:
    return math.copysign(math.floor(abs(v) + 0.5), v)


def _bilinear_floor_ceil(plane: torch.Tensor, h: float, w: float) -> float:
    x1, x2, y1, y2 = math.floor(w), math.ceil(w), math.floor(h), math.ceil(h)
    dx, dy = w - x1, h - y1
    return float((1 - dx) * (1 - dy) * plane[y1, x1] + (1 - dx) * dy * plane[y2, x1]
                 + dx * (1 - dy) * plane[y1, x2] + dx * dy * plane[y2, x2])


def deform_psroi_pool(x, rois, offset, output_dim, group_size, pooled_size, scale, part_size,
                      sample_per_part, trans_std):
    _, _, height, width = x.shape
    p, g = pooled_size, group_size
    part_size = part_size or p
    num_classes = 1 if offset is None else offset.shape[1] // 2
    per_class = output_dim // num_classes
    out = torch.zeros(rois.shape[0], output_dim, p, p, dtype=x.dtype)
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        start_w = _c_round(float(rois[k, 1])) * scale - 0.5
        start_h = _c_round(float(rois[k, 2])) * scale - 0.5
        end_w = (_c_round(float(rois[k, 3])) + 1.0) * scale - 0.5
        end_h = (_c_round(float(rois[k, 4])) + 1.0) * scale - 0.5
        roi_w, roi_h = max(end_w - start_w, 0.1), max(end_h - start_h, 0.1)
        bin_w, bin_h = roi_w / p, roi_h / p
        sub_w, sub_h = bin_w / sample_per_part, bin_h / sample_per_part
        for c in range(output_dim):
            for ph in range(p):
                for pw in range(p):
                    part_h = math.floor(ph / p * part_size)
                    part_w = math.floor(pw / p * part_size)
                    cls = c // per_class
                    tx = ty = 0.0
                    if offset is not None:
                        tx = float(offset[k, 2 * cls, part_h, part_w]) * trans_std
                        ty = float(offset[k, 2 * cls + 1, part_h, part_w]) * trans_std
                    wstart = pw * bin_w + start_w + tx * roi_w
                    hstart = ph * bin_h + start_h + ty * roi_h
                    gw = min(max(math.floor(pw * g / p), 0), g - 1)
                    gh = min(max(math.floor(ph * g / p), 0), g - 1)
                    channel = (c * g + gh) * g + gw
                    total, count = 0.0, 0
                    for ih in range(sample_per_part):
                        for iw in range(sample_per_part):
                            w = wstart + iw * sub_w
                            h = hstart + ih * sub_h
                            if w < -0.5 or w > width - 0.5 or h < -0.5 or h > height - 0.5:
                                continue
                            w = min(max(w, 0.0), width - 1.0)
                            h = min(max(h, 0.0), height - 1.0)
                            total += _bilinear_floor_ceil(x[b, channel], h, w)
                            count += 1
                    out[k, c, ph, pw] = total / count if count else 0.0
    return out


def _tent_integral(a: float, b: float, j: int) -> float:
    """Closed form of the integral of max(0, 1 - |t - j|) over [a, b] (a <= b): the rising half
    on [j - 1, j] (t - j + 1) and the falling half on [j, j + 1] (j + 1 - t), each clipped."""
    total = 0.0
    lo, hi = max(a, j - 1.0), min(b, float(j))
    if hi > lo:
        total += ((hi - j + 1.0) ** 2 - (lo - j + 1.0) ** 2) / 2.0
    lo, hi = max(a, float(j)), min(b, j + 1.0)
    if hi > lo:
        total += ((j + 1.0 - lo) ** 2 - (j + 1.0 - hi) ** 2) / 2.0
    return total


def prroi_pool(x, rois, out_h, out_w, scale):
    """PreciseRoIPooling (IoU-Net): exact integral of the bilinear interpolant (0 outside the map)
    over each bin, divided by the bin area; a zero-area bin gives 0; no half-pixel shift."""
    _, channels, height, width = x.shape
    out = torch.zeros(rois.shape[0], channels, out_h, out_w, dtype=x.dtype)
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        x1, y1, x2, y2 = (float(v) * scale for v in rois[k, 1:])
        bin_w, bin_h = max(x2 - x1, 0.0) / out_w, max(y2 - y1, 0.0) / out_h
        area = bin_w * bin_h
        if area == 0:
            continue
        for ph in range(out_h):
            ya, yb = y1 + ph * bin_h, y1 + (ph + 1) * bin_h
            ty = [_tent_integral(ya, yb, i) for i in range(height)]
            for pw in range(out_w):
                xa, xb = x1 + pw * bin_w, x1 + (pw + 1) * bin_w
                tx = [_tent_integral(xa, xb, j) for j in range(width)]
                acc = torch.zeros(channels, dtype=x.dtype)
                for i in range(height):
                    for j in range(width):
                        if ty[i] and tx[j]:
                            acc += ty[i] * tx[j] * x[b, :, i, j]
                out[k, :, ph, pw] = acc / area
    return out


def roi_align_max(x, rois, out_h, out_w, scale, sampling_ratio, aligned):
    """mmcv RoIAlign with pool_mode="max": per channel, the largest bilinear sample of the bin
    (samples outside [-1, H] x [-1, W] are 0 candidates); an empty grid is reported as None
    (mmcv writes -FLT_MAX there)."""
    out = torch.zeros(rois.shape[0], x.shape[1], out_h, out_w, dtype=x.dtype)
    shift = 0.5 if aligned else 0.0
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        x1, y1, x2, y2 = (float(v) * scale - shift for v in rois[k, 1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_w, bin_h = roi_w / out_w, roi_h / out_h
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        for ph in range(out_h):
            for pw in range(out_w):
                for c in range(x.shape[1]):
                    best = None
                    for iy in range(gh):
                        yy = y1 + ph * bin_h + (iy + 0.5) * bin_h / gh
                        for ix in range(gw):
                            xx = x1 + pw * bin_w + (ix + 0.5) * bin_w / gw
                            value = float(_bilinear_roi_align(x[b, c : c + 1], yy, xx)[0])
                            if best is None or value > best:
                                best = value
                    out[k, c, ph, pw] = 0.0 if best is None else best
    return out
