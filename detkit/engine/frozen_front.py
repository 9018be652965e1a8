"""Share the frozen front of head-only runs: compute the backbone, FPN and RPN outputs of a
training step once, read them back in every other run that would compute the same.

In the RoI-extractor study every run freezes the backbone, FPN and RPN of one shared detector
(``--model.init.freeze [backbone,fpn,rpn]``) and trains only the extractor and box head. Runs
with the same seed and data then feed their heads the same features and the same proposals at
every step: the step's batch (data order and augmentation follow the seed) goes through the same
fixed weights, and torch's RNG is reseeded per step (``step_seed``), so the RPN's anchor sampling
draws the same numbers too. The front is about three quarters of such a run's step on a CPU; the
five extractors of one study condition compute it five times over.

``--model.init.frozen_cache DIR`` stores, per training step, what the front produced: the
feature maps, the proposals, the RPN's losses (constants here, logged) and torch's RNG state
after the RPN (which the RoI sampler goes on from). A later run with the same *front key* (its
run key without the settings that only reach the head: :data:`HEAD_SETTINGS`) reads them
instead of computing: its head sees bit-identical inputs and draws the same random numbers, so
it trains exactly as it would have alone (tested). A digest of the step's batch (images,
boxes, labels) is stored and checked, so a file that does not belong to the batch at hand is an
error, never a silent swap. The setting is not part of the run key: it changes the time, not
the result.

Layout: ``DIR/<front hash>/front.json`` (the front key) and ``step<N>[_rank<R>].pt``, written
atomically. Only the :data:`KEEP` most recently used fronts are kept (a study runs one
condition's extractors back to back); each takes about ``4 * C * (sum of level sizes) * batch``
bytes per step (the study: 64 channels, 256 px, 2 images: 2.8 MB a step, 2.8 GB a run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from detkit.engine.runs import key_hash

log = logging.getLogger("detkit.frozen_front")

# Settings that reach only the RoI extractor, the box head, their optimizer and the schedule:
# the frozen front computes the same with any values of these.
HEAD_SETTINGS = (
    "model.roi_extractor", "model.roi_extractor_args", "model.roi_head", "model.optimizer",
    "model.schedule", "model.nonfinite", "model.max_nonfinite_skips",
    "model.proposal_recall_every", "optimizer", "lr_scheduler", "trainer.max_steps",
    "trainer.max_epochs", "trainer.val_check_interval", "trainer.check_val_every_n_epoch",
    "trainer.gradient_clip_val", "trainer.gradient_clip_algorithm",
    "trainer.num_sanity_val_steps", "trainer.limit_val_batches",
)
KEEP = 2  # fronts kept in DIR: the one in use and the one before it
FRONT_FILE = "front.json"

Front = tuple[dict[str, Tensor], list[Tensor], dict[str, Tensor]]  # features, proposals, losses


def front_key(key: Mapping[str, Any]) -> dict[str, Any]:
    """A run key (:func:`detkit.engine.runs.run_key`) without :data:`HEAD_SETTINGS`: what
    decides the frozen front's outputs at each step (data, seed, frozen weights, RPN, ...)."""
    return {k: v for k, v in key.items()
            if not any(k == h or k.startswith(h + ".") for h in HEAD_SETTINGS)}


def batch_digest(images: Tensor, targets: list[dict[str, Tensor]] | None) -> str:
    """SHA-1 of a batch: the padded image tensor ``Tensor[N, 3, H, W]`` and each target's
    ``boxes`` and ``labels``."""
    digest = hashlib.sha1()
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    for target in targets or []:
        for name in ("boxes", "labels"):
            digest.update(target[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FrozenFrontStore:
    """One front's step files under ``root/<front hash>/`` (see the module docstring).

    Args:
        root: the ``--model.init.frozen_cache`` folder.
        key: the run's key; its :func:`front_key` names the folder.
        rank: the process rank (DDP ranks see different batches).
        keep: fronts kept under ``root``, this one included (older ones are deleted).
    """

    def __init__(self, root: str | os.PathLike, key: Mapping[str, Any], *, rank: int = 0,
                 keep: int = KEEP) -> None:
        front = front_key(key)
        self.directory = Path(root) / key_hash(front)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / FRONT_FILE).write_text(json.dumps(front, indent=1))
        os.utime(self.directory)  # most recently used
        self.rank = rank
        self.reads = self.writes = 0
        _prune(Path(root), keep, self.directory)

    def path(self, step: int) -> Path:
        return self.directory / (f"step{step}.pt" if not self.rank else
                                 f"step{step}_rank{self.rank}.pt")

    def front(self, step: int, images: Tensor, targets: list[dict[str, Tensor]] | None,
              compute: Callable[[], Front]) -> Front:
        """The front of training step ``step`` for this batch: read from its file (torch's RNG
        set to the state stored with it), else computed by ``compute()`` and stored.

        Raises:
            RuntimeError: the step's file was written for another batch.
        """
        digest, path = batch_digest(images, targets), self.path(step)
        try:
            saved = torch.load(path, weights_only=True)
        except FileNotFoundError:  # first run of this front (or pruned meanwhile)
            return self._compute(path, digest, compute)
        if saved["batch"] != digest:
            raise RuntimeError(
                f"{path} holds the frozen front of another batch than step {step} of this run "
                "(same front key, other data): a setting that changes the data or the frozen "
                f"parts is missing from the front key; delete {self.directory}")
        device = images.device
        torch.set_rng_state(saved["rng"])
        if device.type == "cuda":  # the RPN's sampler draws on the device's generator
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        self.reads += 1
        return ({k: v.to(device) for k, v in saved["features"].items()},
                [p.to(device) for p in saved["proposals"]],
                {k: v.to(device) for k, v in saved["losses"].items()})

    def _compute(self, path: Path, digest: str, compute: Callable[[], Front]) -> Front:
        features, proposals, losses = compute()
        device = next(iter(features.values())).device
        saved = {"batch": digest, "rng": torch.get_rng_state(),
                 **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda"
                    else {}),
                 "features": {k: v.detach().cpu() for k, v in features.items()},
                 "proposals": [p.detach().cpu() for p in proposals],
                 "losses": {k: v.detach().cpu() for k, v in losses.items()}}
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        torch.save(saved, tmp)
        os.replace(tmp, path)
        self.writes += 1
        return features, proposals, losses


def _prune(root: Path, keep: int, current: Path) -> None:
    """Delete all but the ``keep`` most recently used front folders under ``root`` (``current``
    always stays)."""
    fronts = sorted((p for p in root.iterdir() if (p / FRONT_FILE).exists() and p != current),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in fronts[max(keep - 1, 0):]:
        log.info("frozen_cache: deleting the older front %s", old)
        shutil.rmtree(old, ignore_errors=True)
