"""albumentations pipelines for detection, and seeding them in DataLoader workers.

A pipeline is called as ``t(image=uint8 [H, W, 3], bboxes=float [M, 4] xyxy pixels ("pascal_voc"),
labels=int [M])`` and returns ``{"image": Tensor[3, H', W'] float32 normalised (ImageNet
mean/std), "bboxes": float [M', 4] xyxy in the output image's pixels, "labels": [M']}``.

Resizing follows torchvision's ``GeneralizedRCNNTransform``: the shorter side becomes
``min_size`` unless the longer side would then exceed ``max_size``, aspect ratio kept.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Subset, get_worker_info

from detkit.data._albumentations import A, BaseCompose, ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_scale(height: int, width: int, min_size: float, max_size: float) -> float:
    """Factor that brings the shorter side to ``min_size``, the longer to at most ``max_size``."""
    return min(min_size / min(height, width), max_size / max(height, width))


class ResizeShortestSide(A.DualTransform):
    """Resize once, keeping aspect: shorter side ``min_size * s``, longer at most ``max_size * s``.

    ``s`` is drawn uniformly from ``scale_range`` per call (scale jitter multiplies the target
    size; there is no second resize). Output size is ``round(h * f), round(w * f)`` with
    ``f = resize_scale(h, w, min_size * s, max_size * s)``. Boxes need no change: albumentations
    keeps them normalised to the image size between transforms.

    Args:
        min_size: target length of the shorter side in pixels.
        max_size: cap on the longer side in pixels.
        scale_range: ``(low, high)`` of the jitter factor ``s``; ``(1, 1)`` disables it.
        interpolation: OpenCV interpolation flag for the image.
        p: probability of applying (keep 1 for a pipeline that must resize).
    """

    def __init__(
        self,
        min_size: int,
        max_size: int,
        scale_range: tuple[float, float] = (1.0, 1.0),
        interpolation: int = cv2.INTER_LINEAR,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if not 0 < min_size <= max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.min_size = min_size
        self.max_size = max_size
        self.scale_range = (float(low), float(high))
        self.interpolation = interpolation

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        jitter = self.py_random.uniform(*self.scale_range)
        scale = resize_scale(height, width, self.min_size * jitter, self.max_size * jitter)
        return {"out_hw": (max(1, round(height * scale)), max(1, round(width * scale)))}

    def apply(self, img: np.ndarray, out_hw: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(img, (out_hw[1], out_hw[0]), interpolation=self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, out_hw: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(mask, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes  # normalised coordinates are scale invariant

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_size", "max_size", "scale_range", "interpolation")


def _bbox_params(min_visibility: float) -> A.BboxParams:
    # clip=True clips input boxes to the image before anything else; min_visibility drops boxes
    # that a crop leaves with less than that fraction of their (clipped) area.
    return A.BboxParams(
        format="pascal_voc", label_fields=["labels"], min_visibility=min_visibility, clip=True
    )


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation settings, and the one home of their defaults (the DataModule's
    ``--data.hflip`` etc. take theirs from :data:`AUGMENTATION`).

    Attributes:
        hflip: probability of a horizontal flip (``x -> W - x``; 0 disables).
        scale_jitter: range of the factor multiplying ``min_size`` and ``max_size``.
        color_jitter: brightness/contrast/saturation strength for ``A.ColorJitter`` (0 disables).
        crop_border: up to this fraction of each side is cropped away (``A.RandomCropFromBorders``,
            no resize; 0 disables, at most 0.5).
        min_visibility: a box keeping less than this fraction of its area after the crop is
            dropped.
    """

    hflip: float = 0.5
    scale_jitter: tuple[float, float] = (0.8, 1.2)
    color_jitter: float = 0.0
    crop_border: float = 0.0
    min_visibility: float = 0.3


AUGMENTATION = Augmentation()


def train_transforms(
    min_size: int = 800, max_size: int = 1333, augmentation: Augmentation = AUGMENTATION,
    **settings: Any,
) -> A.Compose:
    """Training pipeline: [border crop] -> jittered resize -> [hflip] -> [color] -> normalise.

    Args:
        min_size, max_size: resize targets (torchvision's defaults 800/1333), see module doc.
        augmentation: the :class:`Augmentation` settings.
        **settings: :class:`Augmentation` fields that replace ``augmentation``'s, e.g.
            ``hflip=1.0``.

    Returns:
        An unseeded ``A.Compose``; seed it with :func:`seed_transforms` / :func:`seed_worker`.
    """
    augmentation = dataclasses.replace(augmentation, **settings)
    hflip, color_jitter = augmentation.hflip, augmentation.color_jitter
    crop_border = augmentation.crop_border
    if not 0.0 <= crop_border <= 0.5:
        raise ValueError(f"crop_border must be in [0, 0.5], got {crop_border}")
    steps: list[A.BasicTransform] = []
    if crop_border > 0:
        steps.append(A.RandomCropFromBorders(crop_border, crop_border, crop_border, crop_border))
    steps.append(ResizeShortestSide(min_size, max_size, scale_range=augmentation.scale_jitter))
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if color_jitter > 0:
        steps.append(A.ColorJitter(color_jitter, color_jitter, color_jitter, hue=0.0, p=1.0))
    steps += [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]
    return A.Compose(steps, bbox_params=_bbox_params(augmentation.min_visibility))


def eval_transforms(min_size: int, max_size: int) -> A.Compose:
    """Evaluation pipeline: resize (no jitter) -> normalise -> tensor. No crop or flip, so boxes
    map back to the file by scaling ``input_size -> orig_size``."""
    steps = [
        ResizeShortestSide(min_size, max_size),
        A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ToTensorV2(),
    ]
    return A.Compose(steps, bbox_params=_bbox_params(0.0))


def _find_composes(dataset: object) -> list[BaseCompose]:
    """albumentations Composes a dataset uses: its ``transforms``/``transform`` attribute,
    looking through ``Subset`` and ``ConcatDataset``."""
    if isinstance(dataset, BaseCompose):
        return [dataset]
    if isinstance(dataset, Subset):
        return _find_composes(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        return [c for d in dataset.datasets for c in _find_composes(d)]
    values = (getattr(dataset, name, None) for name in ("transforms", "transform"))
    return [v for v in values if isinstance(v, BaseCompose)]


def seed_transforms(dataset: object, seed: int) -> int:
    """Seed every albumentations Compose of ``dataset`` (see :func:`_find_composes`).

    albumentations 2.x draws all randomness from per-transform ``random.Random`` and
    ``np.random.Generator`` objects, never from the global ``random``/``numpy`` state, so
    ``seed_everything`` does not reach them. ``Compose.set_random_seed(s)`` (what ``seed=`` does)
    gives EVERY child transform its own generator seeded with the same ``s``, so their draws are
    identical: two transforms with the same ``p`` then always fire together (e.g. crop iff flip).
    We instead hand one shared pair of generators to the whole Compose
    (``set_random_state``), so children draw from one stream in turn.

    Args:
        dataset: a dataset (or Subset/ConcatDataset, or a Compose itself).
        seed: any int; Compose ``i`` gets generators seeded from ``(seed, i)``.

    Returns:
        How many Composes were seeded.
    """
    composes = _find_composes(dataset)
    for index, compose in enumerate(composes):
        sequence = np.random.SeedSequence([seed & (2**64 - 1), index])
        np_seed, py_seed = (int(v) for v in sequence.generate_state(2, dtype=np.uint64))
        compose.set_random_state(np.random.default_rng(np_seed), random.Random(py_seed))
    return len(composes)


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader ``worker_init_fn``: seed torch, ``random``, numpy and the dataset's transforms.

    Seeds derive from ``(base_seed, worker_id, rank)`` where ``base_seed = torch.initial_seed() -
    worker_id`` is what the DataLoader drew from its ``generator`` (the DataModule seeds one per
    training loader) or else from the main process's torch RNG, so a run after
    ``seed_everything(s, workers=True)`` is reproducible, workers differ from each other, and
    (with ``rank`` = global rank, as Lightning's own ``pl_worker_init_function`` does) so do DDP
    processes. Passing this function stops Lightning from adding its own worker_init_fn, hence we
    seed everything it would.

    With ``num_workers=0`` no worker starts: call :func:`seed_transforms` in the main process
    (the :class:`~detkit.data.datamodule.DetectionDataModule` does).
    """
    base_seed = torch.initial_seed() - worker_id
    sequence = np.random.SeedSequence([base_seed, worker_id, rank])
    torch_seed, py_seed, np_seed, aug_seed = (
        int(v) for v in sequence.generate_state(4, dtype=np.uint64)
    )
    torch.manual_seed(torch_seed)
    random.seed(py_seed)
    np.random.seed(np_seed % 2**32)
    info = get_worker_info()
    if info is not None:
        seed_transforms(info.dataset, aug_seed)
