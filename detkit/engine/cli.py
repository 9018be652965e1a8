"""Command lines: ``tools/train.py`` and ``tools/eval.py`` (LightningCLI, YAML configs).

``train``: ``--config configs/NAME.yaml [--trainer.max_steps 100 ...] [--ckpt_path last]`` fits,
then evaluates the best checkpoint (by val AP) and prints the metrics table.
``evaluate``: ``--config CFG --ckpt CKPT --out DIR [data overrides]`` prints the table and
writes ``DIR/metrics.json`` and ``DIR/predictions.json`` (COCO results format, original image
coordinates and category ids).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from detkit.data import DetectionDataModule
from detkit.engine.errors import DEBUG_FLAG, DEBUG_HELP, one_line
from detkit.engine.module import DetectionModule, OptimizerSettings, ScheduleSettings
from detkit.eval import format_metrics_table
from detkit.models import RoIHeadSettings, RPNSettings
from detkit.models.backbone import backbone_settings


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
    """LightningCLI with the data module's classes (count and names) linked into the model, and
    parse errors raised as ``ArgumentError`` (one line through
    :func:`detkit.engine.errors.run_tool`) instead of a usage dump and ``sys.exit``."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("epilog", f"{DEBUG_FLAG}: {DEBUG_HELP}.")
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.category_names", "model.category_names",
                              apply_on="instantiate")


class TrainCLI(DetkitCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume from this checkpoint ('last' = the run's last.ckpt)")


class CheckpointCLI(DetkitCLI):
    """A tool that reads a checkpoint with a training config's data (eval, visualize): its own
    options first in ``--help``, the Trainer flags it does not use hidden (a config's values for
    them are accepted and ignored; on the command line they are an error), training-only model
    settings hidden, and ``backbone_weights`` never loaded (the checkpoint has the weights)."""

    description = ""
    usage = ""
    trainer_flags: tuple[str, ...] = ()  # the Trainer settings the tool reads
    # settings only training reads, hidden from --help (backbone_weights stays: it decides
    # the default norm; train_images/train_ann stay: format coco needs them)
    TRAINING_ONLY = ("model.trainable_layers", "model.optimizer", "model.schedule",
                     "seed_everything", "data.hflip", "data.scale_jitter", "data.color_jitter",
                     "data.crop_border", "data.min_visibility")

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("description", self.description)
        kwargs.setdefault("usage", self.usage)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt", type=str, required=True, help="checkpoint to read")
        parser.add_argument("--out", type=str, required=True, help="output directory")
        for action in parser._actions:
            if self._hidden(action.dest):
                action.help = argparse.SUPPRESS
        trainer = parser.groups.get("trainer")
        if trainer is not None:  # last in --help, under its own name
            trainer.title = "trainer"
            trainer.description = (f"Lightning Trainer flags this tool reads: {self._reads()} "
                                   "(a config's other trainer settings are ignored).")
            parser._action_groups.remove(trainer)
            parser._action_groups.append(trainer)

    def _reads(self) -> str:
        return ", ".join(f"--trainer.{f}" for f in self.trainer_flags) or "none"

    def _hidden(self, dest: str) -> bool:
        if dest == "trainer":
            return True
        if dest.startswith("trainer."):
            return dest.removeprefix("trainer.") not in self.trainer_flags
        return dest.startswith(self.TRAINING_ONLY)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Refuse Trainer flags the tool would ignore when the command line gives them."""
        given = [a.split("=", 1)[0][2:] for a in (sys.argv[1:] if args is None else args)
                 if isinstance(a, str) and a.startswith("--trainer")]
        unused = [g for g in given
                  if g == "trainer" or g.removeprefix("trainer.") not in self.trainer_flags]
        if unused:
            raise ValueError(f"{self.parser.prog} does not use --{', --'.join(unused)} (Trainer "
                             f"flags it reads: {self._reads()}); leave them out")
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """Read the checkpoint (a bad path fails before the data is read and the model built).
        Decide the norm and trainable stages with the weights named (as training did), then
        drop the weights: the checkpoint holds them, and nothing is read or downloaded."""
        self.checkpoint = read_checkpoint(self.config["ckpt"])
        model = self.config["model"]
        model.norm, model.trainable_layers = backbone_settings(
            model.backbone, model.backbone_weights, model.norm, model.trainable_layers)
        model.backbone_weights = None


class EvalCLI(CheckpointCLI):
    description = (
        "Evaluate a checkpoint on a config's validation data: print the COCO table (AP, AR by "
        "size, proposal recall, per-class AP; VOC AP for VOC data) and write OUT/metrics.json "
        "and OUT/predictions.json (COCO results). The checkpoint must fit the command line: its "
        "architecture (backbone, norm, extractor, heads) must equal what --config and --model.* "
        "say, and its classes the data's; a mismatch is an error naming both sides (evaluate "
        "with the run's own config.yaml). Test-time settings (--model.roi_head.score_thresh, "
        "--model.rpn.post_nms_top_n_test, ...) are the command line's.")
    usage = ("%(prog)s --config CFG --ckpt CKPT --out DIR [--data.KEY VALUE] "
             "[--model.KEY VALUE] [--trainer.accelerator A] [--trainer.precision P] [--debug]")
    trainer_flags = ("accelerator", "precision")


class VisualizeCLI(CheckpointCLI):
    description = (
        "Draw a checkpoint's predictions (ground truth green, predictions red) on the first "
        "validation images of a config's data, and for extractors that move their bins the "
        "learned offsets; writes PNGs to --out. Runs on the CPU. The checkpoint must fit the "
        "command line as in eval.py.")
    usage = ("%(prog)s --config CFG --ckpt CKPT --out DIR [--num_images N] [--score_thresh S] "
             "[--data.KEY VALUE] [--model.KEY VALUE] [--debug]")

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--num_images", type=int, default=8, help="images to draw")
        parser.add_argument("--score_thresh", type=float, default=0.5,
                            help="draw detections scoring at least this")


def _cli(cls: type[DetkitCLI], argv: list[str] | None, **kwargs: Any) -> DetkitCLI:
    if issubclass(cls, CheckpointCLI):
        kwargs.setdefault("auto_configure_optimizers", False)  # no --optimizer/--lr_scheduler
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
    """A DetectionModule built from a checkpoint's hyperparameters with its weights, loaded with
    ``weights_only=True`` (the module saves plain hyperparameters, so no pickled objects are
    needed). Raises FileNotFoundError or ValueError for a file that is not such a checkpoint."""
    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint["hyper_parameters"])
    hparams["backbone_weights"] = None  # the checkpoint's state dict has the weights
    module = DetectionModule(
        hparams.pop("num_classes"), rpn=_settings(RPNSettings, hparams.pop("rpn")),
        roi_head=_settings(RoIHeadSettings, hparams.pop("roi_head")),
        optimizer=_settings(OptimizerSettings, hparams.pop("optimizer")),
        schedule=_settings(ScheduleSettings, hparams.pop("schedule")), **hparams)
    _load_weights(module, checkpoint, path)
    return module


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A detkit training checkpoint as a dict with ``hyper_parameters`` and ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        kind = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint {path} {kind}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises several types for a file it cannot parse
        raise ValueError(f"checkpoint {path} is unreadable ({one_line(error)})") from error
    keys = checkpoint.keys() if isinstance(checkpoint, dict) else set()
    if not {"hyper_parameters", "state_dict"} <= keys:
        raise ValueError(f"{path} is not a detkit training checkpoint (it has no hyper_parameters "
                         "and state_dict; ImageNet weights for the backbone go to "
                         "--model.backbone_weights)")
    return checkpoint


def _load_weights(module: DetectionModule, checkpoint: dict[str, Any], path: Any) -> None:
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:  # names and shapes; the hyperparameters were checked before
        raise ValueError(f"checkpoint {path}: its weights do not fit the model its "
                         f"hyperparameters describe ({one_line(error)[:400]})") from error


def _settings(cls: type, values: dict) -> Any:
    """Dataclass from a dict, lists back to tuples (YAML and checkpoints store lists)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# The settings that shape a model's weights: a checkpoint fits only a model built with the same.
ARCHITECTURE_KEYS = ("backbone", "norm", "fpn_channels", "roi_extractor", "roi_extractor_args",
                     "rpn.anchor_sizes", "rpn.aspect_ratios", "roi_head.representation_size",
                     "roi_head.bbox_reg_weights")


def checkpoint_mismatches(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """How a checkpoint's hyperparameters ``saved`` differ from ``wanted``, those of the model the
    command line and the data describe (both as ``DetectionModule.hparams``): the architecture
    (:data:`ARCHITECTURE_KEYS`), the class count and, where the checkpoint stores them (since
    ``category_names`` was added), the class names in label order. One phrase per difference."""
    problems = []
    for key in ARCHITECTURE_KEYS:
        ours, theirs = _lookup(saved, key), _lookup(wanted, key)
        if _plain(ours) != _plain(theirs):
            problems.append(f"model.{key} is {ours!r} in the checkpoint, {theirs!r} on the "
                            "command line")
    names = wanted.get("category_names")
    if saved["num_classes"] != wanted["num_classes"]:
        problems.append(f"the checkpoint has {saved['num_classes']} classes"
                        f"{_names(saved.get('category_names'))}, the data "
                        f"{wanted['num_classes']}{_names(names)}")
    elif saved.get("category_names") is not None and saved["category_names"] != names:
        problems.append(f"the checkpoint's classes are {saved['category_names']}, the data's "
                        f"{names} (label order)")
    return problems


def _lookup(hparams: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        hparams = hparams.get(part) if isinstance(hparams, dict) else None
    return hparams


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: checkpoints, YAML and dataclasses disagree on sequences."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _names(names: list[str] | None) -> str:
    return f" ({', '.join(names)})" if names else ""


def checkpoint_module(cli: CheckpointCLI) -> DetectionModule:
    """The command line's model with the weights of its ``--ckpt``, after checking that they fit
    (:func:`checkpoint_mismatches`); test-time settings are thus the command line's."""
    path, checkpoint = cli.config["ckpt"], cli.checkpoint
    problems = checkpoint_mismatches(checkpoint["hyper_parameters"], dict(cli.model.hparams))
    if problems:
        raise ValueError(f"checkpoint {path} does not fit the command line and data: "
                         f"{'; '.join(problems)}. Use the run's own config (config.yaml in its "
                         "run folder) or pass the checkpoint's settings (--model.KEY VALUE)")
    _load_weights(cli.model, checkpoint, path)
    return cli.model


def visualize(argv: list[str] | None = None) -> list[Path]:
    """Draw predictions (and, for deformable extractors, sampling bins before/after the learned
    offsets) on the first validation images; writes PNGs to ``--out``."""
    from detkit.engine.drawing import draw_detections
    from detkit.engine.offsets import is_deformable, offsets_figure
    from detkit.engine.visualize import save_png

    cli = _cli(VisualizeCLI, argv, trainer_defaults={"logger": False})
    module = checkpoint_module(cli).eval()
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
        if is_deformable(module.model):
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
    module = checkpoint_module(cli)
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
