"""Speed and memory of detkit.ops against torchvision's RoI ops on the same inputs.

Each case pairs a detkit op with its torchvision counterpart (same RoIs, output size and sampling)
and is timed forward (no grad) and forward+backward, interleaved, medians. Deformable ops are
timed with offsets (and masks) that require grad, against torchvision's op without offsets: the
bar detkit sets for them (deformable pooling must cost no more than plain RoIAlign).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torchvision.ops
from torch import Tensor

from detkit import ops
from detkit.benchmarks.timing import interleaved_medians, peak_memory_mb


@dataclass(frozen=True)
class OpsBenchConfig:
    """Benchmark shape; the defaults are an FPN P2-like level and a training batch of RoIs."""

    batch: int = 2
    channels: int = 256
    size: int = 50
    stride: int = 4
    num_rois: int = 512
    output_size: int = 7
    sampling_ratio: int = 2
    ps_output_dim: int = 11  # PS ops read ps_output_dim * output_size**2 channels
    huge_roi: int = 0  # > 0: also one RoI of this side in image pixels, sampling_ratio 0
    only: str = ""  # comma-separated op names to run (empty: all)
    threads: int = 0  # torch.set_num_threads for the run (0: leave torch's default)
    repeats: int = 15
    warmup: int = 2
    device: str = "cpu"
    seed: int = 0


@dataclass
class CaseResult:
    op: str
    reference: str
    fwd_ms: float
    ref_fwd_ms: float
    fwdbwd_ms: float
    ref_fwdbwd_ms: float
    peak_mb: float
    ref_peak_mb: float
    output_mb: float
    input_grad_mb: float

    @property
    def fwd_ratio(self) -> float:
        return self.fwd_ms / self.ref_fwd_ms

    @property
    def fwdbwd_ratio(self) -> float:
        return self.fwdbwd_ms / self.ref_fwdbwd_ms


def make_rois(cfg: OpsBenchConfig, generator: torch.Generator) -> Tensor:
    """``Tensor[K, 5]`` RoIs in image pixels: log-uniform sides from 8 px to the image size,
    centres anywhere in the image (so some RoIs cross the border, as proposals do)."""
    image = cfg.size * cfg.stride
    k = cfg.num_rois
    sides = torch.exp(torch.empty(k, 2).uniform_(math.log(8), math.log(image), generator=generator))
    centres = torch.rand(k, 2, generator=generator) * image
    batch = torch.randint(0, cfg.batch, (k, 1), generator=generator).float()
    return torch.cat([batch, centres - sides / 2, centres + sides / 2], dim=1)


def _cases(cfg: OpsBenchConfig, device: torch.device) -> list[tuple[str, str, Callable, Callable,
                                                                   list[Tensor], Tensor]]:
    """(name, reference name, detkit fn, reference fn, tensors needing grad, input)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    p, sr, scale = cfg.output_size, cfg.sampling_ratio, 1.0 / cfg.stride
    shape = (cfg.batch, cfg.channels, cfg.size, cfg.size)
    x = torch.randn(shape, generator=gen).to(device).requires_grad_()
    ps_shape = (cfg.batch, cfg.ps_output_dim * p * p, cfg.size, cfg.size)
    xps = torch.randn(ps_shape, generator=gen).to(device).requires_grad_()
    rois = make_rois(cfg, gen).to(device)
    k = rois.shape[0]
    offset = (0.1 * torch.randn(k, 2, p, p, generator=gen)).to(device).requires_grad_()
    mask = torch.rand(k, 1, p, p, generator=gen).to(device).requires_grad_()

    def tv_align() -> Tensor:
        return torchvision.ops.roi_align(x, rois, p, scale, sr, True)

    def tv_ps_align() -> Tensor:
        return torchvision.ops.ps_roi_align(xps, rois, p, scale, sr)

    return [
        ("roi_align", "tv.roi_align",
         lambda: ops.roi_align(x, rois, p, scale, sr, True, backend="detkit"), tv_align, [x], x),
        ("ps_roi_align", "tv.ps_roi_align",
         lambda: ops.ps_roi_align(xps, rois, p, scale, sr, backend="detkit"), tv_ps_align,
         [xps], xps),
        ("deform_roi_pool", "tv.roi_align",
         lambda: ops.deform_roi_pool(x, rois, offset, output_size=p, spatial_scale=scale,
                                     sampling_ratio=sr), tv_align, [x, offset], x),
        ("mdeform_roi_pool", "tv.roi_align",
         lambda: ops.deform_roi_pool(x, rois, offset, mask, output_size=p, spatial_scale=scale,
                                     sampling_ratio=sr), tv_align, [x, offset, mask], x),
        ("deform_psroi_pool", "tv.ps_roi_align",
         lambda: ops.deform_psroi_pool(xps, rois, offset, output_dim=cfg.ps_output_dim,
                                       group_size=p, pooled_size=p, spatial_scale=scale,
                                       sample_per_part=sr, trans_std=0.1),
         tv_ps_align, [xps, offset], xps),
        # torchvision has neither; both are compared with the RoIAlign they would replace
        ("roi_align_max", "tv.roi_align",
         lambda: ops.roi_align(x, rois, p, scale, sr, True, mode="max"), tv_align, [x], x),
        ("prroi_pool", "tv.roi_align",
         lambda: ops.prroi_pool(x, rois, p, scale), tv_align, [x], x),
        *_huge_roi_cases(cfg, x),
    ]


def _huge_roi_cases(cfg: OpsBenchConfig, x: Tensor) -> list[tuple[str, str, Callable, Callable,
                                                                  list[Tensor], Tensor]]:
    """With ``huge_roi > 0``: one RoI of that side (image pixels) with adaptive sampling
    (``sampling_ratio=0``), the case whose memory was unbounded before samples were chunked."""
    if cfg.huge_roi <= 0:
        return []
    p, scale, side = cfg.output_size, 1.0 / cfg.stride, float(cfg.huge_roi)
    roi = torch.tensor([[0.0, 0.0, 0.0, side, side]], device=x.device)
    return [("roi_align_huge", "tv.roi_align",
             lambda: ops.roi_align(x, roi, p, scale, 0, True, backend="detkit"),
             lambda: torchvision.ops.roi_align(x, roi, p, scale, 0, True), [x], x)]


def _forward(fn: Callable[[], Tensor]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn()
    return run


def _forward_backward(fn: Callable[[], Tensor], leaves: list[Tensor]) -> Callable[[], None]:
    def run() -> None:
        out = fn()
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out), allow_unused=True)
        del out, grads
    return run


def run_ops_benchmark(cfg: OpsBenchConfig) -> list[CaseResult]:
    """Measure every case; returns one ``CaseResult`` per detkit op."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    if cfg.threads > 0:  # on a loaded machine, 1 thread avoids OpenMP oversubscription stalls
        torch.set_num_threads(cfg.threads)
    results = []
    wanted = {name.strip() for name in cfg.only.split(",") if name.strip()}
    cases = _cases(cfg, device)
    unknown = wanted - {case[0] for case in cases}
    if unknown:
        raise ValueError(f"only names unknown ops {sorted(unknown)}; known: "
                         f"{[case[0] for case in cases]}")
    for name, ref_name, ours, ref, leaves, x in cases:
        if wanted and name not in wanted:
            continue
        ref_leaves = [x]  # the reference ops have no offsets
        fwd = interleaved_medians({"ours": _forward(ours), "ref": _forward(ref)},
                                  cfg.repeats, cfg.warmup, device)
        both = interleaved_medians(
            {"ours": _forward_backward(ours, leaves), "ref": _forward_backward(ref, ref_leaves)},
            cfg.repeats, cfg.warmup, device,
        )
        with torch.no_grad():
            out = ours()
        results.append(CaseResult(
            op=name, reference=ref_name, fwd_ms=fwd["ours"], ref_fwd_ms=fwd["ref"],
            fwdbwd_ms=both["ours"], ref_fwdbwd_ms=both["ref"],
            peak_mb=peak_memory_mb(_forward_backward(ours, leaves), device),
            ref_peak_mb=peak_memory_mb(_forward_backward(ref, ref_leaves), device),
            output_mb=out.numel() * out.element_size() / 2**20,
            input_grad_mb=x.numel() * x.element_size() / 2**20,
        ))
    return results


def format_results(cfg: OpsBenchConfig, results: list[CaseResult]) -> str:
    """A plain-text table: times in ms (medians), ratio = detkit / torchvision (< 1 is faster)."""
    head = (f"{'op':<18} {'reference':<16} {'fwd ms':>8} {'ref':>8} {'ratio':>6} "
            f"{'fwd+bwd ms':>10} {'ref':>8} {'ratio':>6} {'peak MiB':>9} {'ref':>7} {'ratio':>6}")
    lines = [
        f"detkit.ops vs torchvision on {cfg.device}: batch {cfg.batch}, {cfg.channels} channels "
        f"(PS: {cfg.ps_output_dim}x{cfg.output_size}^2), {cfg.size}x{cfg.size} map at stride "
        f"{cfg.stride}, {cfg.num_rois} RoIs, {cfg.output_size}x{cfg.output_size} output, "
        f"sampling {cfg.sampling_ratio}"
        + (f" (roi_align_huge: one {cfg.huge_roi}-px RoI, sampling 0)" if cfg.huge_roi else "")
        + f"; {cfg.repeats} interleaved repeats, medians; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        head, "-" * len(head),
    ]
    for r in results:
        lines.append(
            f"{r.op:<18} {r.reference:<16} {r.fwd_ms:8.2f} {r.ref_fwd_ms:8.2f} {r.fwd_ratio:6.2f} "
            f"{r.fwdbwd_ms:10.2f} {r.ref_fwdbwd_ms:8.2f} {r.fwdbwd_ratio:6.2f} "
            f"{r.peak_mb:9.1f} {r.ref_peak_mb:7.1f} {r.peak_mb / max(r.ref_peak_mb, 1e-9):6.2f}"
        )
    lines.append("peak = memory allocated during forward+backward above what was live before; "
                 "for scale, output and input-gradient sizes (MiB): " + ", ".join(
                     f"{r.op} {r.output_mb:.1f}/{r.input_grad_mb:.1f}" for r in results))
    return "\n".join(lines)


def results_as_dicts(results: list[CaseResult]) -> list[dict]:
    return [asdict(r) | {"fwd_ratio": r.fwd_ratio, "fwdbwd_ratio": r.fwdbwd_ratio}
            for r in results]
