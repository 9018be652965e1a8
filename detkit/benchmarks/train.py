"""Training and inference speed of detkit's Faster R-CNN against torchvision's.

Both detectors get the same backbone builder (ResNet + FPN, same normalisation), the same image
size, anchors, RPN and RoI sampler settings, and the same fixed batch of images and boxes; only the
framework around them differs (detkit: its RoI extractor and batching; torchvision: its
``FasterRCNN`` with ``MultiScaleRoIAlign`` and ``GeneralizedRCNNTransform``, set to a no-op
resize and identity normalisation so that neither resizes). Steps are timed interleaved in one
process (detkit, torchvision, detkit, ...), medians reported.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.ops import MultiScaleRoIAlign

from detkit.benchmarks.timing import interleaved_medians
from detkit.models import EXTRACTORS, RoIHeadSettings, RPNSettings, build_faster_rcnn
from detkit.models.faster_rcnn import FasterRCNN


@dataclass(frozen=True)
class TrainBenchConfig:
    backbone: str = "resnet18"
    norm: str = "group"
    image_size: int = 320
    batch: int = 2
    objects: int = 4
    num_classes: int = 3
    repeats: int = 5
    warmup: int = 1
    extractors: str = ",".join(EXTRACTORS)  # compared with roi_align; "" to skip
    lightning_steps: int = 6  # steps of the Lightning-loop overhead check; 0 to skip
    seed: int = 0


def make_batch(cfg: TrainBenchConfig) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Fixed images (noise with painted boxes) and targets in detkit's format."""
    g = torch.Generator().manual_seed(cfg.seed)
    size = cfg.image_size
    images, targets = [], []
    for _ in range(cfg.batch):
        image = torch.randn(3, size, size, generator=g)
        wh = torch.rand(cfg.objects, 2, generator=g) * size * 0.5 + 16
        xy = torch.rand(cfg.objects, 2, generator=g) * (size - wh)
        boxes = torch.cat([xy, xy + wh], dim=1)
        labels = torch.randint(1, cfg.num_classes + 1, (cfg.objects,), generator=g)
        for box, label in zip(boxes.long(), labels, strict=True):
            image[int(label) % 3, box[1] : box[3], box[0] : box[2]] += 2.0
        images.append(image)
        targets.append({"boxes_xyxy": boxes, "labels": labels})
    return images, targets


def build_pair(cfg: TrainBenchConfig, extractor: str = "roi_align") -> tuple[FasterRCNN, nn.Module]:
    """detkit's model and torchvision's FasterRCNN with identical settings and initial weights."""
    torch.manual_seed(cfg.seed)
    rpn, head = RPNSettings(), RoIHeadSettings()
    ours = build_faster_rcnn(cfg.num_classes, backbone=cfg.backbone, norm=cfg.norm,
                             roi_extractor=extractor, rpn=rpn, roi_head=head)
    body = copy.deepcopy(ours.backbone.body)  # same backbone+FPN module and weights
    theirs = TorchvisionFasterRCNN(
        body, num_classes=None, min_size=cfg.image_size,
        max_size=cfg.image_size, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=copy.deepcopy(ours.rpn.anchor_generator),
        rpn_head=copy.deepcopy(ours.rpn.head),
        rpn_pre_nms_top_n_train=rpn.pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn.pre_nms_top_n_test,
        rpn_post_nms_top_n_train=rpn.post_nms_top_n_train,
        rpn_post_nms_top_n_test=rpn.post_nms_top_n_test, rpn_nms_thresh=rpn.nms_thresh,
        rpn_fg_iou_thresh=rpn.fg_iou_thresh, rpn_bg_iou_thresh=rpn.bg_iou_thresh,
        rpn_batch_size_per_image=rpn.batch_size_per_image,
        rpn_positive_fraction=rpn.positive_fraction,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2),
        box_head=copy.deepcopy(ours.roi_heads.box_head),
        box_predictor=copy.deepcopy(ours.roi_heads.box_predictor),
        box_score_thresh=head.score_thresh, box_nms_thresh=head.nms_thresh,
        box_detections_per_img=head.detections_per_img, box_fg_iou_thresh=head.fg_iou_thresh,
        box_bg_iou_thresh=head.bg_iou_thresh,
        box_batch_size_per_image=head.batch_size_per_image,
        box_positive_fraction=head.positive_fraction, bbox_reg_weights=head.bbox_reg_weights,
    )
    return ours, theirs


def _train_step(model: nn.Module, images: list[Tensor], targets: list[dict],
                optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    def step() -> None:
        model.train()
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def _infer(model: nn.Module, images: list[Tensor]) -> Callable[[], None]:
    def run() -> None:
        model.eval()
        with torch.no_grad():
            model(images)
    return run


def compare_with_torchvision(cfg: TrainBenchConfig) -> dict[str, float]:
    """Training images/s and inference ms/image, detkit (roi_align) and torchvision."""
    images, targets = make_batch(cfg)
    tv_targets = [{"boxes": t["boxes_xyxy"], "labels": t["labels"]} for t in targets]
    ours, theirs = build_pair(cfg)
    steps = {
        "detkit": _train_step(ours, images, targets, torch.optim.SGD(ours.parameters(), 0.001)),
        "torchvision": _train_step(theirs, images, tv_targets,
                                   torch.optim.SGD(theirs.parameters(), 0.001)),
    }
    train_ms = interleaved_medians(steps, cfg.repeats, cfg.warmup, torch.device("cpu"))
    infer_ms = interleaved_medians({"detkit": _infer(ours, images),
                                    "torchvision": _infer(theirs, images)},
                                   cfg.repeats, cfg.warmup, torch.device("cpu"))
    return {
        "detkit_train_images_per_s": cfg.batch / train_ms["detkit"] * 1e3,
        "torchvision_train_images_per_s": cfg.batch / train_ms["torchvision"] * 1e3,
        "detkit_infer_ms_per_image": infer_ms["detkit"] / cfg.batch,
        "torchvision_infer_ms_per_image": infer_ms["torchvision"] / cfg.batch,
    }


def compare_extractors(cfg: TrainBenchConfig) -> dict[str, dict[str, float]]:
    """Training images/s and inference ms/image of each extractor (detkit models only)."""
    names = [n for n in cfg.extractors.split(",") if n]
    if not names:
        return {}
    images, targets = make_batch(cfg)
    models = {}
    for name in names:
        torch.manual_seed(cfg.seed)
        models[name] = build_faster_rcnn(cfg.num_classes, backbone=cfg.backbone, norm=cfg.norm,
                                         roi_extractor=name)
    train_ms = interleaved_medians(
        {n: _train_step(m, images, targets, torch.optim.SGD(m.parameters(), 0.001))
         for n, m in models.items()}, cfg.repeats, cfg.warmup, torch.device("cpu"))
    infer_ms = interleaved_medians({n: _infer(m, images) for n, m in models.items()},
                                   cfg.repeats, cfg.warmup, torch.device("cpu"))
    return {n: {"train_images_per_s": cfg.batch / train_ms[n] * 1e3,
                "infer_ms_per_image": infer_ms[n] / cfg.batch,
                "params_m": sum(p.numel() for p in models[n].parameters()) / 1e6}
            for n in names}


class _StepClock(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: object) -> None:
        self.starts.append(time.perf_counter())


class _FixedBatchModule(L.LightningModule):
    def __init__(self, model: nn.Module, batch: tuple[list[Tensor], list[dict]]) -> None:
        super().__init__()
        self.model, self.batch = model, batch

    def training_step(self, batch: object, batch_idx: int) -> Tensor:
        losses = self.model(*self.batch)
        loss = sum(losses.values())
        for name, value in losses.items():  # what detkit's module logs each step
            self.log(f"train/{name}", value, batch_size=len(self.batch[0]))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(self.batch[0]))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), 0.001)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(range(10**6), batch_size=1)


def lightning_overhead(cfg: TrainBenchConfig) -> dict[str, float]:
    """Median step time of a plain PyTorch loop and of Lightning's fit loop on the same model."""
    if cfg.lightning_steps <= 0:
        return {}
    images, targets = make_batch(cfg)
    torch.manual_seed(cfg.seed)
    model = build_faster_rcnn(cfg.num_classes, backbone=cfg.backbone, norm=cfg.norm)
    step = _train_step(model, images, targets, torch.optim.SGD(model.parameters(), 0.001))
    plain = []
    for _ in range(cfg.lightning_steps + 1):
        start = time.perf_counter()
        step()
        plain.append(time.perf_counter() - start)
    clock = _StepClock()
    trainer = L.Trainer(accelerator="cpu", max_steps=cfg.lightning_steps + 1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=True, callbacks=[clock],
                        enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(_FixedBatchModule(model, (images, targets)))
    lightning = [b - a for a, b in zip(clock.starts[1:-1], clock.starts[2:], strict=False)]
    return {"plain_step_ms": statistics.median(plain[1:]) * 1e3,
            "lightning_step_ms": statistics.median(lightning) * 1e3 if lightning else float("nan")}


def format_report(cfg: TrainBenchConfig, versus: dict[str, float],
                  extractors: dict[str, dict[str, float]], overhead: dict[str, float]) -> str:
    lines = [
        f"Faster R-CNN on CPU ({torch.get_num_threads()} threads, torch {torch.__version__}): "
        f"{cfg.backbone}-FPN ({cfg.norm} norm), batch {cfg.batch} of {cfg.image_size}x"
        f"{cfg.image_size}, {cfg.objects} objects/image, {cfg.repeats} interleaved repeats, "
        "medians",
        "",
        f"{'':<26}{'detkit':>10}{'torchvision':>13}{'ratio':>8}",
    ]
    d, t = versus["detkit_train_images_per_s"], versus["torchvision_train_images_per_s"]
    lines.append(f"{'train images/s':<26}{d:10.2f}{t:13.2f}{d / t:8.2f}")
    d, t = versus["detkit_infer_ms_per_image"], versus["torchvision_infer_ms_per_image"]
    lines.append(f"{'inference ms/image':<26}{d:10.1f}{t:13.1f}{d / t:8.2f}")
    lines.append("(train ratio = detkit / torchvision throughput, above 1 is faster; inference "
                 "ratio = time, below 1 is faster)")
    if extractors:
        base = extractors.get("roi_align")
        lines += ["", f"{'extractor':<20}{'train img/s':>12}{'vs roi_align':>13}"
                      f"{'infer ms/img':>14}{'vs roi_align':>13}{'params (M)':>12}"]
        for name, r in extractors.items():
            rel_t = r["train_images_per_s"] / base["train_images_per_s"] if base else float("nan")
            rel_i = r["infer_ms_per_image"] / base["infer_ms_per_image"] if base else float("nan")
            lines.append(f"{name:<20}{r['train_images_per_s']:12.2f}{rel_t:13.2f}"
                         f"{r['infer_ms_per_image']:14.1f}{rel_i:13.2f}{r['params_m']:12.1f}")
    if overhead:
        p, lt = overhead["plain_step_ms"], overhead["lightning_step_ms"]
        lines += ["", f"Lightning loop: {lt:.0f} ms/step vs plain PyTorch loop {p:.0f} ms/step "
                      f"(ratio {lt / p:.2f})"]
    return "\n".join(lines)
