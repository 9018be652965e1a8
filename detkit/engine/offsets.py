"""Learned offsets made visible: each RoI's sampling bins before and after its offsets.

The geometry belongs to the extractor (:meth:`detkit.models.RoIExtractor.bin_layout`, which an
extractor that moves its bins overrides); this module runs the backbone for one image, asks the
model's extractor for the layout, and draws it in image pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from detkit.engine.drawing import to_uint8
from detkit.models import EXTRACTORS, BinLayout, FasterRCNN
from detkit.models.faster_rcnn import batch_images


def check_moves_bins(model: FasterRCNN) -> None:
    """Raise ``ValueError`` unless the model's extractor moves its bins (learns offsets),
    naming the extractors that do."""
    extractor = model.roi_extractor
    if not extractor.moves_bins:
        movers = ", ".join(name for name, cls in EXTRACTORS.items() if cls.moves_bins)
        raise ValueError(f"{type(extractor).__name__} learns no offsets: its bins are a fixed "
                         f"grid; extractors that move their bins: {movers}")


@torch.no_grad()
def bin_layout(model: FasterRCNN, image: Tensor, boxes_xyxy: Tensor) -> BinLayout:
    """Bins of ``boxes_xyxy: Tensor[K, 4]`` (input-image pixels) on ``image: Tensor[3, H, W]``
    before and after the offsets the model's extractor predicts for them.

    Raises:
        ValueError: the model's extractor does not move its bins.
    """
    check_moves_bins(model)
    extractor = model.roi_extractor
    features = model.backbone(batch_images([image], model.size_divisible).tensors)
    layout = extractor.bin_layout(features, [boxes_xyxy])
    if layout is None:
        raise ValueError(f"{type(extractor).__name__}.bin_layout returned None although the "
                         "class overrides it")
    return layout


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
    layout = bin_layout(model, image.to(model_device), boxes.to(model_device)).cpu()
    zoom = max(1, math.ceil(min_side / max(image.shape[-2:])))
    return draw_bins(image.cpu(), boxes, layout, zoom=zoom)
