"""Learned offsets made visible: each RoI's sampling bins before and after its offsets.

For a deformable extractor, bin ``(ph, pw)`` of a RoI moves by ``gamma * roi_size * offset[:,
ph, pw]`` (``deform_roi_pool``; ``trans_std`` for ``deform_psroi_pool``, whose offsets live on a
``part x part`` grid). The shift is proportional to the RoI size, so it is the same in image
pixels as in feature-map pixels scaled by the stride: this module draws it in image pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from detkit.engine.drawing import to_uint8
from detkit.models import FasterRCNN
from detkit.models.faster_rcnn import batch_images
from detkit.models.roi_extractors import DeformPSRoIPoolExtractor, DeformRoIPoolExtractor

DEFORMABLE = (DeformRoIPoolExtractor, DeformPSRoIPoolExtractor)


@dataclass
class BinLayout:
    """Bin rectangles of ``K`` RoIs on a ``P x P`` grid, xyxy in input-image pixels.

    Attributes:
        before: ``Tensor[K, P, P, 4]`` the regular grid.
        after: ``Tensor[K, P, P, 4]`` each bin moved by its learned offset.
        mask: ``Tensor[K, P, P]`` modulation (DCNv2) or None.
    """

    before: Tensor
    after: Tensor
    mask: Tensor | None


def is_deformable(model: FasterRCNN) -> bool:
    return isinstance(model.roi_extractor, DEFORMABLE)


@torch.no_grad()
def bin_layout(model: FasterRCNN, image: Tensor, boxes_xyxy: Tensor) -> BinLayout:
    """Bins of ``boxes_xyxy: Tensor[K, 4]`` (input-image pixels) on ``image: Tensor[3, H, W]``
    before and after the offsets the model's deformable extractor predicts for them."""
    extractor = model.roi_extractor
    if not isinstance(extractor, DEFORMABLE):
        raise ValueError(f"{type(extractor).__name__} learns no offsets; use a deformable "
                         "extractor (deform_roi_pool, mdeform_roi_pool, deform_psroi_pool)")
    features = model.backbone(batch_images([image], model.size_divisible).tensors)
    _, offset, mask = extractor.forward_with_offsets(features, [boxes_xyxy])
    p = extractor.output_size[0]
    if isinstance(extractor, DeformPSRoIPoolExtractor):
        # part cell of bin ph is floor(ph * part / P): expand the part grid to the bins
        cell = torch.arange(p) * extractor.part_size // p
        offset = offset[:, :, cell][:, :, :, cell]
        scale = extractor.trans_std
    else:
        scale = extractor.gamma
    x1, y1, x2, y2 = boxes_xyxy.unbind(dim=1)
    width, height = (x2 - x1)[:, None, None], (y2 - y1)[:, None, None]
    steps = torch.arange(p, dtype=boxes_xyxy.dtype)
    left = x1[:, None, None] + steps[None, None, :] * width / p
    top = y1[:, None, None] + steps[None, :, None] * height / p
    before = torch.stack(torch.broadcast_tensors(left, top, left + width / p, top + height / p),
                         dim=-1)
    shift = torch.stack([scale * width * offset[:, 0], scale * height * offset[:, 1]], dim=-1)
    after = before + shift.repeat(1, 1, 1, 2)
    return BinLayout(before, after, None if mask is None else mask[:, 0])


def draw_bins(image: Tensor, boxes_xyxy: Tensor, layout: BinLayout, *, zoom: int = 1) -> Tensor:
    """``uint8 Tensor[3, zoom * H, zoom * W]``: RoI boxes (white), regular bin centres (grey
    dots), each joined to its moved bin (a coloured rectangle; brightness = modulation when there
    is a mask). ``zoom`` enlarges the picture (not the lines) so that 7 x 7 bins on a small RoI
    stay legible."""
    if zoom < 1:
        raise ValueError(f"zoom must be a positive integer, got {zoom}")
    canvas = Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy())
    if zoom > 1:
        canvas = canvas.resize((canvas.width * zoom, canvas.height * zoom), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    palette = [(255, 80, 80), (80, 200, 255), (255, 210, 60), (120, 255, 120), (230, 120, 255)]
    for k, box in enumerate((boxes_xyxy * zoom).tolist()):
        colour = palette[k % len(palette)]
        draw.rectangle(box, outline=(255, 255, 255), width=2)
        before = layout.before[k].reshape(-1, 4) * zoom
        after = layout.after[k].reshape(-1, 4) * zoom
        weights = (layout.mask[k].reshape(-1) if layout.mask is not None
                   else torch.ones(len(before)))
        for b, a, w in zip(before.tolist(), after.tolist(), weights.tolist(), strict=True):
            cb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
            ca = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
            shade = tuple(int(c * (0.35 + 0.65 * w)) for c in colour)
            draw.rectangle(a, outline=shade, width=1)
            draw.line([cb, ca], fill=shade, width=1)
            draw.ellipse([cb[0] - 1.5, cb[1] - 1.5, cb[0] + 1.5, cb[1] + 1.5], fill=(160, 160, 160))
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def offsets_figure(model: FasterRCNN, image: Tensor, output: dict, *, score_thresh: float = 0.5,
                   max_boxes: int = 3, min_side: int = 512) -> Tensor | None:
    """Bins of the top detections on one image, or None when nothing scores high enough. Small
    images are enlarged by a whole factor until their longer side reaches ``min_side``."""
    keep = output["scores"] >= score_thresh
    boxes = output["boxes_xyxy"][keep][:max_boxes].float().cpu()
    if not len(boxes):
        return None
    model_device = next(model.parameters()).device
    layout = bin_layout(model, image.to(model_device), boxes.to(model_device))
    layout = BinLayout(layout.before.cpu(), layout.after.cpu(),
                       None if layout.mask is None else layout.mask.cpu())
    zoom = max(1, math.ceil(min_side / max(image.shape[-2:])))
    return draw_bins(image.cpu(), boxes, layout, zoom=zoom)
