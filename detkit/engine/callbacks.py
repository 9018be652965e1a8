"""TensorBoard callbacks: validation images with boxes drawn, and precision-recall curves."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor

from detkit.engine.drawing import draw_detections
from detkit.engine.offsets import offsets_figure


class ValidationImageLogger(L.Callback):
    """Logs a fixed set of validation images (the first ``num_images`` of the unshuffled val
    loader) with ground truth and predictions drawn, the COCOeval precision-recall curves, and,
    for extractors that move their bins (``RoIExtractor.moves_bins``), the sampling bins of the
    top detections before and after their learned offsets (``val_offsets/i``).

    Args:
        num_images: how many validation images to draw.
        score_thresh: predictions below this score are not drawn.
    """

    def __init__(self, num_images: int = 4, score_thresh: float = 0.3) -> None:
        self.num_images = num_images
        self.score_thresh = score_thresh
        self._drawn: list[Tensor] = []
        self._offsets: list[Tensor] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._drawn, self._offsets = [], []

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or len(self._drawn) >= self.num_images or outputs is None:
            return
        names = trainer.datamodule.category_names
        model = pl_module.model
        for image, target, output in zip(batch[0], batch[1], outputs, strict=True):
            if len(self._drawn) >= self.num_images:
                break
            self._drawn.append(draw_detections(image, target, output, names, self.score_thresh))
            if model.roi_extractor.moves_bins:
                figure = offsets_figure(model, image, output, score_thresh=self.score_thresh)
                if figure is not None:
                    self._offsets.append(figure)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = _tensorboard(trainer)
        if writer is None or trainer.sanity_checking:
            return
        for i, image in enumerate(self._drawn):
            writer.add_image(f"val_images/{i}", image, trainer.global_step)
        for i, image in enumerate(self._offsets):
            writer.add_image(f"val_offsets/{i}", image, trainer.global_step)
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
