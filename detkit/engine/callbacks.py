"""TensorBoard callbacks: validation images with boxes drawn, and precision-recall curves."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

# detkit.data normalises with ImageNet statistics; undone here for display
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def to_uint8(image: Tensor) -> Tensor:
    """Normalised ``Tensor[3, H, W]`` -> displayable ``uint8``."""
    return ((image.float().cpu() * STD + MEAN).clamp(0, 1) * 255).to(torch.uint8)


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


class ValidationImageLogger(L.Callback):
    """Logs a fixed set of validation images (the first ``num_images`` of the unshuffled val
    loader) with ground truth and predictions drawn, and the COCOeval precision-recall curves.

    Args:
        num_images: how many validation images to draw.
        score_thresh: predictions below this score are not drawn.
    """

    def __init__(self, num_images: int = 4, score_thresh: float = 0.3) -> None:
        self.num_images = num_images
        self.score_thresh = score_thresh
        self._drawn: list[Tensor] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._drawn = []

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or len(self._drawn) >= self.num_images or outputs is None:
            return
        names = trainer.datamodule.category_names
        for image, target, output in zip(batch[0], batch[1], outputs, strict=True):
            if len(self._drawn) < self.num_images:
                self._drawn.append(draw_detections(image, target, output, names,
                                                   self.score_thresh))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = _tensorboard(trainer)
        if writer is None or trainer.sanity_checking:
            return
        for i, image in enumerate(self._drawn):
            writer.add_image(f"val_images/{i}", image, trainer.global_step)
        curves = getattr(pl_module, "last_metrics", {}).get("pr_curve")
        if curves:
            writer.add_figure("val/pr_curve", pr_curve_figure(curves), trainer.global_step)


def pr_curve_figure(curves: dict[str, list[float]]) -> Any:
    """Precision against recall (101 COCO recall points) for each IoU setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4, 3.2), dpi=100)
    recall = [i / 100 for i in range(101)]
    for name, precision in curves.items():
        axis.plot(recall, [max(p, 0.0) for p in precision], label=f"IoU {name}")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _tensorboard(trainer: L.Trainer) -> Any:
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            return logger.experiment
    return None
