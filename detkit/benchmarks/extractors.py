"""Training-step time of each RoI extractor with the box head, relative to ``roi_align``.

A full Faster R-CNN step (``detkit.benchmarks.train.compare_extractors``) is dominated by the
backbone, which every extractor shares; this isolates the part that differs. On fixed FPN
features (``Tensor[N, C, H/s, W/s]`` for strides 4..64, random, requiring grad as the backbone's
output does in training) and fixed proposals (``rois`` per image, sizes spread over every level),
one step is: extractor forward -> Faster R-CNN's 2-fc box head (``TwoMLPHead``, 1024 wide) -> a
scalar loss -> backward to the features and every parameter. Steps are interleaved over the
extractors (A, B, C, A, B, C, ...) in one process and medians reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection.faster_rcnn import TwoMLPHead

from detkit.benchmarks.timing import interleaved_medians
from detkit.models import EXTRACTORS, build_roi_extractor, check_extractor_names


@dataclass(frozen=True)
class ExtractorBenchConfig:
    extractors: str = ",".join(EXTRACTORS)  # compared with roi_align, which is always timed
    channels: int = 256  # FPN width
    image_size: int = 512
    batch: int = 2
    rois: int = 512  # proposals per image (Faster R-CNN samples 512 per image in training)
    representation_size: int = 1024
    repeats: int = 7
    warmup: int = 1
    threads: int = 0  # torch.set_num_threads; 0 leaves torch's default
    device: str = "cpu"
    seed: int = 0


def make_inputs(cfg: ExtractorBenchConfig) -> tuple[dict[str, Tensor], list[Tensor]]:
    """FPN features ``p2..p6`` and ``cfg.rois`` xyxy boxes per image (input-image pixels, sides
    8 .. ``image_size / 2`` log-uniform, so every FPN level gets RoIs)."""
    g = torch.Generator().manual_seed(cfg.seed)
    size, device = cfg.image_size, torch.device(cfg.device)
    features = {f"p{lv}": torch.randn(cfg.batch, cfg.channels, size >> lv, size >> lv,
                                      generator=g).to(device).requires_grad_()
                for lv in range(2, 7)}
    boxes = []
    for _ in range(cfg.batch):
        wh = torch.exp(torch.empty(cfg.rois, 2).uniform_(2.08, 5.55, generator=g))  # 8 .. 256 px
        wh = wh * (size / 512)
        xy = torch.rand(cfg.rois, 2, generator=g) * (size - wh)
        boxes.append(torch.cat([xy, xy + wh], dim=1).to(device))
    return features, boxes


def time_extractor_heads(cfg: ExtractorBenchConfig) -> dict[str, dict[str, float]]:
    """``{name: {"step_ms", "vs_roi_align", "params_k"}}`` for ``roi_align`` and each extractor in
    ``cfg.extractors``; ``vs_roi_align`` is roi_align's step time / this one's (throughput ratio,
    above 1 is faster)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    names = list(dict.fromkeys(["roi_align", *(n for n in cfg.extractors.split(",") if n)]))
    check_extractor_names(names)
    features, boxes = make_inputs(cfg)
    image_sizes = [(cfg.image_size, cfg.image_size)] * cfg.batch
    device = torch.device(cfg.device)
    modules = {}
    for name in names:
        torch.manual_seed(cfg.seed)
        extractor = build_roi_extractor(name, in_channels=cfg.channels)
        head = TwoMLPHead(extractor.out_features, cfg.representation_size)
        modules[name] = torch.nn.ModuleDict({"extractor": extractor, "head": head}).to(device)

    def step(module: torch.nn.ModuleDict) -> None:
        module.zero_grad(set_to_none=True)
        for f in features.values():
            f.grad = None
        pooled = module["extractor"](features, boxes, image_sizes)
        module["head"](pooled).square().mean().backward()

    ms = interleaved_medians({n: (lambda m=m: step(m)) for n, m in modules.items()},
                             cfg.repeats, cfg.warmup, device)
    return {n: {"step_ms": ms[n], "vs_roi_align": ms["roi_align"] / ms[n],
                "params_k": sum(p.numel() for p in modules[n]["extractor"].parameters()) / 1e3}
            for n in names}


def format_extractor_report(cfg: ExtractorBenchConfig,
                            results: dict[str, dict[str, float]]) -> str:
    lines = [
        f"RoI extractor + 2-fc box head, forward+backward, on {cfg.device} "
        f"({torch.get_num_threads()} threads, torch {torch.__version__}): {cfg.batch} images "
        f"{cfg.image_size}x{cfg.image_size}, FPN width {cfg.channels}, {cfg.rois} RoIs/image, "
        f"{cfg.repeats} interleaved repeats, medians",
        "",
        f"{'extractor':<20}{'step ms':>10}{'vs roi_align':>14}{'extractor params (k)':>22}",
    ]
    for name, r in results.items():
        lines.append(f"{name:<20}{r['step_ms']:10.1f}{r['vs_roi_align']:14.2f}"
                     f"{r['params_k']:22.1f}")
    lines.append("(vs roi_align = throughput relative to roi_align: above 1 is faster)")
    return "\n".join(lines)
