"""LightningDataModule that builds the train/val datasets and their DataLoaders."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from detkit.data import synthetic
from detkit.data.base import DetectionDataset, collate
from detkit.data.coco import CocoDetection
from detkit.data.samplers import EpochSeededSampler
from detkit.data.transforms import eval_transforms, seed_transforms, seed_worker, train_transforms
from detkit.data.voc import VocDetection

DataFormat = Literal["coco", "voc", "synthetic"]

# Where format="synthetic" generates its set when `root` is not given.
SYNTHETIC_ROOT = "data/synthetic"

_COCO_ARGS = ("train_images", "train_ann", "val_images", "val_ann")


def _categories(dataset: DetectionDataset) -> list[tuple[int, str]]:
    return list(zip(dataset.label_to_category_id[1:], dataset.category_names, strict=True))


class DetectionDataModule(LightningDataModule):
    """Train/val detection data for Lightning.

    After :meth:`setup`: ``train_dataset`` (stage ``"fit"``/None) and ``val_dataset`` (always),
    ``num_classes`` (K, without background), ``category_names`` (``[label - 1]``) and
    ``label_to_category_id`` (``[label]``, index 0 = -1); ``val_dataset.coco_gt`` for evaluation.
    Batches are ``(list[Tensor[3, H_i, W_i]], list[target dict])`` (see
    :class:`~detkit.data.base.DetectionDataset`).

    Randomness: workers run :func:`~detkit.data.transforms.seed_worker` (with the trainer's global
    rank); with ``num_workers=0`` :meth:`train_dataloader` seeds the training transforms from
    torch's global RNG, so ``seed_everything(s, workers=True)`` makes both reproducible.

    Args:
        format: ``"coco"`` (needs ``train_images``, ``train_ann``, ``val_images``, ``val_ann``),
            ``"voc"`` (needs ``root``; ``train_split``/``val_split`` name split files, or both
            None to split by ``split_ratio``) or ``"synthetic"`` (the built-in set, generated
            under ``root``, default ``SYNTHETIC_ROOT``).
        train_images, train_ann, val_images, val_ann: COCO image folders and JSON files.
        root: VOC dataset folder, or where the synthetic set lives.
        train_split, val_split: VOC split names (``root/ImageSets/Main/{name}.txt``).
        split_ratio: VOC train fraction when there are no split files.
        class_names: VOC class names in label order (None: every name found, sorted).
        batch_size: images per batch.
        num_workers: DataLoader worker processes (persistent when > 0).
        min_size, max_size: resize targets (shorter side, cap on the longer side).
        hflip, scale_jitter, color_jitter, crop_border, min_visibility: training augmentation,
            see :func:`~detkit.data.transforms.train_transforms`.
        skip_bad_images: skip missing/undecodable image files instead of raising.

    Raises:
        ValueError: an unknown format, or arguments the format needs are missing (all named).
    """

    def __init__(
        self,
        *,
        format: DataFormat = "synthetic",
        train_images: str | None = None,
        train_ann: str | None = None,
        val_images: str | None = None,
        val_ann: str | None = None,
        root: str | None = None,
        train_split: str | None = None,
        val_split: str | None = None,
        split_ratio: float = 0.8,
        class_names: list[str] | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        min_size: int = 800,
        max_size: int = 1333,
        hflip: float = 0.5,
        scale_jitter: tuple[float, float] = (0.8, 1.2),
        color_jitter: float = 0.0,
        crop_border: float = 0.0,
        min_visibility: float = 0.3,
        skip_bad_images: bool = False,
    ) -> None:
        super().__init__()
        self.format = format
        self.coco_paths = dict(
            zip(_COCO_ARGS, (train_images, train_ann, val_images, val_ann), strict=True)
        )
        self.root, self.train_split, self.val_split = root, train_split, val_split
        self.split_ratio, self.class_names = split_ratio, class_names
        self.batch_size, self.num_workers = batch_size, num_workers
        self.min_size, self.max_size = min_size, max_size
        self.augmentation = {"hflip": hflip, "scale_jitter": tuple(scale_jitter),
                             "color_jitter": color_jitter, "crop_border": crop_border,
                             "min_visibility": min_visibility}
        self.skip_bad_images = skip_bad_images
        self.train_dataset: DetectionDataset | None = None
        self.val_dataset: DetectionDataset | None = None
        self._check_args()

    def _check_args(self) -> None:
        if self.format not in ("coco", "voc", "synthetic"):
            raise ValueError(f"format must be 'coco', 'voc' or 'synthetic', got {self.format!r}")
        if self.format == "coco":
            missing = [name for name, value in self.coco_paths.items() if value is None]
            if missing:
                raise ValueError(f"format='coco' needs {', '.join(missing)} (missing)")
        if self.format == "voc":
            if self.root is None:
                raise ValueError("format='voc' needs root (missing)")
            if (self.train_split is None) != (self.val_split is None):
                raise ValueError("format='voc': give both train_split and val_split, or neither "
                                 "(to split by split_ratio)")
        elif self.class_names is not None:
            raise ValueError(f"class_names applies to format='voc' only (format={self.format!r}; "
                             "COCO files name their categories)")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError(f"need batch_size >= 1 and num_workers >= 0, got {self.batch_size}, "
                             f"{self.num_workers}")

    def prepare_data(self) -> None:
        """Generate the synthetic set (once, on one process); nothing to do for files on disk."""
        if self.format == "synthetic":
            synthetic.ensure_dataset(self._synthetic_root())

    def _synthetic_root(self) -> Path:
        return Path(self.root if self.root is not None else SYNTHETIC_ROOT)

    def setup(self, stage: str | None = None) -> None:
        """Build ``val_dataset`` and, for stage ``"fit"`` or None, ``train_dataset``."""
        if self.format == "synthetic" and None in self.coco_paths.values():
            self.coco_paths = synthetic.ensure_dataset(self._synthetic_root())
        if self.val_dataset is None:
            self.val_dataset = self._build(train=False)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._build(train=True)
        if self.train_dataset is not None:
            self._check_same_categories(self.train_dataset, self.val_dataset)

    def _build(self, *, train: bool) -> DetectionDataset:
        if train:
            transforms = train_transforms(self.min_size, self.max_size, **self.augmentation)
        else:
            transforms = eval_transforms(self.min_size, self.max_size)
        if self.format == "voc":
            assert self.root is not None  # checked in __init__
            return VocDetection(
                self.root, self.train_split if train else self.val_split,
                subset="train" if train else "val", split_ratio=self.split_ratio,
                class_names=self.class_names, transforms=transforms,
                skip_bad_images=self.skip_bad_images,
            )
        prefix = "train" if train else "val"
        return CocoDetection(
            self.coco_paths[f"{prefix}_images"], self.coco_paths[f"{prefix}_ann"], transforms,
            skip_bad_images=self.skip_bad_images,
        )

    @staticmethod
    def _check_same_categories(train: DetectionDataset, val: DetectionDataset) -> None:
        if (train.category_names, train.label_to_category_id) != (
            val.category_names, val.label_to_category_id
        ):
            raise ValueError(
                "train and val datasets have different categories (category id, name): "
                f"{_categories(train)} vs {_categories(val)}"
            )

    def _dataset(self) -> DetectionDataset:
        """The dataset that defines the categories; reads the validation annotations on first
        use, so ``num_classes`` is known when the CLI builds the model (before ``setup``)."""
        if self.train_dataset is None and self.val_dataset is None:
            self.setup("validate")
        dataset = self.train_dataset if self.train_dataset is not None else self.val_dataset
        assert dataset is not None
        return dataset

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (labels ``1..K``; 0 is background)."""
        return len(self._dataset().category_names)

    @property
    def category_names(self) -> list[str]:
        return self._dataset().category_names

    @property
    def label_to_category_id(self) -> list[int]:
        return self._dataset().label_to_category_id

    def _loader(self, dataset: DetectionDataset, *, shuffle: bool) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            # training order: a function of (seed, epoch), so a resumed run sees the same batches
            sampler=EpochSeededSampler(dataset, torch.initial_seed()) if shuffle else None,
            num_workers=self.num_workers,
            collate_fn=collate,
            worker_init_fn=partial(seed_worker, rank=rank),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (``(images, targets)``, see :func:`collate`)."""
        if self.train_dataset is None:
            raise RuntimeError("call setup('fit') before train_dataloader()")
        if self.num_workers == 0:
            # No worker starts, so seed_worker never runs: seed the transforms here, from torch's
            # RNG (seeded by seed_everything), a different stream at each call.
            seed_transforms(self.train_dataset, int(torch.randint(0, 2**62, ()).item()))
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in dataset order (eval transforms: resize + normalise only)."""
        if self.val_dataset is None:
            raise RuntimeError("call setup() before val_dataloader()")
        return self._loader(self.val_dataset, shuffle=False)
