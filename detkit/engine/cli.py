"""Command lines: ``tools/train.py`` and ``tools/eval.py`` (LightningCLI, YAML configs).

``train``: ``--config configs/NAME.yaml [--trainer.max_steps 100 ...] [--ckpt_path last]`` fits,
then evaluates the best checkpoint (by val AP) and prints the metrics table.
``evaluate``: ``--config CFG --ckpt CKPT --out DIR [data overrides]`` prints the table and
writes ``DIR/metrics.json`` and ``DIR/predictions.json`` (COCO results format, original image
coordinates and category ids).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from detkit.data import DetectionDataModule
from detkit.engine.checkpointing import RunCheckpoint
from detkit.engine.errors import DEBUG_FLAG, DEBUG_HELP, NonFiniteLossError, one_line
from detkit.engine.module import (
    DetectionModule,
    InitSettings,
    OptimizerSettings,
    ScheduleSettings,
    training_backbone_settings,
)
from detkit.engine.runs import RunFolderError, RunPlan, plan_run, run_key, run_lock, write_key
from detkit.eval import format_metrics_table
from detkit.models import RoIHeadSettings, RPNSettings


def trainer_defaults() -> dict[str, Any]:
    """Trainer defaults: TensorBoard logging, learning-rate logging, validation images and a
    one-line summary per validation. The callbacks are always present (LightingCLI's persistent
    callbacks); a config adds others under ``trainer.callbacks``. The run's checkpoints
    (:class:`~detkit.engine.checkpointing.RunCheckpoint`) and the step progress bar are added
    by :class:`TrainCLI` once the run folder is known."""
    from detkit.engine.callbacks import ValidationImageLogger, ValidationSummary

    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            # save_dir/name/EXTRACTOR/vN: TrainCLI sets the version (see detkit.engine.runs)
            "init_args": {"save_dir": "runs", "name": "detkit"},
        },
        "callbacks": [
            LearningRateMonitor(logging_interval="step"),
            ValidationImageLogger(),
            ValidationSummary(),
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
    """Adds the run-folder arguments; before the trainer is built, picks the run folder
    (:func:`~detkit.engine.runs.plan_run`), points the logger at it and adds the checkpoint
    callback and progress bar."""

    run: RunPlan
    key: dict[str, Any]  # the settings that decide the run's results (run.json)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="'last': resume the latest run of this config and extractor "
                            "(or the --run_dir run); a file: start a new run from it")
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="the run folder: resume the run there from its last.ckpt, or "
                            "start one there if empty (default: a new LOGDIR/NAME/EXTRACTOR/vN)")
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=100,
                            help="write last.ckpt every N optimizer steps (and at every "
                            "validation and the end); 0: only then")

    def before_instantiate_classes(self) -> None:
        from detkit.engine.callbacks import StepProgressBar

        config = self.config
        logger = _tensorboard_logger_config(config.trainer.logger)
        root = Path(logger.init_args.save_dir) if logger else Path("runs")
        name = (logger.init_args.name if logger else None) or "detkit"
        self.key = run_key(config.as_dict())
        if _ddp_child():  # the launching rank chose the folder (and took its lock)
            self.run = RunPlan(Path(os.environ[RUN_DIR_ENV]), os.environ.get(RESUME_ENV) or None)
        else:
            self.run = plan_run(root / name / config.model.roi_extractor, self.key,
                                run_dir=config.run_dir, ckpt_path=config.ckpt_path)
            os.environ[RUN_DIR_ENV] = str(self.run.directory)  # inherited by DDP ranks
            os.environ[RESUME_ENV] = self.run.resume_from or ""
        if logger:
            logger.init_args.save_dir = str(self.run.directory.parent)
            logger.init_args.name = ""
            logger.init_args.version = self.run.directory.name
            logger.init_args.default_hp_metric = False  # it logged a placeholder -1
            if self.run.resume_from is not None:
                # TensorBoard drops what the interrupted run logged after its checkpoint (the
                # resumed run logs those steps again), so no step is recorded twice
                logger.init_args.purge_step = checkpoint_step(self.run.resume_from)
        config.run_dir = str(self.run.directory)
        callbacks = self.trainer_defaults["callbacks"]
        if config.trainer.enable_checkpointing is not False:
            callbacks.append(RunCheckpoint(self.run.directory / "checkpoints",
                                           config.checkpoint_every_n_steps))
        if config.trainer.enable_progress_bar is not False:
            callbacks.append(StepProgressBar())


class _Parsed(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config


class _ParseOnlyCLI(TrainCLI):
    def before_instantiate_classes(self) -> None:
        raise _Parsed(self.config.as_dict())


def resolve_config(argv: list[str]) -> dict[str, Any]:
    """The training config ``argv`` resolves to (configs, overrides and defaults), as a dict,
    without building anything: what :func:`~detkit.engine.runs.run_key` keys a run on."""
    try:
        _cli(_ParseOnlyCLI, argv, trainer_defaults=trainer_defaults())
    except _Parsed as parsed:
        return parsed.config
    raise AssertionError("unreachable: the CLI parses before it instantiates")


def checkpoint_step(path: str | os.PathLike) -> int:
    """The global step a checkpoint was saved at (memory-mapped: its tensors are not read)."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


# DDP's launcher starts the other ranks by running the same command again; they read the run
# folder and checkpoint chosen by the first rank from these variables.
RUN_DIR_ENV, RESUME_ENV = "DETKIT_RUN_DIR", "DETKIT_RESUME_FROM"


def _ddp_child() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 and RUN_DIR_ENV in os.environ


def _tensorboard_logger_config(logger: Any) -> Any:
    """The logger's config namespace when it is a TensorBoardLogger (its log_dir is set to the run
    folder), else None (no logger, or another kind: it keeps its own settings)."""
    if getattr(logger, "class_path", None) == "lightning.pytorch.loggers.TensorBoardLogger":
        version = logger.init_args.version
        if version not in (None, ""):
            raise RunFolderError(f"trainer.logger.version={version!r}: runs are versioned by "
                                 "detkit (NAME/EXTRACTOR/vN); name a folder with --run_dir")
        return logger
    return None


# The training tool's own options (and LightningCLI's optimizer/lr_scheduler slots), written
# into every run's config.yaml; the checkpoint tools accept a run's config.yaml as --config and
# ignore them
TRAIN_ONLY_OPTIONS = ("ckpt_path", "run_dir", "checkpoint_every_n_steps", "optimizer",
                      "lr_scheduler")


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
        # a run's own config.yaml also holds the training tool's options: accepted, ignored
        for name in TRAIN_ONLY_OPTIONS:
            parser.add_argument(f"--{name}", type=Any, default=None, help=argparse.SUPPRESS)
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
        init = model.init if model.init is not None else InitSettings()
        model.norm, model.trainable_layers = training_backbone_settings(
            model.backbone, model.backbone_weights, model.norm, model.trainable_layers, init)
        model.backbone_weights = None
        if model.init is not None:
            model.init.checkpoint = None


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
    """Fit in the run folder (new, or resumed: see :class:`TrainCLI`), then evaluate the best
    checkpoint; returns the metrics (with ``run_dir`` and ``checkpoint``).

    Raises:
        NonFiniteLossError: a NaN/inf stopped training; the message names the step and the last
            good checkpoint.
        RunFolderError: the run folder holds another config, or another process writes it.
    """
    cli = _cli(TrainCLI, argv, trainer_defaults=trainer_defaults())
    trainer, model, data, run = cli.trainer, cli.model, cli.datamodule, cli.run
    with nullcontext() if _ddp_child() else run_lock(run.directory):
        write_key(run.directory, cli.key)
        _announce(trainer, run)
        model.share_frozen_front(cli.key, device=trainer.strategy.root_device.type,
                                 rank=trainer.global_rank,
                                 accumulate_grad_batches=trainer.accumulate_grad_batches)
        try:
            try:
                trainer.fit(model, datamodule=data, ckpt_path=run.resume_from)
            except NonFiniteLossError as error:
                raise NonFiniteLossError(f"{error}. {_good_checkpoint(trainer)}") from error
            metrics = _final_evaluation(trainer, model, data)  # may validate: front still open
        finally:
            if model.frozen_front is not None:
                model.frozen_front.close()
        if model.frozen_front is not None:  # how many steps and val batches read their front
            metrics["frozen_front"] = model.frozen_front.counts()
        drawn = _save_predictions_png(trainer, run.directory / PREDICTIONS_PNG)
    metrics["run_dir"] = str(run.directory)
    if trainer.is_global_zero:
        print(f"\nEvaluation of {metrics['checkpoint'] or 'the final weights'}:")
        print(format_metrics_table(metrics))
        if drawn is not None:
            print(f"Predictions on the first validation images (ground truth green, detections "
                  f"red): {drawn}")
        print(f"Run folder: {run.directory}  (TensorBoard: tensorboard --logdir "
              f"{run.directory}; resume: --run_dir {run.directory})")
    return metrics


PREDICTIONS_PNG = "predictions.png"


def _save_predictions_png(trainer: L.Trainer, path: Path) -> Path | None:
    """The final evaluation's drawn validation images (``ValidationImageLogger``) as one PNG in
    the run folder; None without that callback or images, or off the main process."""
    from detkit.engine.callbacks import ValidationImageLogger

    if not trainer.is_global_zero:
        return None
    logger = next((c for c in trainer.callbacks if isinstance(c, ValidationImageLogger)), None)
    return logger.save_row(path) if logger is not None else None


def _announce(trainer: L.Trainer, run: RunPlan) -> None:
    if not trainer.is_global_zero:
        return
    if run.resume_from is None:
        print(f"Run folder: {run.directory}")
        return
    print(f"Run folder: {run.directory}, resuming from {run.resume_from}")
    if run.changes:
        print("  changed since the run started: " + "; ".join(run.changes))


def _final_evaluation(trainer: L.Trainer, model: DetectionModule,
                      data: DetectionDataModule) -> dict[str, Any]:
    """Validate the best checkpoint (or last.ckpt when no validation ran during fit, or the final
    weights without checkpoints). Not logged: the best checkpoint's
    metrics are already in TensorBoard at their own step. When the best checkpoint holds the
    final weights and fit's last validation scored them (the study's and the quickstart's single
    validation at the last step), its metrics are those: evaluation is deterministic, so
    validating the same weights again would only repeat them."""
    throughput = model.train_images_per_second()
    callback = trainer.checkpoint_callback
    best = None
    if isinstance(callback, RunCheckpoint):
        # no validation during fit (max_steps before the first): the final state, last.ckpt
        best = callback.best_path or (callback.last_path if callback.last_path.exists() else None)
    scored = (isinstance(callback, RunCheckpoint) and callback.best_step is not None
              and callback.best_step == trainer.global_step == model.last_metrics_step)
    if not scored:
        if best is not None:
            model = load_module(best)
        loggers, trainer.loggers = trainer.loggers, []
        try:
            trainer.validate(model, datamodule=data, verbose=False)
        finally:
            trainer.loggers = loggers
    metrics = dict(model.last_metrics)
    if throughput is not None:
        metrics["train_images_per_s"] = throughput
    metrics["params"] = sum(p.numel() for p in model.parameters())
    metrics["checkpoint"] = str(best) if best is not None else None
    return metrics


def _good_checkpoint(trainer: L.Trainer) -> str:
    """Which checkpoint holds the last good weights (every written one is finite)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, RunCheckpoint) and callback.last_step is not None \
            and callback.last_path.exists():
        return (f"The last good checkpoint is {callback.last_path} (step {callback.last_step}); "
                f"resume with --run_dir {callback.dirpath.parent} after changing the settings "
                "(e.g. a lower --model.optimizer.lr) or with --model.nonfinite skip")
    return "No checkpoint was written before it."


def load_module(path: str | os.PathLike, checkpoint: dict[str, Any] | None = None
                ) -> DetectionModule:
    """A DetectionModule built from a checkpoint's hyperparameters with its weights, loaded with
    ``weights_only=True`` (the module saves plain hyperparameters, so no pickled objects are
    needed); ``checkpoint``: the file as :func:`read_checkpoint` returned it, if already read.
    Raises FileNotFoundError or ValueError for a file that is not such a checkpoint."""
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    hparams = dict(checkpoint["hyper_parameters"])
    hparams["backbone_weights"] = None  # the checkpoint's state dict has the weights
    init = {**hparams.pop("init", {}), "checkpoint": None}  # likewise the init checkpoint's
    module = DetectionModule(
        hparams.pop("num_classes"), rpn=_settings(RPNSettings, hparams.pop("rpn")),
        roi_head=_settings(RoIHeadSettings, hparams.pop("roi_head")),
        optimizer=_settings(OptimizerSettings, hparams.pop("optimizer")),
        schedule=_settings(ScheduleSettings, hparams.pop("schedule")),
        init=_settings(InitSettings, init), **hparams)
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
ARCHITECTURE_KEYS = ("backbone", "norm", "fpn_channels", "backbone_width", "roi_extractor",
                     "roi_extractor_args",
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
    """``key`` (dotted) in ``hparams``. A top-level key that a checkpoint lacks (written before
    the setting existed) is DetectionModule's default, as :func:`load_module` builds it."""
    if "." not in key and key not in hparams:
        parameter = inspect.signature(DetectionModule).parameters.get(key)
        return None if parameter is None else parameter.default
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
    """Draw predictions (and, for extractors that move their bins, the sampling bins before and
    after the learned offsets) on the first validation images; writes PNGs to ``--out``."""
    from detkit.engine.drawing import draw_detections, save_png
    from detkit.engine.offsets import offsets_figure

    cli = _cli(VisualizeCLI, argv, trainer_defaults={"logger": False})
    module = checkpoint_module(cli).eval()
    data = cli.datamodule
    data.setup("validate")
    out = Path(cli.config["out"])
    out.mkdir(parents=True, exist_ok=True)
    written, no_offsets, no_detections = [], 0, 0
    threshold, count = cli.config["score_thresh"], min(cli.config["num_images"],
                                                        len(data.val_dataset))
    for index in range(count):
        image, target = data.val_dataset[index]
        with torch.no_grad():
            output = module.model([image])[0]
        stem = out / f"image{target['image_id']}"
        no_detections += not bool((output["scores"] >= threshold).any())
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
    if no_detections:
        print(f"{no_detections} of {count} image(s) have no detection scoring >= {threshold} "
              "(lower --score_thresh to see weaker ones)")
    if no_offsets:
        print(f"no offsets drawn on {no_offsets} image(s): no detection scored >= "
              f"{cli.config['score_thresh']} there (lower --score_thresh to see more)")
    return written


def checkpoint_setup(argv: list[str] | None = None) -> tuple[EvalCLI, DetectionModule]:
    """``tools/eval.py``'s command line (``--config CFG --ckpt CKPT --out DIR ...``) parsed,
    and its model with the checkpoint's weights (:func:`checkpoint_module`): the data, detector
    and resolved settings that evaluation uses."""
    cli = _cli(EvalCLI, argv, trainer_defaults={"logger": False})
    return cli, checkpoint_module(cli)


def evaluate(argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on the config's validation data; write metrics and predictions."""
    cli, module = checkpoint_setup(argv)
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
