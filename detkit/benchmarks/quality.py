"""Quality per budget: detkit's quickstart against torchvision's Faster R-CNN from scratch.

All train on the same data (the same DataModule, augmentation and batch size) for the same
wall-clock budget on this machine and are evaluated on the same held-out split with the same
COCO evaluation:

1. detkit trains with the quickstart config (``tools/train.py``); its fit time ``T``, validation
   passes included, is measured.
2. torchvision's ``FasterRCNN`` with its defaults (ResNet-18-FPN from
   ``resnet_fpn_backbone(weights=None)``: FrozenBatchNorm, a 256-channel FPN; its default
   anchors, RPN, sampler and head) trains for ``T`` seconds of pure training time with
   torchvision's reference recipe (:func:`reference_recipe`). Only what the data forces is
   changed: the class count, and its transform's resize and normalisation set to no-ops because
   images arrive resized and normalised.
3. torchvision tuned as a user would tune it for this data from the detkit config
   (:func:`tuned_settings`, :func:`tuned_recipe`): the same image size, the config's anchors,
   proposal budgets, sampled RoIs and box-head width, its normalisation (GroupNorm: trainable,
   where FrozenBatchNorm from scratch normalises nothing) and FPN width, and its optimizer,
   schedule and gradient clipping. torchvision's ResNet has no width setting, so its backbone
   stays full width (detkit's quickstart halves it).
4. All are evaluated on the test split (not the validation split detkit picked its best
   checkpoint on).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detkit.data import CocoDetection, DetectionDataModule, collate
from detkit.data.transforms import eval_transforms
from detkit.engine.module import (
    OptimizerSettings,
    ScheduleSettings,
    lr_factor,
    make_optimizer,
    outputs_in_original_pixels,
)
from detkit.eval import detections_to_coco_results, evaluate_detections
from detkit.models.backbone import backbone_settings, norm_layer

# From this step on, the steps the budget allows are re-estimated at every step (the budget
# times the steps so far over the time they took), and the schedule is sized to that estimate:
# it converges on the real count, so the decay ends with the budget, whatever the start-up cost.
MEASURE_FROM = 5


@dataclass
class BaselineRecipe:
    """How a baseline trains in a wall-clock budget: ``optimizer``, then a schedule
    (:class:`~detkit.engine.module.ScheduleSettings` ``kind``: step decay at ``decay_at``
    fractions of the budget, or cosine to zero over it) with a linear warmup of
    ``warmup_steps`` from ``warmup_factor``, at most ``warmup_fraction_cap`` of the steps the
    budget allows, decays by ``gamma``; gradient norms clipped at ``clip_grad_norm`` (None: not
    clipped)."""

    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    kind: str = "step"
    warmup_steps: int = 1000
    warmup_fraction_cap: float = 0.1
    decay_at: tuple[float, ...] = (2 / 3, 8 / 9)
    gamma: float = 0.1
    warmup_factor: float = 0.001
    clip_grad_norm: float | None = None

    def schedule(self, steps: int) -> ScheduleSettings:
        """The schedule for a budget of ``steps`` optimizer steps."""
        return ScheduleSettings(kind=self.kind,  # type: ignore[arg-type]
                                warmup_steps=min(self.warmup_steps,
                                                 int(self.warmup_fraction_cap * steps)),
                                warmup_factor=self.warmup_factor, gamma=self.gamma,
                                milestones=tuple(int(f * steps) for f in self.decay_at))


def reference_recipe(batch_size: int) -> BaselineRecipe:
    """torchvision's detection reference recipe (references/detection): SGD, lr 0.02 x
    batch/16, momentum 0.9, weight decay 1e-4, 1000 warmup iterations (here at most a tenth of
    the budget), x0.1 at 2/3 and 8/9 of the budget (its epochs 16 and 22 of 26)."""
    return BaselineRecipe(OptimizerSettings("sgd", lr=0.02 * batch_size / 16, momentum=0.9,
                                            weight_decay=1e-4))


def tuned_recipe(config: dict[str, Any]) -> BaselineRecipe:
    """The detkit config's own recipe (resolved ``config``: its ``model.optimizer``,
    ``model.schedule``, ``trainer.gradient_clip_val``), sized to the budget's steps: step-decay
    milestones become the same fractions of the budget as of ``trainer.max_steps``.

    Raises:
        ValueError: milestones without a ``trainer.max_steps`` to take them as fractions of."""
    model, trainer = config["model"], config.get("trainer", {})
    schedule = ScheduleSettings(**model.get("schedule", {}))
    max_steps = trainer.get("max_steps") or -1
    if schedule.milestones and max_steps <= 0:
        raise ValueError("model.schedule.milestones need trainer.max_steps for the baseline to "
                         "take them as fractions of its budget")
    return BaselineRecipe(OptimizerSettings(**model.get("optimizer", {})), kind=schedule.kind,
                          warmup_steps=schedule.warmup_steps, warmup_fraction_cap=1.0,
                          decay_at=tuple(m / max_steps for m in schedule.milestones),
                          gamma=schedule.gamma, warmup_factor=schedule.warmup_factor,
                          clip_grad_norm=trainer.get("gradient_clip_val"))


def tuned_settings(model: dict[str, Any]) -> dict[str, Any]:
    """What a user tuning torchvision's Faster R-CNN for this data would take from the detkit
    config's ``model`` section: anchors matched to the objects (one size per FPN level), the
    proposal budgets, the sampled RoIs per image (keyword arguments of torchvision's
    ``FasterRCNN``), and ``representation_size`` (box-head width), ``norm`` and
    ``fpn_channels`` (:func:`build_torchvision_baseline` builds them); the image size is the
    data's and set in both variants."""
    rpn, head = model.get("rpn", {}), model.get("roi_head", {})
    settings: dict[str, Any] = {}
    if "anchor_sizes" in rpn:
        ratios = tuple(rpn.get("aspect_ratios", (0.5, 1.0, 2.0)))
        settings["rpn_anchor_generator"] = AnchorGenerator(
            tuple((size,) for size in rpn["anchor_sizes"]), (ratios,) * len(rpn["anchor_sizes"]))
    for ours, theirs in (("pre_nms_top_n_train", "rpn_pre_nms_top_n_train"),
                         ("post_nms_top_n_train", "rpn_post_nms_top_n_train"),
                         ("pre_nms_top_n_test", "rpn_pre_nms_top_n_test"),
                         ("post_nms_top_n_test", "rpn_post_nms_top_n_test")):
        if ours in rpn:
            settings[theirs] = rpn[ours]
    if "batch_size_per_image" in head:
        settings["box_batch_size_per_image"] = head["batch_size_per_image"]
    if "representation_size" in head:
        settings["representation_size"] = head["representation_size"]
    if model.get("fpn_channels") is not None:
        settings["fpn_channels"] = model["fpn_channels"]
    # the norm detkit trains with (None in the config: GroupNorm from scratch)
    settings["norm"], _ = backbone_settings(model.get("backbone", "resnet18"),
                                            model.get("backbone_weights"), model.get("norm"),
                                            model.get("trainable_layers"))
    return settings


def torchvision_backbone(norm: str | None = None, fpn_channels: int | None = None) -> nn.Module:
    """torchvision's ResNet-18-FPN from scratch, all layers trainable: its default
    (``resnet_fpn_backbone``: FrozenBatchNorm, 256 FPN channels) when both are None; else
    built from torchvision's own parts (``resnet18(norm_layer=...)``, ``BackboneWithFPN``) with
    ``norm`` (:func:`detkit.models.backbone.norm_layer`; GroupNorm in the FPN too, as detkit
    does) and ``fpn_channels``."""
    if norm is None and fpn_channels is None:
        return resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    make = norm_layer(norm or "frozen_bn")  # type: ignore[arg-type]
    stages = {f"layer{i}": str(i - 1) for i in range(1, 5)}
    return BackboneWithFPN(resnet18(weights=None, norm_layer=make), stages, [64, 128, 256, 512],
                           fpn_channels or 256, extra_blocks=LastLevelMaxPool(),
                           norm_layer=make if norm == "group" else None)


def build_torchvision_baseline(num_classes: int, image_size: int,
                               tuned: dict[str, Any] | None = None) -> nn.Module:
    """torchvision's Faster R-CNN, ResNet-18-FPN from scratch (:func:`torchvision_backbone`).
    ``tuned`` (:func:`tuned_settings`) replaces the anchors, proposal budgets, sampled RoIs,
    head width, normalisation and FPN width; None keeps torchvision's defaults."""
    tuned = dict(tuned or {})
    backbone = torchvision_backbone(tuned.pop("norm", None), tuned.pop("fpn_channels", None))
    width = tuned.pop("representation_size", None)
    if width is not None:  # torchvision's box head is TwoMLPHead(256 * 7 * 7, 1024)
        resolution = 7
        tuned["box_head"] = TwoMLPHead(backbone.out_channels * resolution**2, width)
        tuned["box_predictor"] = FastRCNNPredictor(width, num_classes + 1)
        num_classes_arg = None
    else:
        num_classes_arg = num_classes + 1
    return TorchvisionFasterRCNN(backbone, num_classes=num_classes_arg, min_size=image_size,
                                 max_size=image_size, image_mean=[0.0, 0.0, 0.0],
                                 image_std=[1.0, 1.0, 1.0], **tuned)


def train_baseline(model: nn.Module, data: DetectionDataModule, seconds: float,
                   recipe: BaselineRecipe, seed: int = 0) -> int:
    """Train for ``seconds`` of wall-clock time; returns the number of optimizer steps. The
    schedule is sized to the steps the budget allows, re-estimated at every step from
    :data:`MEASURE_FROM` on (before that, the warmup runs as if the budget had no end)."""
    torch.manual_seed(seed)
    loader = data.train_dataloader()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, recipe.optimizer)
    model.train()
    start, step = time.perf_counter(), 0
    steps = 10**9  # the budget's steps, until measured
    schedule = recipe.schedule(steps)
    while True:
        for images, targets in loader:
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return step
            if step >= MEASURE_FROM:
                steps = max(step + 1, int(seconds * step / elapsed))
                schedule = recipe.schedule(steps)
            for group in optimizer.param_groups:
                group["lr"] = recipe.optimizer.lr * lr_factor(step, steps, schedule)
            tv_targets = [{"boxes": t["boxes_xyxy"], "labels": t["labels"]} for t in targets]
            loss = sum(model(images, tv_targets).values())
            if not torch.isfinite(loss):
                raise RuntimeError(f"torchvision baseline: non-finite loss at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, recipe.clip_grad_norm)
            optimizer.step()
            step += 1


class TorchvisionOutputs(nn.Module):
    """A torchvision detector whose outputs carry detkit's keys (``boxes`` -> ``boxes_xyxy``),
    so one conversion serves both models."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes_xyxy": o["boxes"], "scores": o["scores"], "labels": o["labels"]}
                for o in self.model(images)]


@torch.no_grad()
def evaluate_on(model: nn.Module, dataset: CocoDetection, batch_size: int = 4) -> dict[str, Any]:
    """COCO metrics of ``model`` (detkit outputs: ``boxes_xyxy``, ``scores``, ``labels``) on
    ``dataset``, predictions mapped to original pixels."""
    model.eval()
    detections: dict[int, dict[str, torch.Tensor]] = {}
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    for images, targets in loader:
        detections.update(outputs_in_original_pixels(model(images), targets))
    results = detections_to_coco_results(detections, dataset.label_to_category_id)
    return evaluate_detections(dataset.coco_gt, results, dataset.image_ids)


def test_split(data: DetectionDataModule, paths: dict[str, str]) -> CocoDetection:
    """The held-out split, with the validation transform."""
    return CocoDetection(paths["test_images"], paths["test_ann"],
                         eval_transforms(data.min_size, data.max_size))


def trained_setup(config: str, checkpoint: str) -> tuple[DetectionDataModule, nn.Module,
                                                          dict[str, Any]]:
    """The DataModule, the detkit detector with ``checkpoint``'s weights, and the resolved
    config (``model``, ``trainer``, ... sections) that ``config`` describes, read as
    ``tools/eval.py`` reads them (one parser for the config: the training command line's)."""
    from detkit.engine.cli import checkpoint_setup

    # --out is eval's output folder: nothing is written there
    cli, module = checkpoint_setup(["--config", config, "--ckpt", checkpoint, "--out", "unused"])
    return cli.datamodule, module.model, cli.config.as_dict()


def run_quality(config: str, *, seed: int = 0, out: str = "runs/quality") -> dict[str, Any]:
    """detkit (``config``) and the two torchvision baselines (defaults; tuned to ``config``)
    under the same wall-clock budget.

    Returns the three models' test-split metrics, the budget, each baseline's steps and the AP
    ratio of detkit to each.
    """
    from detkit.engine.cli import train

    start = time.perf_counter()
    metrics = train(["--config", config, "--seed_everything", str(seed),
                     "--trainer.logger.init_args.save_dir", out,
                     "--trainer.enable_progress_bar", "false"])
    budget = time.perf_counter() - start
    data, detkit_model, settings = trained_setup(config, metrics["checkpoint"])
    data.setup("fit")
    if data.format != "synthetic":
        raise ValueError("the quality comparison uses the built-in set's test split")
    test = test_split(data, data.coco_paths)  # the synthetic set's paths include its test split
    ours = evaluate_on(detkit_model, test)
    result: dict[str, Any] = {"budget_seconds": budget, "detkit": ours}
    variants = (("torchvision", None, reference_recipe(data.batch_size)),
                ("torchvision_tuned", tuned_settings(settings["model"]), tuned_recipe(settings)))
    for name, tuning, recipe in variants:
        torch.manual_seed(seed)  # the CLI above seeded with the config's seed; ours decides
        baseline = build_torchvision_baseline(data.num_classes, data.max_size, tuning)
        result[f"{name}_steps"] = train_baseline(baseline, data, budget, recipe, seed=seed)
        result[name] = evaluate_on(TorchvisionOutputs(baseline), test)
        result[f"ap_ratio_{name}"] = ours["AP"] / max(result[name]["AP"], 1e-9)
    return result


def format_quality(result: dict[str, Any]) -> str:
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARs", "ARm", "ARl")
    lines = [f"Quality per budget: {result['budget_seconds'] / 60:.1f} min of wall clock each "
             f"on this machine ({torch.get_num_threads()} threads). Test split of the built-in "
             "set.",
             "torchvision (defaults: FrozenBatchNorm, 256-channel FPN, anchors 32-512, "
             "2000/1000 proposals, 512 RoIs, 1024-wide head; its reference SGD recipe) ran "
             f"{result['torchvision_steps']} steps; torchvision tuned (the detkit config's "
             "anchors, proposals, sampled RoIs, head width, normalisation, FPN width, optimizer, "
             "schedule and clipping; same image size; full-width ResNet-18) ran "
             f"{result['torchvision_tuned_steps']}.",
             "", f"{'metric':<8}{'detkit':>10}{'torchvision':>13}{'tv tuned':>10}"]
    for key in keys:
        lines.append(f"{key:<8}{result['detkit'][key]:10.3f}{result['torchvision'][key]:13.3f}"
                     f"{result['torchvision_tuned'][key]:10.3f}")
    lines.append("")
    for name, label in (("torchvision", "torchvision (defaults)"),
                        ("torchvision_tuned", "torchvision (tuned)")):
        ratio = result[f"ap_ratio_{name}"]
        lines.append(f"AP ratio detkit / {label}: {ratio:.2f} ({100 * (ratio - 1):+.0f}% "
                     "relative)")
    return "\n".join(lines)
