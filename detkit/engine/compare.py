"""The pooling study: train and evaluate several RoI extractors under one budget, then report.

Every run uses the same config, data, schedule and seed list; only ``model.roi_extractor`` (and
its own ``roi_extractor_args``) changes. Runs with the same seed share the initial weights of
every shared module, the data order and the augmentation (see ``build_faster_rcnn`` and
``DetectionDataModule.train_dataloader``), so the report pairs them by seed. Runs land in
``OUT/runs/<extractor>/seed<S>/`` (TensorBoard logs, checkpoints, ``run.json``,
``metrics.json``). A finished run is reused only when its resolved config matches; an
interrupted one resumes from its own ``last.ckpt``, so a study picks up where it stopped (see
:func:`run_one`).

A sweep (:class:`Sweep`, ``--vary KEY=V1,V2,...``) crosses one more setting with the extractors
and seeds: each value's runs land in ``OUT/runs/<extractor>/<KEY>=<V>/seed<S>/``, so growing
the grid by a seed or a value reuses every finished run.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import re
import shlex
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from detkit.engine.cli import resolve_config, train
from detkit.engine.runs import (
    CHECKPOINT,
    NOT_RESULT_KEYS,
    RUN_FILE,
    RunFolderError,
    changed_settings,
    clear,
    has_content,
    key_hash,
    read_key,
    run_key,
    run_lock,
    setting_in,
)
from detkit.eval.report import write_report, write_sweep_report
from detkit.models import EXTRACTORS, check_extractor_names

log = logging.getLogger("detkit.compare")

DEFAULT_EXTRACTORS = tuple(EXTRACTORS)  # the study runs every extractor, in EXTRACTORS' order


EXTRACTOR_ARGS = "model.roi_extractor_args"
# chosen by --extractors and --seeds, never swept
NOT_SWEPT = ("model.roi_extractor", "seed_everything")
BASELINE = "roi_align"  # the default baseline of the differences, when among the extractors
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # YAML 1.1 reads 1e-3 as text


@dataclass(frozen=True)
class Sweep:
    """One config setting (a dotted key as on the training command line, e.g. ``data.min_size``
    or ``model.roi_extractor_args.output_size``) and the values a study tries."""

    key: str
    values: tuple[Any, ...]

    def label(self, value: Any) -> str:
        """``KEY=VALUE``: the run folder level and the report heading of ``value``."""
        return f"{self.key}={value_text(value)}".replace("%", "%25").replace("/", "%2F")

    def argument(self) -> str:
        """The ``--vary`` text that gives this sweep."""
        return f"{self.key}={','.join(value_text(v) for v in self.values)}"


def value_text(value: Any) -> str:
    """A setting's value as the training command line reads it (text as is, else JSON)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def parse_sweep(text: str) -> Sweep:
    """``KEY=V1,V2,...`` -> :class:`Sweep`. The values are read as one YAML flow sequence, so
    numbers, ``true``, text and lists work: ``model.roi_extractor_args.grids=[1,2],[1,2,4]``.

    Raises:
        ValueError: no ``=``, no values, a value twice, or a key that is not swept (the
            extractor and the seed have their own options; paths and logging settings do not
            change results).
    """
    key, equals, values_text = text.partition("=")
    key = key.strip().removeprefix("--")
    if not equals or not key or not values_text.strip():
        raise ValueError(f"--vary takes KEY=V1,V2,... (e.g. data.min_size=480,640), got {text!r}")
    if key in NOT_SWEPT:
        raise ValueError(f"--vary {key}: choose extractors with --extractors and the number of "
                         "seeds with --seeds")
    if key == EXTRACTOR_ARGS:
        raise ValueError(f"--vary {key}: vary one of its settings, {key}.NAME (merged into each "
                         "extractor's --extractor-args)")
    if setting_in(key, NOT_RESULT_KEYS):
        raise ValueError(f"--vary {key}: this setting does not change a run's results")
    try:
        values = yaml.safe_load(f"[{values_text}]")
    except yaml.YAMLError as error:
        raise ValueError(f"--vary {key}: cannot read the values {values_text!r} as YAML "
                         f"({str(error).splitlines()[0]})") from error
    if not isinstance(values, list) or not values:
        raise ValueError(f"--vary {key}: no values in {values_text!r}")
    values = tuple(float(v) if isinstance(v, str) and _EXPONENT_FLOAT.fullmatch(v) else v
                   for v in values)
    sweep = Sweep(key, values)
    labels = [sweep.label(v) for v in values]
    if len(set(labels)) < len(labels):
        raise ValueError(f"--vary {key}: give each value once, got {values_text!r}")
    return sweep


def reference_index(sweep: Sweep, text: str | None) -> int:
    """The index in ``sweep.values`` of ``text`` (read as the sweep's values are), the value the
    factor's effect is measured against; the first value when ``text`` is None.

    Raises:
        ValueError: ``text`` is not one of the sweep's values."""
    if text is None:
        return 0
    (value,) = parse_sweep(f"{sweep.key}={text}").values
    labels = [sweep.label(v) for v in sweep.values]
    if sweep.label(value) not in labels:
        raise ValueError(f"--reference-value {text} is not among the values of --vary "
                         f"{sweep.argument()}")
    return labels.index(sweep.label(value))


def _with_setting(args: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``args`` (an extractor's settings) with ``value`` at the dotted ``path``."""
    merged = copy.deepcopy(args)
    node = merged
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return merged


def pick_baseline(extractors: Sequence[str], baseline: str | None) -> str:
    """``baseline`` when given (it must be among ``extractors``), else ``roi_align`` when among
    them, else the first."""
    if baseline is None:
        return BASELINE if BASELINE in extractors else extractors[0]
    if baseline not in extractors:
        raise ValueError(f"--baseline {baseline} is not among the extractors "
                         f"({', '.join(extractors)})")
    return baseline


def run_dir(out: Path, extractor: str, seed: int, variant: str | None = None) -> Path:
    """``OUT/runs/EXTRACTOR[/VARIANT]/seedS``: a sweep over other settings adds a ``variant``
    level (e.g. ``lr=0.01``); what a folder holds is checked by its run key, not its name."""
    parent = out / "runs" / extractor
    return (parent / variant if variant else parent) / f"seed{seed}"


Configs = str | Sequence[str] | None  # a training config, or several layered (later wins)


def config_args(config: Configs) -> list[str]:
    """``--config FILE`` for each file of ``config`` (none, one, or several in order)."""
    files = [] if config is None else [config] if isinstance(config, str) else list(config)
    return [arg for file in files for arg in ("--config", file)]


class FinishedRuns:
    """The finished runs (``metrics.json`` beside ``run.json``) under some folders, by the hash
    of their run key (:func:`~detkit.engine.runs.read_key`), for a study to reuse runs that
    another study trained with the same settings (``--reuse-runs``). Folders that are links are
    skipped (they are reuses themselves), as is everything under ``exclude``."""

    def __init__(self, roots: Sequence[str | Path], exclude: Path) -> None:
        self.by_key: dict[str, Path] = {}
        exclude = exclude.resolve()
        for root in roots:
            for file in sorted(Path(root).rglob(RUN_FILE)):
                folder = file.parent
                if (folder.is_symlink() or not (folder / "metrics.json").exists()
                        or folder.resolve().is_relative_to(exclude)):
                    continue
                key = read_key(folder)
                if key is not None:
                    self.by_key.setdefault(key_hash(key), folder)

    def find(self, key: dict[str, Any]) -> Path | None:
        return self.by_key.get(key_hash(key))


def _link_finished(directory: Path, key: dict[str, Any], finished: FinishedRuns | None) -> None:
    """Make the empty or missing run folder ``directory`` a link to a finished run with the same
    key elsewhere (relative, so the runs folder can move as a whole)."""
    if finished is None or directory.is_symlink() or (directory.exists()
                                                        and any(directory.iterdir())):
        return
    source = finished.find(key)
    if source is None:
        return
    if directory.exists():
        directory.rmdir()
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.symlink_to(os.path.relpath(source.resolve(), directory.parent.resolve()),
                         target_is_directory=True)
    log.info("linking %s to the finished run %s (same settings)", directory, source)


def run_one(config: Configs, extractor: str, seed: int, out: Path, overrides: Sequence[str],
            extractor_args: dict[str, Any], train_fn: Callable[[list[str]], dict], *,
            rerun: bool = False, sweep: Sweep | None = None, value: Any = None,
            finished: FinishedRuns | None = None) -> dict:
    """Train + evaluate one extractor with one seed (and, in a ``sweep``, its setting at
    ``value``), or load the finished run.

    The run's folder is reused only when its ``run.json`` key (the resolved config, see
    :mod:`detkit.engine.runs`) equals this request's: a finished run is loaded, a partial one
    resumes from its own ``last.ckpt``. A folder from other settings is refused, naming the
    settings that differ (``rerun=True`` clears and retrains it); one without a key or without a
    checkpoint is cleared first. The folder is locked while this process uses it.

    A swept ``model.roi_extractor_args.NAME`` is merged into this extractor's
    ``extractor_args``; any other key is passed as ``--KEY VALUE`` after ``overrides``. Whether
    it applies is the run config's (or the extractor's) to say.

    ``finished``: runs of other studies; when this run's folder is empty and one of them has
    the same key, the folder becomes a link to it and its metrics are this run's (marked
    ``reused_from``, so the study's training time leaves it out)."""
    args, setting = dict(extractor_args.get(extractor, {})), []
    if sweep is not None:
        if sweep.key.startswith(EXTRACTOR_ARGS + "."):
            args = _with_setting(args, sweep.key.removeprefix(EXTRACTOR_ARGS + ".").split("."),
                                 value)
        else:
            setting = [f"--{sweep.key}", value_text(value)]
    directory = run_dir(out, extractor, seed, None if sweep is None else sweep.label(value))
    argv = config_args(config) + list(overrides) + setting + [
        "--model.roi_extractor", extractor,
        "--model.roi_extractor_args", json.dumps(args),
        "--seed_everything", str(seed),
        "--run_dir", str(directory),
    ]
    key = run_key(resolve_config(argv))
    metrics_file = directory / "metrics.json"
    if directory.is_symlink() and not directory.exists():
        log.info("replacing %s, a link to a run that is gone", directory)
        directory.unlink()
    elif directory.is_symlink() and (read_key(directory) != key or not metrics_file.exists()):
        if not rerun:  # the linked run is another study's: never cleared from here
            raise RunFolderError(
                f"{directory} links to {directory.resolve()}, a run with other settings "
                f"({'; '.join(changed_settings(read_key(directory) or {}, key))}); use another "
                "--out, or --rerun to replace the link with a run of its own")
        directory.unlink()
    _link_finished(directory, key, finished)
    with run_lock(directory):
        old = read_key(directory)
        changes = changed_settings(old, key) if old is not None else []
        if directory.is_symlink() and (changes or not metrics_file.exists()):
            raise RunFolderError(  # changed since the check above: leave the other study's run
                f"{directory} links to {directory.resolve()}, which another process changed "
                "meanwhile; run the study again")
        if changes and not rerun:
            raise RunFolderError(
                f"{directory} was trained with other settings ({'; '.join(changes)}); use "
                "another --out, or --rerun to replace such runs")
        if metrics_file.exists() and old is not None and not changes:
            log.info("reusing finished run %s (run key %s)", directory, key_hash(key))
            metrics = json.loads(metrics_file.read_text())
            if directory.is_symlink():
                metrics["reused_from"] = str(directory.resolve())
            return metrics
        if changes or old is None or not (directory / CHECKPOINT).exists():
            if has_content(directory):
                log.info("clearing %s (%s)", directory, "other settings" if changes else
                         "no finished or resumable run")
            clear(directory)
        else:
            log.info("resuming partial run %s from its last.ckpt", directory)
    log.info("training %s, seed %d%s", extractor, seed,
             "" if sweep is None else f", {sweep.label(value)}")
    start = time.perf_counter()
    metrics = train_fn(argv)  # takes the folder's lock itself
    metrics["wall_seconds"] = time.perf_counter() - start
    tmp = metrics_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(metrics_file)  # only a finished run has metrics.json
    return metrics


def compare(config: Configs, extractors: Sequence[str], out: str | Path, *, seeds: int = 1,
            overrides: Sequence[str] = (), extractor_args: dict[str, Any] | None = None,
            train_fn: Callable[[list[str]], dict] = train, rerun: bool = False,
            sweep: Sweep | None = None, baseline: str | None = None,
            reference: str | None = None, reuse_runs: Sequence[str | Path] = ()) -> Path:
    """Run the study and write ``out/report.md`` with its plots and ``out/study.json``; returns
    the report path. Runs go seed by seed (every value and extractor of seed 0 first), so an
    interrupted study leaves complete pairs.

    Args:
        config: the training config file, or several layered in order (None: overrides only).
        sweep: also vary one setting (each value crossed with every extractor and seed).
        baseline: the extractor the differences are taken against (:func:`pick_baseline`);
            given, it names the outputs that depend on it: ``report_vs_BASELINE.md``,
            ``study_vs_BASELINE.json`` and, in a sweep, ``effect_vs_KEY_vs_BASELINE.png``.
        reference: with a sweep, the value its effect is measured against (as on the command
            line; default: the first value; :func:`reference_index`).
        rerun: retrain runs whose folder holds other settings (else they are refused).
        reuse_runs: folders of other studies whose finished runs this one reuses (linked) when
            their settings are this run's (:class:`FinishedRuns`).
    """
    check_extractor_names(extractors)
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    base = pick_baseline(extractors, baseline)
    if sweep is None and reference is not None:
        raise ValueError("--reference-value needs --vary: it is one of the swept values")
    reference_at = 0 if sweep is None else reference_index(sweep, reference)
    out = Path(out)
    extractor_args = with_config_args(config, overrides, extractor_args or {})
    values = (None,) if sweep is None else sweep.values
    grid: list[dict[str, dict[int, dict]]] = [{e: {} for e in extractors} for _ in values]
    finished = FinishedRuns(reuse_runs, exclude=out) if reuse_runs else None
    for seed in range(seeds):
        for runs, value in zip(grid, values, strict=True):
            for extractor in extractors:
                runs[extractor][seed] = run_one(config, extractor, seed, out, overrides,
                                                extractor_args, train_fn, rerun=rerun,
                                                sweep=sweep, value=value, finished=finished)
    setup = _setup_lines(config, extractors, out, seeds, overrides, sweep, baseline, base,
                         reference, reuse_runs) + ["", training_time_line(grid)]
    shared = frozen_front_note(grid)
    if shared:
        setup += ["", shared]
    title = "RoI extractor comparison"
    # a baseline chosen by name names the outputs it changes: a second baseline's report of the
    # same runs lands beside the first, not over it
    suffix = "" if baseline is None else f"_vs_{base}"
    if sweep is None:
        return write_report(grid[0], out, title=title, setup_lines=setup, baseline=base,
                            suffix=suffix)
    return write_sweep_report(list(zip(values, grid, strict=True)), sweep.key, out,
                              title=f"{title} by {sweep.key}", setup_lines=setup, baseline=base,
                              reference_index=reference_at, suffix=suffix)


def training_time_line(grid: Sequence[dict[str, dict[int, dict]]]) -> str:
    """What the study's runs cost, from each run's own ``wall_seconds`` (the training call, as
    :func:`run_one` timed it when the run finished): the count, the total and the median per
    run. A run that resumed counts only its last part; runs finished before runs recorded
    their time, and runs reused from another study (trained, and counted, there), are counted
    apart."""
    metrics = _grid_runs(grid)
    reused = sum("reused_from" in m for m in metrics)
    seconds = [m["wall_seconds"] for m in metrics if "reused_from" not in m
               and isinstance(m.get("wall_seconds"), (int, float))]
    untimed = len(metrics) - reused - len(seconds)
    reuses = f"; {reused} more reused from other studies' runs (same settings)" if reused else ""
    if not seconds and not untimed:
        return f"Training time: none here: all {reused} runs reused from other studies' runs."
    if not seconds:
        return f"Training time: not recorded ({untimed} run{'' if untimed == 1 else 's'}){reuses}."
    more = (f"; {untimed} more without a recorded time" if untimed else "") + reuses
    return (f"Training time: {len(seconds)} runs, {sum(seconds) / 60:.1f} min in all on this "
            f"machine (median {statistics.median(seconds):.0f} s, {min(seconds):.0f}-"
            f"{max(seconds):.0f} s per run; a run that resumed counts only its last part)"
            + more + ".")


def _grid_runs(grid: Sequence[dict[str, dict[int, dict]]]) -> list[dict]:
    """Every run's metrics in a study grid (values -> extractors -> seeds)."""
    return [m for runs in grid for seeds in runs.values() for m in seeds.values()]


def frozen_front_note(grid: Sequence[dict[str, dict[int, dict]]]) -> str | None:
    """A warning for the speed columns when runs read a shared frozen front
    (``model.init.frozen_cache``): they skipped the backbone, FPN and RPN in training or
    validation, so their training images/s and inference ms/image are not comparable with the
    runs that computed it. None when no run read one."""
    metrics = _grid_runs(grid)
    read = sum(any((m.get("frozen_front") or {}).get(k) for k in ("read", "val_read"))
               for m in metrics)
    if not read:
        return None
    return (f"Speed: {read} of {len(metrics)} runs read their frozen backbone/FPN/RPN outputs "
            "from the shared cache (model.init.frozen_cache) instead of computing them, so the "
            "training images/s and inference ms/image columns compare cache roles, not "
            "extractors; their results are the same as computing (bit-identical on the CPU, "
            "tested). Compare extractor speeds with tools/benchmark_extractors.py.")


def with_config_args(config: Configs, overrides: Sequence[str],
                     extractor_args: dict[str, Any]) -> dict[str, Any]:
    """``extractor_args`` (``--extractor-args``) with the config's own
    ``model.roi_extractor_args`` under them for the config's ``model.roi_extractor``: a study
    keeps what the config sets for its extractor (``--extractor-args`` wins per setting). The
    other extractors get only their ``--extractor-args``: the config's belong to its own."""
    model = resolve_config(config_args(config) + list(overrides))["model"]
    own = model.get("roi_extractor_args") or {}
    if not own:
        return extractor_args
    name = model["roi_extractor"]
    log.info("%s keeps the config's roi_extractor_args %s", name, json.dumps(own))
    return {**extractor_args, name: {**own, **extractor_args.get(name, {})}}


def _setup_lines(config: Configs, extractors: Sequence[str], out: Path, seeds: int,
                 overrides: Sequence[str], sweep: Sweep | None, baseline: str | None,
                 base: str, reference: str | None = None,
                 reuse_runs: Sequence[str | Path] = ()) -> list[str]:
    command = "python tools/compare.py " + shlex.join(
        config_args(config) + ["--extractors", ",".join(extractors),
                                                    "--out", str(out), "--seeds", str(seeds)]
        + ([] if sweep is None else ["--vary", sweep.argument()])
        + ([] if baseline is None else ["--baseline", baseline])
        + ([] if reference is None else ["--reference-value", reference])
        + [arg for folder in reuse_runs for arg in ("--reuse-runs", str(folder))]
        + list(overrides))
    folders = "EXTRACTOR/seedS" if sweep is None else f"EXTRACTOR/{sweep.key}=VALUE/seedS"
    return [
        f"Command: `{command}`",
        "",
        f"Seeds: {seeds} (0..{seeds - 1}); every extractor trained with the same config, data, "
        "schedule and budget; runs with the same seed share the initial weights of every shared "
        f"module, the data order and the augmentation. Differences against {base}. Machine: "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
        f"{', CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}; "
        f"torch {torch.__version__}.",
        "",
        f"Runs: `{out / 'runs'}/{folders}`. TensorBoard, all runs side by side: "
        f"`tensorboard --logdir {out / 'runs'}`",
    ]
