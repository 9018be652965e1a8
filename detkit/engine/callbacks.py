"""Callbacks: validation images and precision-recall curves in TensorBoard, a one-line summary
per validation, and a progress bar that counts steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import Tensor

from detkit.engine.drawing import draw_detections, image_row, save_png
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

    def save_row(self, path: Path) -> Path | None:
        """The last validation's drawn images side by side as one PNG at ``path`` (None when
        none was drawn)."""
        if not self._drawn:
            return None
        return save_png(image_row(self._drawn), path)

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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_validation_end, not _epoch_end: Lightning calls callbacks' epoch-end hooks before the
        # module's, which computes this validation's metrics and PR curve
        writer = _tensorboard(trainer)
        if writer is None or trainer.sanity_checking:
            return
        step = logging_step(trainer)
        for i, image in enumerate(self._drawn):
            writer.add_image(f"val_images/{i}", image, step)
        for i, image in enumerate(self._offsets):
            writer.add_image(f"val_offsets/{i}", image, step)
        curves = getattr(pl_module, "last_metrics", {}).get("pr_curve")
        if curves:
            writer.add_figure("val/pr_curve", pr_curve_figure(curves), step)


class ValidationSummary(L.Callback):
    """Prints one line per validation: the step, AP, AP50, APs/m/l and AR100."""

    KEYS = ("AP", "AP50", "APs", "APm", "APl", "AR100")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = getattr(pl_module, "last_metrics", {})
        if trainer.sanity_checking or not trainer.is_global_zero or not metrics:
            return
        values = "  ".join(f"{k} {metrics[k]:.3f}" for k in self.KEYS if k in metrics)
        line = (f"validation at step {logging_step(trainer)} ({trainer.global_step} steps "
                f"trained): {values}")
        bar = trainer.progress_bar_callback
        if isinstance(bar, TQDMProgressBar) and bar.is_enabled:
            bar.print(line)  # above the bars, not through them
        else:
            print(line)


class StepProgressBar(TQDMProgressBar):
    """A training bar that counts optimizer steps toward ``max_steps`` across epochs (Lightning's
    counts the batches of each epoch, restarting at 0), continuing from the resumed step."""

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        if trainer.max_steps is None or trainer.max_steps < 0:
            super().on_train_epoch_start(trainer)
            return
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:
            bar.reset(total=trainer.max_steps)
            bar.n = bar.initial = trainer.global_step
        bar.set_description(f"step (epoch {trainer.current_epoch})")
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if trainer.max_steps is None or trainer.max_steps < 0:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar = self.train_progress_bar
        if self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


def logging_step(trainer: L.Trainer) -> int:
    """The step Lightning gives the metrics logged now (``self.log`` in validation hooks): the
    count of optimizer steps taken *before* the current batch's, so a validation run after step
    ``s``'s update (``global_step == s``) shows at ``s - 1``. Images and curves use it too, so
    every record of one validation sits at one step."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


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
