"""The pooling study: train and evaluate several RoI extractors under one budget, then report.

Every run uses the same config, data, schedule and seed list; only ``model.roi_extractor`` (and
its own ``roi_extractor_args``) changes. Runs land in ``OUT/runs/<extractor>/seed<S>/``
(TensorBoard logs, checkpoints, ``metrics.json``); a run whose ``metrics.json`` exists is reused,
so an interrupted study picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import platform
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from detkit.engine.cli import train
from detkit.eval.report import write_report
from detkit.models import EXTRACTORS

log = logging.getLogger("detkit.compare")

DEFAULT_EXTRACTORS = tuple(EXTRACTORS)  # the study runs every extractor, in EXTRACTORS' order


def run_dir(out: Path, extractor: str, seed: int) -> Path:
    return out / "runs" / extractor / f"seed{seed}"


def run_one(config: str | None, extractor: str, seed: int, out: Path, overrides: Sequence[str],
            extractor_args: dict[str, Any], train_fn: Callable[[list[str]], dict]) -> dict:
    """Train + evaluate one extractor with one seed, or load the finished run."""
    directory = run_dir(out, extractor, seed)
    metrics_file = directory / "metrics.json"
    if metrics_file.exists():
        log.info("reusing finished run %s", directory)
        return json.loads(metrics_file.read_text())
    argv = ([] if config is None else ["--config", config]) + list(overrides) + [
        "--model.roi_extractor", extractor,
        "--model.roi_extractor_args", json.dumps(extractor_args.get(extractor, {})),
        "--seed_everything", str(seed),
        "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger",
        "--trainer.logger.save_dir", str(out / "runs"),
        "--trainer.logger.name", extractor,
        "--trainer.logger.version", f"seed{seed}",
    ]
    log.info("training %s, seed %d", extractor, seed)
    start = time.perf_counter()
    metrics = train_fn(argv)
    metrics["wall_seconds"] = time.perf_counter() - start
    directory.mkdir(parents=True, exist_ok=True)
    tmp = metrics_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(metrics_file)  # only a finished run has metrics.json
    return metrics


def compare(config: str | None, extractors: Sequence[str], out: str | Path, *, seeds: int = 1,
            overrides: Sequence[str] = (), extractor_args: dict[str, Any] | None = None,
            train_fn: Callable[[list[str]], dict] = train) -> Path:
    """Run the study and write ``out/report.md`` with its plots; returns the report path."""
    from detkit.models import EXTRACTORS

    unknown = [e for e in extractors if e not in EXTRACTORS]
    if unknown:
        raise ValueError(f"unknown extractors {unknown}; valid names: {', '.join(EXTRACTORS)}")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    out = Path(out)
    runs = {e: [run_one(config, e, s, out, overrides, extractor_args or {}, train_fn)
                for s in range(seeds)] for e in extractors}
    command = "python tools/compare.py " + shlex.join(
        (["--config", config] if config else []) + ["--extractors", ",".join(extractors),
                                                    "--out", str(out), "--seeds", str(seeds)]
        + list(overrides))
    setup = [
        f"Command: `{command}`",
        "",
        f"Seeds: {seeds} (0..{seeds - 1}); every extractor trained with the same config, data, "
        "schedule and budget. Machine: "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
        f"{', CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}; "
        f"torch {torch.__version__}.",
        "",
        f"TensorBoard, all runs side by side: `tensorboard --logdir {out / 'runs'}`",
    ]
    return write_report(runs, out, title="RoI extractor comparison", setup_lines=setup)
