"""The pooling study: train and evaluate several RoI extractors under one budget, then report.

Every run uses the same config, data, schedule and seed list; only ``model.roi_extractor`` (and
its own ``roi_extractor_args``) changes. Runs land in ``OUT/runs/<extractor>/seed<S>/``
(TensorBoard logs, checkpoints, ``run.json``, ``metrics.json``). A finished run is reused only
when its resolved config matches; an interrupted one resumes from its own ``last.ckpt``, so a
study picks up where it stopped (see :func:`run_one`).
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

from detkit.engine.cli import resolve_config, train
from detkit.engine.runs import (
    CHECKPOINT,
    RunFolderError,
    changed_settings,
    clear,
    has_content,
    key_hash,
    read_key,
    run_key,
    run_lock,
)
from detkit.eval.report import write_report
from detkit.models import EXTRACTORS

log = logging.getLogger("detkit.compare")

DEFAULT_EXTRACTORS = tuple(EXTRACTORS)  # the study runs every extractor, in EXTRACTORS' order


def run_dir(out: Path, extractor: str, seed: int, variant: str | None = None) -> Path:
    """``OUT/runs/EXTRACTOR[/VARIANT]/seedS``: a sweep over other settings adds a ``variant``
    level (e.g. ``lr=0.01``); what a folder holds is checked by its run key, not its name."""
    parent = out / "runs" / extractor
    return (parent / variant if variant else parent) / f"seed{seed}"


def run_one(config: str | None, extractor: str, seed: int, out: Path, overrides: Sequence[str],
            extractor_args: dict[str, Any], train_fn: Callable[[list[str]], dict], *,
            rerun: bool = False) -> dict:
    """Train + evaluate one extractor with one seed, or load the finished run.

    The run's folder is reused only when its ``run.json`` key (the resolved config, see
    :mod:`detkit.engine.runs`) equals this request's: a finished run is loaded, a partial one
    resumes from its own ``last.ckpt``. A folder from other settings is refused, naming the
    settings that differ (``rerun=True`` clears and retrains it); one without a key or without a
    checkpoint is cleared first. The folder is locked while this process uses it."""
    directory = run_dir(out, extractor, seed)
    argv = ([] if config is None else ["--config", config]) + list(overrides) + [
        "--model.roi_extractor", extractor,
        "--model.roi_extractor_args", json.dumps(extractor_args.get(extractor, {})),
        "--seed_everything", str(seed),
        "--run_dir", str(directory),
    ]
    key = run_key(resolve_config(argv))
    metrics_file = directory / "metrics.json"
    with run_lock(directory):
        old = read_key(directory)
        changes = changed_settings(old, key) if old is not None else []
        if changes and not rerun:
            raise RunFolderError(
                f"{directory} was trained with other settings ({'; '.join(changes)}); use "
                "another --out, or --rerun to replace such runs")
        if metrics_file.exists() and old is not None and not changes:
            log.info("reusing finished run %s (run key %s)", directory, key_hash(key))
            return json.loads(metrics_file.read_text())
        if changes or old is None or not (directory / CHECKPOINT).exists():
            if has_content(directory):
                log.info("clearing %s (%s)", directory, "other settings" if changes else
                         "no finished or resumable run")
            clear(directory)
        else:
            log.info("resuming partial run %s from its last.ckpt", directory)
    log.info("training %s, seed %d", extractor, seed)
    start = time.perf_counter()
    metrics = train_fn(argv)  # takes the folder's lock itself
    metrics["wall_seconds"] = time.perf_counter() - start
    tmp = metrics_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(metrics_file)  # only a finished run has metrics.json
    return metrics


def compare(config: str | None, extractors: Sequence[str], out: str | Path, *, seeds: int = 1,
            overrides: Sequence[str] = (), extractor_args: dict[str, Any] | None = None,
            train_fn: Callable[[list[str]], dict] = train, rerun: bool = False) -> Path:
    """Run the study and write ``out/report.md`` with its plots; returns the report path.
    ``rerun``: retrain runs whose folder holds other settings (else they are refused)."""
    from detkit.models import EXTRACTORS

    unknown = [e for e in extractors if e not in EXTRACTORS]
    if unknown:
        raise ValueError(f"unknown extractors {unknown}; valid names: {', '.join(EXTRACTORS)}")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    out = Path(out)
    runs = {e: [run_one(config, e, s, out, overrides, extractor_args or {}, train_fn,
                        rerun=rerun) for s in range(seeds)] for e in extractors}
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
