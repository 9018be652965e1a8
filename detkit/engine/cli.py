"""Command lines: ``tools/train.py`` and ``tools/eval.py`` (LightningCLI, YAML configs).

``train``: ``--config configs/NAME.yaml [--trainer.max_steps 100 ...] [--ckpt_path last]`` fits,
then evaluates the best checkpoint (by val AP) and prints the metrics table.
``evaluate``: ``--config CFG --ckpt CKPT --out DIR [data overrides]`` prints the table and
writes ``DIR/metrics.json`` and ``DIR/predictions.json`` (COCO results format, original image
coordinates and category ids).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from detkit.data import DetectionDataModule
from detkit.engine.module import DetectionModule, OptimizerSettings, ScheduleSettings
from detkit.eval import format_metrics_table
from detkit.models import RoIHeadSettings, RPNSettings


def trainer_defaults() -> dict[str, Any]:
    """Trainer defaults: TensorBoard logging, best-AP and last checkpoints, learning-rate and
    validation-image logging. The callbacks are always present (LightningCLI's persistent
    callbacks); a config adds others under ``trainer.callbacks``."""
    from detkit.engine.callbacks import ValidationImageLogger

    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            # one fixed directory per experiment (no version_N): --ckpt_path last finds it
            "init_args": {"save_dir": "runs", "name": "detkit", "version": ""},
        },
        "callbacks": [
            ModelCheckpoint(monitor="val/AP", mode="max", save_last=True,
                            filename="best-step{step}", auto_insert_metric_name=False),
            # last.ckpt also every 100 steps, so a killed run resumes close to where it stopped
            ModelCheckpoint(save_top_k=0, save_last=True, every_n_train_steps=100),
            LearningRateMonitor(logging_interval="step"),
            ValidationImageLogger(),
        ],
        "log_every_n_steps": 10,
    }


class DetkitCLI(LightningCLI):
    """LightningCLI with the data module's class count linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")


class TrainCLI(DetkitCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume from this checkpoint ('last' = the run's last.ckpt)")


class EvalCLI(DetkitCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt", type=str, required=True, help="checkpoint to evaluate")
        parser.add_argument("--out", type=str, required=True, help="output directory")


def _cli(cls: type[DetkitCLI], argv: list[str] | None, **kwargs: Any) -> DetkitCLI:
    return cls(DetectionModule, DetectionDataModule, run=False, args=argv,
               seed_everything_default=0, save_config_kwargs={"overwrite": True}, **kwargs)


def train(argv: list[str] | None = None) -> dict[str, Any]:
    """Fit, then evaluate the best checkpoint; returns the metrics."""
    cli = _cli(TrainCLI, argv, trainer_defaults=trainer_defaults())
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=data, ckpt_path=cli.config.get("ckpt_path"))
    _save_final_last(trainer)
    throughput = model.train_images_per_second()
    best = _best_checkpoint(trainer)
    if best is not None:
        model = load_module(best)
    trainer.validate(model, datamodule=data, verbose=False)
    metrics = dict(model.last_metrics)
    if throughput is not None:
        metrics["train_images_per_s"] = throughput
    metrics["params"] = sum(p.numel() for p in model.parameters())
    metrics["checkpoint"] = best
    if trainer.is_global_zero:
        print(f"\nEvaluation of {best or 'the final weights'}:")
        print(format_metrics_table(metrics))
        if trainer.logger is not None and trainer.logger.log_dir:
            print(f"TensorBoard logs: tensorboard --logdir {trainer.logger.log_dir}")
    return metrics


def _save_final_last(trainer: L.Trainer) -> None:
    """ModelCheckpoint writes last.ckpt at validation; a run that ends between validations
    (max_steps) would leave it behind the final step, so resuming would redo steps."""
    callback = trainer.checkpoint_callback  # the first one: best val AP, and last
    if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
        path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}.ckpt"
        trainer.save_checkpoint(path)
        callback.last_model_path = str(path)


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint):
        return callback.best_model_path or callback.last_model_path or None
    return None


def load_module(path: str | os.PathLike) -> DetectionModule:
    """A DetectionModule with a checkpoint's weights, loaded with ``weights_only=True`` (the
    module saves plain hyperparameters, so no pickled objects are needed)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = dict(checkpoint["hyper_parameters"])
    hparams["backbone_weights"] = None  # the checkpoint's state dict has the weights
    module = DetectionModule(
        hparams.pop("num_classes"), rpn=_settings(RPNSettings, hparams.pop("rpn")),
        roi_head=_settings(RoIHeadSettings, hparams.pop("roi_head")),
        optimizer=_settings(OptimizerSettings, hparams.pop("optimizer")),
        schedule=_settings(ScheduleSettings, hparams.pop("schedule")), **hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module


def _settings(cls: type, values: dict) -> Any:
    """Dataclass from a dict, lists back to tuples (YAML and checkpoints store lists)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class VisualizeCLI(EvalCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--num_images", type=int, default=8)
        parser.add_argument("--score_thresh", type=float, default=0.5)


def visualize(argv: list[str] | None = None) -> list[Path]:
    """Draw predictions (and, for extractors that move their bins, the sampling bins before and
    after the learned offsets) on the first validation images; writes PNGs to ``--out``."""
    from detkit.engine.drawing import draw_detections, save_png
    from detkit.engine.offsets import offsets_figure

    cli = _cli(VisualizeCLI, argv, trainer_defaults={"logger": False})
    module = load_module(cli.config["ckpt"]).eval()
    data = cli.datamodule
    data.setup("validate")
    out = Path(cli.config["out"])
    out.mkdir(parents=True, exist_ok=True)
    written, no_offsets = [], 0
    for index in range(min(cli.config["num_images"], len(data.val_dataset))):
        image, target = data.val_dataset[index]
        with torch.no_grad():
            output = module.model([image])[0]
        stem = out / f"image{target['image_id']}"
        written.append(save_png(draw_detections(image, target, output, data.category_names,
                                                cli.config["score_thresh"]),
                                stem.with_suffix(".png")))
        if module.model.roi_extractor.moves_bins:
            figure = offsets_figure(module.model, image, output,
                                    score_thresh=cli.config["score_thresh"])
            if figure is None:
                no_offsets += 1
            else:
                written.append(save_png(figure, stem.with_name(stem.name + "_offsets.png")))
    print(f"wrote {len(written)} images to {out}")
    if no_offsets:
        print(f"no offsets drawn on {no_offsets} image(s): no detection scored >= "
              f"{cli.config['score_thresh']} there (lower --score_thresh to see more)")
    return written


def evaluate(argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on the config's validation data; write metrics and predictions."""
    cli = _cli(EvalCLI, argv, trainer_defaults={"logger": False})
    module = load_module(cli.config["ckpt"])
    trainer = L.Trainer(accelerator=cli.config["trainer"]["accelerator"], devices=1,
                        precision=cli.config["trainer"]["precision"], logger=False,
                        enable_checkpointing=False, callbacks=[], enable_progress_bar=False)
    trainer.validate(module, datamodule=cli.datamodule, verbose=False)
    out = Path(cli.config["out"])
    out.mkdir(parents=True, exist_ok=True)
    metrics = module.last_metrics
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "predictions.json").write_text(json.dumps(module.last_predictions))
    print(format_metrics_table(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'predictions.json'}")
    return metrics
