"""The run's two checkpoints, ``best.ckpt`` and ``last.ckpt``, written atomically.

Lightning's ``ModelCheckpoint`` rewrote ``last.ckpt`` only when the monitored metric improved
(with the default triggers used here) and, with two instances, wrote ``last-v1.ckpt`` beside
it; this callback keeps one rule per file instead:

- ``last.ckpt``: the latest state, every ``every_n_steps`` optimizer steps, after every
  validation and at the end of training, independent of any metric (what a resume needs);
- ``best.ckpt``: the state with the highest ``monitor`` seen at a validation; a hard link to
  ``last.ckpt`` when both are the same step (one copy on disk), else its own file.

Every write goes to a temporary file in the same folder, then ``os.replace`` (atomic on POSIX):
a run killed mid-write leaves the previous checkpoint intact. The module's ``on_save_checkpoint``
refuses states holding NaN or inf, so neither file ever holds one.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)

LAST, BEST = "last.ckpt", "best.ckpt"


class RunCheckpoint(Checkpoint):
    """Writes ``dirpath/last.ckpt`` and ``dirpath/best.ckpt`` (see the module docstring).

    Args:
        dirpath: the run's checkpoint folder.
        every_n_steps: also write ``last.ckpt`` every this many optimizer steps (0: only at
            validations and at the end).
        monitor: the logged metric that picks ``best.ckpt`` (higher is better).
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int = 100,
                 monitor: str = "val/AP") -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.monitor = monitor
        self.best_score = -math.inf
        self.best_step: int | None = None
        self.last_step: int | None = None  # step of the last.ckpt on disk

    @property
    def last_path(self) -> Path:
        return self.dirpath / LAST

    @property
    def best_path(self) -> Path | None:
        return self.dirpath / BEST if self.best_step is not None else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        # again when the step's interval save came first: the state now includes this
        # validation, so a resume does not run it (and log it) a second time
        self.save_last(trainer, again=True)
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None and math.isfinite(float(score)) and float(score) > self.best_score:
            self.best_score, self.best_step = float(score), trainer.global_step
            if trainer.is_global_zero:
                _link_or_copy(self.last_path, self.dirpath / BEST)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save_last(trainer)  # a run ending between validations keeps its final steps

    def save_last(self, trainer: L.Trainer, again: bool = False) -> None:
        """Write ``last.ckpt`` for the current step (once per step unless ``again``)."""
        if self.last_step == trainer.global_step and self.last_path.exists() and not again:
            return
        self.last_step = trainer.global_step  # before saving: it is part of the saved state
        save_atomically(trainer, self.last_path)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_step": self.best_step,
                "last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict["best_score"]
        self.best_step = state_dict["best_step"]
        self.last_step = state_dict["last_step"]


def save_atomically(trainer: L.Trainer, path: Path) -> None:
    """``trainer.save_checkpoint`` to a temporary file beside ``path``, then rename over it."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, path)
    finally:
        if trainer.is_global_zero and tmp.exists():
            tmp.unlink()
    trainer.strategy.barrier("save_atomically")


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes the same file as ``source`` (hard link: no second copy on disk); a
    later atomic rewrite of ``source`` gives it a new inode and leaves ``target`` as it was."""
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
