"""The LightningModule: trains a detkit Faster R-CNN and evaluates it with COCO metrics."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from detkit._validation import weights_file
from detkit.data import original_scale
from detkit.engine.errors import NonFiniteLossError
from detkit.engine.frozen_front import FrozenFrontStore
from detkit.eval import (
    detections_to_coco_results,
    evaluate_detections,
    ordered_metrics,
    proposal_budgets,
    proposal_recall,
    scalar_metrics,
    voc_ap,
)
from detkit.models import RoIHeadSettings, RPNSettings, build_faster_rcnn
from detkit.models.backbone import Norm, backbone_settings
from detkit.models.parts import check_parts, freeze_parts, load_parts

log = logging.getLogger(__name__)


@dataclass
class OptimizerSettings:
    """SGD (the Faster R-CNN recipe) or AdamW."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4


@dataclass
class ScheduleSettings:
    """Linear warmup, then step decay at ``milestones`` (by ``gamma``), cosine to zero over the
    run, or constant. Steps are optimizer steps."""

    kind: Literal["step", "cosine", "constant"] = "step"
    warmup_steps: int = 100
    warmup_factor: float = 0.001
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1


@dataclass
class InitSettings:
    """Start parts of the detector from another detkit run, and keep parts fixed.

    ``--model.init.checkpoint RUN/checkpoints/best.ckpt --model.init.freeze [backbone,fpn,rpn]``
    trains only the RoI extractor and box head, on the features and proposals of a trained
    detector (the study's controlled protocol; head-only fine-tuning).

    Attributes:
        checkpoint: a detkit training checkpoint (``.ckpt``), or None (nothing is copied).
        parts: the parts copied from it (names in :data:`detkit.models.parts.PARTS`): by default
            the backbone, FPN and RPN; the RoI extractor and box head start fresh.
        freeze: the parts kept fixed in training (copied or not). Freezing ``backbone`` means no
            trainable stage, so ``trainable_layers`` must then be unset or 0.
        frozen_cache: with the backbone, FPN and RPN frozen, a folder where each training step's
            front (their outputs) is stored by the first run and read by later runs with the
            same data, seed and frozen weights (:mod:`detkit.engine.frozen_front`): the same
            results, about a quarter of a roi_align step's time on a CPU. None: compute it.
    """

    checkpoint: str | None = None
    parts: tuple[str, ...] = ("backbone", "fpn", "rpn")
    freeze: tuple[str, ...] = ()
    frozen_cache: str | None = None


NonFinitePolicy = Literal["skip", "stop"]


def nonfinite_tensors(named: Iterable[tuple[str, Tensor | None]]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity (None entries ignored).
    One device sync when all are finite (the training step's case); per-tensor checks only to
    name the bad ones."""
    named = [(name, value) for name, value in named
             if value is not None and value.is_floating_point()]
    if not named or bool(torch.stack([torch.isfinite(v).all() for _, v in named]).all()):
        return []
    return [name for name, value in named if not bool(torch.isfinite(value).all())]


def step_seed(base_seed: int, step: int, rank: int = 0) -> int:
    """The seed of torch's RNG for optimizer step ``step``: a function of the run's seed, the step
    and the process rank only, so a resumed run draws the same random numbers (RPN/RoI sampling)
    at each step as an uninterrupted one, whatever ran in between (validation, restarts)."""
    return int(np.random.SeedSequence([base_seed, step, rank]).generate_state(1, np.uint64)[0]
               >> 1)


def lr_factor(step: int, total_steps: int, schedule: ScheduleSettings) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``."""
    if step < schedule.warmup_steps:
        alpha = step / max(1, schedule.warmup_steps)
        warm = schedule.warmup_factor * (1 - alpha) + alpha
    else:
        warm = 1.0
    if schedule.kind == "step":
        return warm * schedule.gamma ** sum(step >= m for m in schedule.milestones)
    if schedule.kind == "cosine":
        progress = min(1.0, step / max(1, total_steps))
        return warm * 0.5 * (1 + math.cos(math.pi * progress))
    return warm


def make_optimizer(params: list[nn.Parameter], settings: OptimizerSettings
                   ) -> torch.optim.Optimizer:
    """The optimizer ``settings`` describe, over ``params`` (the trainable ones)."""
    if settings.name == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay)
    if settings.name == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    raise ValueError(f"optimizer.name must be 'sgd' or 'adamw', got {settings.name!r}")


class DetectionModule(L.LightningModule):
    """Faster R-CNN with a pluggable RoI extractor, trained and evaluated through Lightning.

    Args:
        num_classes: object classes (linked from the data module by the CLI).
        category_names: their names in label order (linked from the data module by the CLI),
            kept in the checkpoint so that evaluation and prediction can check and name classes.
        backbone, norm, backbone_weights, trainable_layers, fpn_channels, backbone_width: see
            ``build_faster_rcnn``; the checkpoint stores the norm and trainable stages chosen.
        roi_extractor: a name in ``detkit.models.EXTRACTORS``; ``roi_extractor_args`` its options.
        rpn, roi_head: model settings.
        init: parts started from another run's checkpoint, and parts kept fixed
            (:class:`InitSettings`; default: none of either).
        optimizer, schedule: training settings (gradient clipping and precision are the
            Trainer's: ``--trainer.gradient_clip_val``, ``--trainer.precision``).
        proposal_recall_every: score RPN proposal recall at validation 1, 1 + k, 1 + 2k, ...
            (k = this value; 1 = every validation, 0 = never). Its keys are
            ``proposal_AR{,s,m,l}@N`` for N in ``proposal_budgets(rpn.post_nms_top_n_test)``.
        nonfinite: what a NaN/inf loss or gradient does: ``"stop"`` raises
            :class:`NonFiniteLossError` before the optimizer step; ``"skip"`` drops that step's
            update (the batch is consumed, the step counter and schedule advance) with a warning.
        max_nonfinite_skips: with ``"skip"``, stop after this many skipped steps in a row.
    """

    def __init__(
        self, num_classes: int, *, category_names: list[str] | None = None,
        backbone: str = "resnet18", norm: Norm | None = None, backbone_weights: str | None = None,
        trainable_layers: int | None = None, fpn_channels: int = 256, backbone_width: int = 64,
        roi_extractor: str = "roi_align", roi_extractor_args: dict[str, Any] | None = None,
        rpn: RPNSettings | None = None, roi_head: RoIHeadSettings | None = None,
        optimizer: OptimizerSettings | None = None, schedule: ScheduleSettings | None = None,
        init: InitSettings | None = None, proposal_recall_every: int = 1,
        nonfinite: NonFinitePolicy = "stop", max_nonfinite_skips: int = 5,
    ) -> None:
        super().__init__()
        if proposal_recall_every < 0:
            raise ValueError(f"proposal_recall_every must be >= 0 (0 = off), got "
                             f"{proposal_recall_every}")
        if nonfinite not in ("skip", "stop") or max_nonfinite_skips < 1:
            raise ValueError("need nonfinite 'skip' or 'stop' and max_nonfinite_skips >= 1, got "
                             f"{nonfinite!r}, {max_nonfinite_skips}")
        rpn, roi_head = rpn or RPNSettings(), roi_head or RoIHeadSettings()
        if category_names is not None and len(category_names) != num_classes:
            raise ValueError(f"category_names has {len(category_names)} names for {num_classes} "
                             f"classes: {category_names}")
        init = init or InitSettings()
        # stored resolved: a checkpoint loads without its backbone_weights (see load_module)
        norm, trainable_layers = training_backbone_settings(backbone, backbone_weights, norm,
                                                            trainable_layers, init)
        self.optimizer_settings = optimizer or OptimizerSettings()
        self.schedule = schedule or ScheduleSettings()
        # plain types only, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters({
            "num_classes": num_classes,
            "category_names": list(category_names) if category_names is not None else None,
            "backbone": backbone, "norm": norm,
            "backbone_weights": backbone_weights, "trainable_layers": trainable_layers,
            "fpn_channels": fpn_channels, "backbone_width": backbone_width,
            "roi_extractor": roi_extractor, "roi_extractor_args": roi_extractor_args or {},
            "rpn": dataclasses.asdict(rpn), "roi_head": dataclasses.asdict(roi_head),
            "optimizer": dataclasses.asdict(self.optimizer_settings),
            "schedule": dataclasses.asdict(self.schedule),
            "init": {**dataclasses.asdict(init), "parts": list(init.parts),
                     "freeze": list(init.freeze)},
            "proposal_recall_every": proposal_recall_every,
            "nonfinite": nonfinite, "max_nonfinite_skips": max_nonfinite_skips,
        })
        self.proposal_recall_every = proposal_recall_every
        self._proposal_limits = proposal_budgets(rpn.post_nms_top_n_test)
        self._validations = 0  # finished validations (sanity checks not counted)
        self.model = build_faster_rcnn(
            num_classes, backbone=backbone, norm=norm, backbone_weights=backbone_weights,
            trainable_layers=trainable_layers, fpn_channels=fpn_channels,
            backbone_width=backbone_width, roi_extractor=roi_extractor,
            roi_extractor_args=roi_extractor_args, rpn=rpn, roi_head=roi_head)
        if init.checkpoint is not None:
            load_parts(self.model, detector_state(init.checkpoint), init.parts,
                       source=f"model.init.checkpoint {init.checkpoint}")
        freeze_parts(self.model, init.freeze)
        self._val_proposals: dict[int, Tensor] = {}
        self._val_detections: dict[int, dict[str, Tensor]] = {}
        self._step_clock: float | None = None
        self._step_seconds: list[float] = []  # training step intervals (validation excluded)
        self._infer_seconds = 0.0
        self._infer_images = 0
        self._batch_size = 1
        self.last_metrics: dict[str, Any] = {}
        self.last_metrics_step: int | None = None  # see on_validation_epoch_end
        self.last_predictions: list[dict] = []
        self.nonfinite_skips = 0  # steps skipped in this run (all), and in a row
        self._skips_in_a_row = 0
        self._base_seed = torch.initial_seed()  # seed_everything's, before any per-step seeding
        # shares the frozen front's outputs between runs (model.init.frozen_cache): set by
        # share_frozen_front, which needs the run key
        self.frozen_front: FrozenFrontStore | None = None

    def share_frozen_front(self, key: dict[str, Any], *, device: str = "cpu", rank: int = 0,
                           accumulate_grad_batches: int = 1) -> None:
        """Read and store each training step's frozen front in ``model.init.frozen_cache``
        (nothing without it); ``key`` is the run key (:func:`detkit.engine.runs.run_key`),
        ``device`` the type of device training runs on. ``frozen_front.close()`` when done.

        Raises:
            ValueError: gradient accumulation (its steps take several batches; not supported).
        """
        root = self.hparams["init"].get("frozen_cache")
        if root is None:
            return
        if accumulate_grad_batches != 1:
            raise ValueError("model.init.frozen_cache keys the front by optimizer step, which "
                             "takes one batch: leave trainer.accumulate_grad_batches at 1 (got "
                             f"{accumulate_grad_batches})")
        self.frozen_front = FrozenFrontStore(root, key, device=device, rank=rank)

    # ----------------------------------------------------------------------------- training
    def forward(self, images: list[Tensor], targets: list[dict] | None = None) -> Any:
        return self.model(images, targets)

    def training_step(self, batch: tuple[list[Tensor], list[dict]],
                      batch_idx: int) -> Tensor | None:
        images, targets = batch
        front = (None if self.frozen_front is None else
                 functools.partial(self.frozen_front.front, self.global_step))
        losses = self.model(images, targets, front=front)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            self._nonfinite(f"non-finite loss ({terms})")
            return None  # Lightning skips backward and the optimizer step
        batch_size = len(images)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        now = time.perf_counter()
        if self._step_clock is not None:
            self._step_seconds.append(now - self._step_clock)
            self.log("train/images_per_sec", batch_size * self._world() / self._step_seconds[-1],
                     prog_bar=True, batch_size=batch_size)
        self._step_clock = now
        self._batch_size = batch_size
        return loss

    def on_train_start(self) -> None:
        """Make each step's batch a function of the global step (see :meth:`_data_position`):
        a resumed run continues in the epoch's order where its checkpoint left off (Lightning
        would restart the epoch's loader from its first batch)."""
        position = self._data_position()
        if position is None:
            return
        sampler, loader, epoch, batches = position
        sampler.resume_at(epoch, batches, loader.batch_size)
        if loader.num_workers > 0 and self.global_step:  # workers took indices already
            iter(self.trainer.fit_loop._data_fetcher)

    def on_train_epoch_start(self) -> None:
        position = self._data_position()
        if position is not None:  # Lightning's epoch count may be one ahead after a resume
            position[0].set_epoch(position[2])

    def _data_position(self) -> tuple[Any, Any, int, int] | None:
        """``(sampler, loader, epoch, batches done in it)`` from the global step, when the loader
        uses :class:`~detkit.data.samplers.EpochSeededSampler` (not under DDP, where Lightning
        swaps in its DistributedSampler: seeded per epoch, but a resume restarts the epoch)."""
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if not hasattr(sampler, "resume_at") or not len(loader):
            return None
        done = self.global_step * self.trainer.accumulate_grad_batches
        return sampler, loader, done // len(loader), done % len(loader)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        rank = self.trainer.global_rank if self._trainer is not None else 0
        torch.manual_seed(step_seed(self._base_seed, self.global_step, rank))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients are complete (and unscaled under AMP) here, before clipping and the step:
        a non-finite one stops training or drops this step's update (all gradients set to None,
        which SGD and AdamW skip, momentum and decay included)."""
        if self._scaler_handles_overflow():
            return
        params = [(n, p.grad) for n, p in self.named_parameters() if p.grad is not None]
        if not params:  # training_step returned None (a skipped loss): nothing to check
            return
        bad = nonfinite_tensors(params)
        if bad:
            self._nonfinite(f"non-finite gradients in {len(bad)} of {len(params)} tensors "
                            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
            optimizer.zero_grad(set_to_none=True)
        else:
            self._skips_in_a_row = 0

    def _scaler_handles_overflow(self) -> bool:
        """fp16 AMP: the GradScaler itself skips steps whose gradients overflow (and lowers its
        scale), which is routine early in training, not divergence."""
        if self._trainer is None:
            return False
        return getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def _nonfinite(self, what: str) -> None:
        """Stop (raise) or count a skipped step, by ``hparams.nonfinite``."""
        where = f"at step {self.global_step} (epoch {self.current_epoch})"
        policy, limit = self.hparams["nonfinite"], self.hparams["max_nonfinite_skips"]
        if policy == "stop":
            raise NonFiniteLossError(f"{what} {where}; training stopped before the optimizer "
                                     "step (model.nonfinite=stop)")
        self.nonfinite_skips += 1
        self._skips_in_a_row += 1
        if self._skips_in_a_row >= limit:
            raise NonFiniteLossError(f"{what} {where}: {self._skips_in_a_row} steps in a row "
                                     f"skipped (model.max_nonfinite_skips={limit}); training "
                                     "stopped before the optimizer step")
        log.warning("%s %s: optimizer step skipped (%d skipped in this run, %d in a row; stops "
                    "at %d in a row)", what, where, self.nonfinite_skips, self._skips_in_a_row,
                    limit)
        self.log("train/nonfinite_skips", float(self.nonfinite_skips))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """No checkpoint with a NaN or infinity is ever written (weights or optimizer state)."""
        named = list(checkpoint.get("state_dict", {}).items())
        for i, optimizer in enumerate(checkpoint.get("optimizer_states", [])):
            for key, state in optimizer.get("state", {}).items():
                named += [(f"optimizer{i}.state[{key}].{k}", v) for k, v in state.items()
                          if isinstance(v, Tensor)]
        bad = nonfinite_tensors(named)
        if bad:
            raise NonFiniteLossError(
                f"refusing to write a checkpoint at step {checkpoint.get('global_step')}: "
                f"{len(bad)} tensors hold NaN or inf ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''})")

    def _world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def train_images_per_second(self) -> float | None:
        """Median training throughput so far (all ranks), or None before two steps."""
        if not self._step_seconds:
            return None
        median = sorted(self._step_seconds)[len(self._step_seconds) // 2]
        return self._batch_size * self._world() / median

    def configure_optimizers(self) -> dict:
        optimizer = make_optimizer([p for p in self.parameters() if p.requires_grad],
                                   self.optimizer_settings)
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, self.schedule))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_proposals, self._val_detections = {}, {}
        self._infer_seconds, self._infer_images = 0.0, 0
        self._step_clock = None  # the interval spanning a validation is not a training step

    def validation_step(self, batch: tuple[list[Tensor], list[dict]], batch_idx: int) -> list:
        images, targets = batch
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        front = (None if self.frozen_front is None else  # the same val batch in every run
                 functools.partial(self.frozen_front.front, batch_idx, stage="val"))
        outputs = self.model(images, front=front)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._infer_seconds += time.perf_counter() - start
        self._infer_images += len(images)
        for image_id, output in outputs_in_original_pixels(outputs, targets).items():
            self._val_proposals[image_id] = output.pop("proposals")
            self._val_detections[image_id] = output
        return outputs

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._validations += 1
        proposals, detections = self._gather()
        dataset = self._val_dataset()
        results = detections_to_coco_results(detections, dataset.label_to_category_id)
        # the images this validation saw (all of them, unless limit_val_batches is set)
        seen = sorted(detections)
        metrics = evaluate_detections(dataset.coco_gt, results, seen)
        if self._proposal_recall_due():
            metrics.update(proposal_recall(dataset.coco_gt, proposals, self._proposal_limits,
                                           image_ids=seen))
        if "voc" in self.trainer.datamodule.extra_metrics:
            labels = range(1, len(dataset.category_names) + 1)
            truth = {k: v for k, v in dataset.voc_ground_truth().items() if k in proposals}
            voc = voc_ap(truth, detections, list(labels))
            metrics.update({k: v for k, v in voc.items() if k != "voc_per_class"})
        # val images left out as unreadable (skip_bad_images): in neither `seen` nor the results
        metrics["images_skipped"] = self.trainer.datamodule.val_images_skipped
        if self._infer_images:
            metrics["infer_ms_per_image"] = 1e3 * self._infer_seconds / self._infer_images
        throughput = self.train_images_per_second()
        if throughput is not None:
            metrics["train_images_per_s"] = throughput
        self.last_metrics = ordered_metrics(metrics)
        # the step of these metrics, when they hold everything a validation can give (proposal
        # recall too, unless it is off): the final evaluation of that step's weights reuses them
        complete = ((self.proposal_recall_every == 0 or self._proposal_recall_due())
                    and len(seen) == len(dataset))  # not a val_max_images subset
        self.last_metrics_step = self.global_step if complete else None
        self.last_predictions = results
        self.log_dict({f"val/{k}": v for k, v in scalar_metrics(metrics).items()},
                      sync_dist=False, rank_zero_only=False)
        for name, ap in metrics.get("per_class", {}).items():
            self.log(f"val_per_class/{name}", float(ap))

    def _proposal_recall_due(self) -> bool:
        return proposal_recall_due(self._validations, self.proposal_recall_every)

    def _gather(self) -> tuple[dict[int, Tensor], dict[int, dict]]:
        """All ranks' validation outputs (DDP: each rank saw a shard)."""
        local = (self._val_proposals, self._val_detections)
        if self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return local
        gathered: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, local)
        proposals = {k: v for part in gathered for k, v in part[0].items()}
        detections = {k: v for part in gathered for k, v in part[1].items()}
        return proposals, detections

    def _val_dataset(self) -> Any:
        return self.trainer.datamodule.val_dataset


def training_backbone_settings(backbone: str, backbone_weights: str | None, norm: Norm | None,
                               trainable_layers: int | None, init: InitSettings
                               ) -> tuple[Norm, int]:
    """The norm and trainable stages the model gets (:func:`~detkit.models.backbone.
    backbone_settings`), with ``init`` checked against the other settings first: a frozen
    backbone has 0 trainable stages. Training and the checkpoint tools decide them alike."""
    trainable_layers = _check_init(init, backbone_weights, trainable_layers)
    return backbone_settings(backbone, backbone_weights, norm, trainable_layers)


def _check_init(init: InitSettings, backbone_weights: str | None,
                trainable_layers: int | None) -> int | None:
    """Refuse contradictory settings; returns ``trainable_layers`` (0 when the backbone is frozen
    and it was unset, so the stored hyperparameters say what trains)."""
    check_parts("model.init.parts", init.parts)
    check_parts("model.init.freeze", init.freeze)
    if init.checkpoint is not None and "backbone" in init.parts and backbone_weights is not None:
        raise ValueError(f"model.backbone_weights ({backbone_weights}) and model.init.checkpoint "
                         f"({init.checkpoint}) both give the backbone: set one, or leave "
                         "'backbone' out of model.init.parts")
    if init.frozen_cache is not None and not {"backbone", "fpn", "rpn"} <= set(init.freeze):
        raise ValueError(f"model.init.frozen_cache ({init.frozen_cache}) shares the outputs of a "
                         "frozen backbone, FPN and RPN: model.init.freeze must hold all three, "
                         f"got {list(init.freeze)}")
    if "backbone" in init.freeze:
        if trainable_layers not in (None, 0):
            raise ValueError(f"model.init.freeze has 'backbone' but model.trainable_layers is "
                             f"{trainable_layers}: a frozen backbone has no trainable stage "
                             "(leave trainable_layers unset, or unfreeze the backbone)")
        return 0
    return trainable_layers


def detector_state(path: str) -> dict[str, Tensor]:
    """The detector's state dict (``FasterRCNN`` keys) in the detkit training checkpoint at
    ``path``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable detkit training checkpoint.
    """
    file = weights_file(path)
    if file is None:
        kind = "is a directory" if Path(path).expanduser().is_dir() else "does not exist"
        raise FileNotFoundError(f"model.init.checkpoint {path} {kind}")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises several types for a file it cannot parse
        raise ValueError(f"model.init.checkpoint {path} is unreadable ({error})") from error
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(k.startswith(MODEL_PREFIX) for k in state):
        raise ValueError(f"model.init.checkpoint {path} is not a detkit training checkpoint (no "
                         f"'state_dict' with {MODEL_PREFIX}* weights)")
    return {k.removeprefix(MODEL_PREFIX): v for k, v in state.items()
            if k.startswith(MODEL_PREFIX)}


MODEL_PREFIX = "model."  # DetectionModule.model's weights in a training checkpoint


def proposal_recall_due(validation: int, every: int) -> bool:
    """Whether validation number ``validation`` (1 = the first) scores proposal recall: the
    1st, (1 + k)th, (1 + 2k)th, ... with k = ``every``; never when ``every`` is 0. The first
    always does, so a freshly loaded checkpoint's evaluation has it."""
    return every > 0 and (validation - 1) % every == 0


def outputs_in_original_pixels(outputs: list[dict[str, Tensor]], targets: list[dict]
                               ) -> dict[int, dict[str, Tensor]]:
    """Model outputs mapped back to each image file's pixels, on the CPU, by image id.

    Args:
        outputs: per image ``{"boxes_xyxy": Tensor[N, 4], "scores": Tensor[N],
            "labels": Tensor[N]}`` and optionally ``"proposals_xyxy": Tensor[P, 4]``, in the
            network input's pixels.
        targets: the batch's targets (``image_id``, ``orig_size``, ``input_size``).

    Returns:
        ``{image_id: {"boxes", "scores", "labels"[, "proposals"]}}`` with float32 xyxy boxes in
        original pixels: what ``detections_to_coco_results``, ``voc_ap`` and
        ``proposal_recall`` take.
    """
    mapped = {}
    for output, target in zip(outputs, targets, strict=True):
        scale = original_scale(target).to(output["boxes_xyxy"].device)
        entry = {"boxes": (output["boxes_xyxy"].float() * scale).cpu(),
                 "scores": output["scores"].cpu(), "labels": output["labels"].cpu()}
        if "proposals_xyxy" in output:
            entry["proposals"] = (output["proposals_xyxy"].float() * scale).cpu()
        mapped[int(target["image_id"])] = entry
    return mapped
