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
after the RPN (which the RoI sampler goes on from); and per validation batch the feature maps
and proposals (the RPN draws nothing there, and a read leaves torch's RNG alone). A later run
with the same *front key* (its run key without the settings that only reach the head:
:data:`HEAD_SETTINGS`) reads them instead of computing: its head sees bit-identical inputs and
draws the same random numbers, so it trains exactly as it would have alone (tested on the CPU;
the CUDA path stores the device's RNG state too but has no test yet). Each step's file is named
by a digest of its batch (images, their sizes, boxes, labels), so a batch it was not written for
never reads it, and the first read of every run is checked against a computed front
(:class:`FrozenFrontStore`). The setting is not part of the run key: it changes the time, not
the result.

Layout: ``DIR/<front hash>/front.json`` (the front key and device), ``step<N>_<digest>
[_rank<R>].pt`` (training) and ``val<N>_<digest>[_rank<R>].pt`` (validation batch N) written
atomically, and ``.in_use/`` (the processes that have it open). Besides the fronts in use,
only the :data:`KEEP` most recently used are kept; each takes about ``4 * C * (sum of level
sizes) * batch`` bytes per step or validation batch, plus the proposals (the study: 64
channels, 256 px, 2 images: 2.8 MB a step, 3.5 GB for a run's 1000 steps and 100 validation
batches).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection.image_list import ImageList

from detkit.engine.runs import key_hash, process_alive, setting_in
from detkit.models.faster_rcnn import Front

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
# Fronts kept in DIR: the one in use and the three used before it. The study (tools/study.sh)
# runs its questions seed by seed, and a seed's default-data front, made by question d, is read
# again by c, a (deformation none) and b (scale range coco) after a and b made three others
# (mild, strong, medium): four kept, each front is computed once per seed (about 14 GB).
KEEP = 4
STAGES = ("train", "val")  # a training step's front; a validation batch's (no RNG state)
FRONT_FILE = "front.json"
IN_USE = ".in_use"  # one file per process that has the front open


def front_key(key: Mapping[str, Any]) -> dict[str, Any]:
    """A run key (:func:`detkit.engine.runs.run_key`) without :data:`HEAD_SETTINGS`: what
    decides the frozen front's outputs at each step (data, seed, frozen weights, RPN, ...)."""
    return {k: v for k, v in key.items() if not setting_in(k, HEAD_SETTINGS)}


def batch_digest(image_list: ImageList, targets: list[dict[str, Tensor]] | None) -> str:
    """SHA-1 of a batch: the padded images ``Tensor[N, 3, H, W]`` (bytes, dtype and shape), the
    images' sizes before padding (the RPN clips proposals to them), and each target's ``boxes``
    and ``labels``. Any dtype (bfloat16 included): tensors are hashed as raw bytes."""
    digest = hashlib.sha1(str(image_list.image_sizes).encode())
    tensors = [image_list.tensors] + [t[name] for t in targets or [] for name in ("boxes",
                                                                                  "labels")]
    for tensor in tensors:
        flat = tensor.detach().cpu().contiguous()
        digest.update(f"{flat.dtype}{tuple(flat.shape)}".encode())
        digest.update(flat.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FrozenFrontStore:
    """One front's step files under ``root/<front hash>/`` (see the module docstring).

    A step's file is named by the step and the batch's digest, so a run that sees another batch
    at a step (a resumed run: its augmentation stream restarts) computes and stores its own
    front there: never an error, never another batch's front. The first step a store reads is
    also computed and compared bit for bit; if they differ (the front was written by other code,
    another library version or another device), the folder's step files are deleted and the run
    computes from there on. While a store is open, ``.in_use/PID@HOST`` marks its folder, and
    no other run's pruning deletes it.

    Args:
        root: the ``--model.init.frozen_cache`` folder.
        key: the run's key; its :func:`front_key`, with ``device``, names the folder.
        device: the device type the front is computed on (``"cpu"``, ``"cuda"``).
        rank: the process rank (DDP ranks see different batches).
        keep: fronts kept under ``root``, this one included (older unused ones are deleted).
    """

    def __init__(self, root: str | os.PathLike, key: Mapping[str, Any], *, device: str = "cpu",
                 rank: int = 0, keep: int = KEEP) -> None:
        front = {**front_key(key), "device": device}
        self.directory = Path(root) / key_hash(front)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / FRONT_FILE).write_text(json.dumps(front, indent=1))
        self._marker = self.directory / IN_USE / f"{os.getpid()}@{socket.gethostname()}"
        self._marker.parent.mkdir(exist_ok=True)
        self._marker.touch()
        os.utime(self.directory)  # most recently used
        self.rank = rank
        self.read_counts = dict.fromkeys(STAGES, 0)  # fronts read / computed, per stage
        self.write_counts = dict.fromkeys(STAGES, 0)
        self._verified: set[str] = set()  # stages whose first read was compared with a compute
        _prune(Path(root), keep, self.directory)

    @property
    def reads(self) -> int:
        """Training steps that read their front."""
        return self.read_counts["train"]

    @property
    def writes(self) -> int:
        """Training steps that computed (and stored) their front."""
        return self.write_counts["train"]

    @property
    def verified(self) -> bool:
        """Whether a training step's read was compared with a computed front."""
        return "train" in self._verified

    def counts(self) -> dict[str, int]:
        """What this run read and computed: ``read``, ``computed`` (training steps),
        ``val_read``, ``val_computed`` (validation batches); a run's ``frozen_front`` metrics."""
        return {"read": self.reads, "computed": self.writes,
                "val_read": self.read_counts["val"], "val_computed": self.write_counts["val"]}

    def close(self) -> None:
        """This run is done with the folder: other runs' pruning may delete it now."""
        self._marker.unlink(missing_ok=True)

    def path(self, step: int, digest: str, stage: str = "train") -> Path:
        rank = f"_rank{self.rank}" if self.rank else ""
        prefix = "step" if stage == "train" else stage
        return self.directory / f"{prefix}{step}_{digest[:16]}{rank}.pt"

    def front(self, step: int, image_list: ImageList, targets: list[dict[str, Tensor]] | None,
              compute: Callable[[], Front], *, stage: str = "train") -> Front:
        """The front of training step ``step`` (``stage="val"``: of validation batch ``step``)
        for this batch (``image_list``: the padded images and their sizes; ``targets`` with
        torchvision's ``boxes``, ``labels``, None in validation), as ``compute()`` returns it:
        ``(features: dict[str, Tensor[N, C, H_l, W_l]], proposals: list[Tensor[P_i, 4]] xyxy
        in input pixels, rpn_losses: dict[str, Tensor[]])``. Read from its file (a training
        step's with torch's RNG set to the state stored with it), else computed and stored."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        digest = batch_digest(image_list, targets)
        path = self.path(step, digest, stage)
        try:
            saved = torch.load(path, weights_only=True)
        except FileNotFoundError:  # first run of this front and batch (or pruned meanwhile)
            return self._compute(path, digest, compute, stage)
        if saved["batch"] != digest:  # a 64-bit prefix collision: compute, never swap
            return self._compute(path, digest, compute, stage)
        if stage not in self._verified:
            self._verified.add(stage)
            computed = compute()
            if not _same(saved, computed, rng=stage == "train"):
                log.warning("frozen_cache: %s does not match the front computed now (other "
                            "code, versions or device wrote it); deleting its step files",
                            self.directory)
                for stale in self.directory.glob("*.pt"):
                    stale.unlink(missing_ok=True)
                self._save(path, digest, computed, stage)
                return computed
        device = image_list.tensors.device
        if stage == "train":  # the RoI sampler goes on from the RNG state after the RPN
            torch.set_rng_state(saved["rng"])
            if device.type == "cuda":  # the RPN's sampler draws on the device's generator
                torch.cuda.set_rng_state(saved["cuda_rng"], device)
        self.read_counts[stage] += 1
        return ({k: v.to(device) for k, v in saved["features"].items()},
                [p.to(device) for p in saved["proposals"]],
                {k: v.to(device) for k, v in saved["losses"].items()})

    def _compute(self, path: Path, digest: str, compute: Callable[[], Front],
                 stage: str) -> Front:
        front = compute()
        self._save(path, digest, front, stage)
        return front

    def _save(self, path: Path, digest: str, front: Front, stage: str) -> None:
        """Store ``front`` with torch's RNG state now (just after the RPN that computed it)."""
        features, proposals, losses = front
        device = next(iter(features.values())).device
        saved = {"batch": digest, "rng": torch.get_rng_state(),
                 **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda"
                    else {}),
                 "features": {k: v.detach().cpu() for k, v in features.items()},
                 "proposals": [p.detach().cpu() for p in proposals],
                 "losses": {k: v.detach().cpu() for k, v in losses.items()}}
        path.parent.mkdir(parents=True, exist_ok=True)  # pruned meanwhile: store it again
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        torch.save(saved, tmp)
        os.replace(tmp, path)
        self.write_counts[stage] += 1


def _same(saved: dict[str, Any], front: Front, *, rng: bool = True) -> bool:
    """Whether a stored front equals one just computed, bit for bit, with torch's RNG state
    (after it) too when ``rng``."""
    features, proposals, losses = front
    pairs = [(saved["rng"], torch.get_rng_state())] if rng else []
    pairs += [(saved["features"].get(k), v) for k, v in features.items()]
    pairs += list(zip(saved["proposals"], proposals, strict=False))
    pairs += [(saved["losses"].get(k), v) for k, v in losses.items()]
    return (list(saved["features"]) == list(features) and len(saved["proposals"]) == len(
        proposals) and all(a is not None and a.shape == b.shape and a.dtype == b.dtype
                           and torch.equal(a, b.detach().cpu()) for a, b in pairs))


def _prune(root: Path, keep: int, current: Path) -> None:
    """Keep ``current``, every front folder a live process has open (``.in_use``) and the
    ``keep - 1`` most recently used others under ``root``; delete the rest."""
    fronts = sorted((p for p in root.iterdir() if (p / FRONT_FILE).exists() and p != current
                     and not _in_use(p)),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in fronts[max(keep - 1, 0):]:
        log.info("frozen_cache: deleting the older front %s", old)
        shutil.rmtree(old, ignore_errors=True)


def _in_use(directory: Path) -> bool:
    """Whether a live process of this host (or any process of another) has the front open."""
    markers = directory / IN_USE
    return markers.is_dir() and any(process_alive(m.name) for m in markers.iterdir())
