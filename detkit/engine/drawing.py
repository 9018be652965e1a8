"""Drawing helpers: detections and ground truth on (de-normalised) images, and PNG output."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid

from detkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD

# detkit.data normalises with these statistics; undone here for display
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def to_uint8(image: Tensor) -> Tensor:
    """Normalised ``Tensor[3, H, W]`` -> displayable ``uint8``, rounded (so that an image
    normalised from uint8 comes back to its own pixel values)."""
    return ((image.float().cpu() * STD + MEAN).clamp(0, 1) * 255).round().to(torch.uint8)


def draw_detections(
    image: Tensor, target: dict, output: dict, category_names: list[str], score_thresh: float
) -> Tensor:
    """Ground truth in green, predictions above ``score_thresh`` in red with class and score."""
    canvas = to_uint8(image)
    gt = target["boxes_xyxy"].cpu()
    if len(gt):
        canvas = draw_bounding_boxes(canvas, gt, colors="lime", width=2)
    keep = output["scores"].cpu() >= score_thresh
    boxes = output["boxes_xyxy"].cpu()[keep]
    if len(boxes):
        labels = [f"{category_names[int(c) - 1]} {s:.2f}"
                  for c, s in zip(output["labels"].cpu()[keep], output["scores"].cpu()[keep],
                                  strict=True)]
        canvas = draw_bounding_boxes(canvas, boxes, labels=labels, colors="red", width=2)
    return canvas


def save_png(image: Tensor, path: Path) -> Path:
    """Write a ``uint8 Tensor[3, H, W]`` as PNG; returns ``path``."""
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path)
    return path


def image_row(images: list[Tensor], padding: int = 4) -> Tensor:
    """``uint8 Tensor[3, H_i, W_i]`` images side by side (each padded to the largest at its
    bottom right), separated by ``padding`` white pixels."""
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    padded = [torch.nn.functional.pad(image, (0, width - image.shape[2],
                                              0, height - image.shape[1])) for image in images]
    return make_grid(padded, nrow=len(padded), padding=padding, pad_value=255)
