"""LightningDataModule that builds the train/val datasets and their DataLoaders.

Dataset formats live in ONE table, :data:`FORMATS`: an entry says which DataModule arguments the
format reads, how it builds a dataset, what it prepares first and which evaluations beyond
COCO's it supports. A new format is one entry here and one dataset module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import Subset as IndexSubset

from detkit._validation import check_choice
from detkit.data import synthetic
from detkit.data.base import DetectionDataset, Transform, collate
from detkit.data.coco import CocoDetection
from detkit.data.samplers import EpochSeededSampler
from detkit.data.synthetic import SyntheticFactors
from detkit.data.transforms import (
    AUGMENTATION,
    Augmentation,
    eval_transforms,
    seed_transforms,
    seed_worker,
    train_transforms,
)
from detkit.data.voc import VocDetection

Subset = Literal["train", "val"]

# Where format="synthetic" generates its sets when `root` is not given: one folder per spec,
# SYNTHETIC_ROOT/<SyntheticFactors.folder_name()>, so sets of different factors never collide.
SYNTHETIC_ROOT = "data/synthetic"
_DEFAULT_FACTORS = SyntheticFactors()

# Seed of the validation subset drawn for `val_max_images`: fixed, so every validation of a run
# (and every run of a comparison) scores the same images.
VAL_SUBSET_SEED = 0


def val_subset_indices(num_images: int, max_images: int, seed: int = VAL_SUBSET_SEED
                       ) -> list[int]:
    """``min(max_images, num_images)`` distinct indices in ``0..num_images-1``, sorted, drawn
    with ``seed`` (the same for the same arguments)."""
    if max_images >= num_images:
        return list(range(num_images))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(num_images, size=max_images, replace=False))


@dataclass(frozen=True)
class BuildOptions:
    """What every format's dataset gets besides its own arguments.

    Attributes:
        transforms: the train or eval transform.
        skip_bad_images: leave out missing/undecodable files instead of raising.
        verify_images: decode every image at construction (validation with skip_bad_images:
            a bad image is then left out of predictions and ground truth alike).
    """

    transforms: Transform
    skip_bad_images: bool
    verify_images: bool


@dataclass(frozen=True)
class DatasetFormat:
    """One dataset format.

    Attributes:
        args: the :class:`DetectionDataModule` arguments it reads; any other format argument
            given is an error (it would be ignored).
        required: those of ``args`` that must be given.
        build: ``(args, subset, options) -> dataset`` with ``args`` as returned by ``prepare``.
        prepare: run before ``build`` (on one process first, by ``prepare_data``): turns the
            user's ``args`` into those ``build`` reads (e.g. generates files and names them).
        check: more argument checks (raising ValueError), or None.
        extra_metrics: evaluations beyond COCO's that its val dataset supports: ``"voc"`` (VOC
            AP; the dataset has ``voc_ground_truth()``).
    """

    args: tuple[str, ...]
    required: tuple[str, ...]
    build: Callable[[Mapping[str, Any], Subset, BuildOptions], DetectionDataset]
    prepare: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    check: Callable[[Mapping[str, Any]], None] | None = None
    extra_metrics: tuple[str, ...] = ()


def _build_coco(args: Mapping[str, Any], subset: Subset, options: BuildOptions) -> CocoDetection:
    # only the evaluated split keeps the annotation dicts coco_gt is built from (memory)
    return CocoDetection(args[f"{subset}_images"], args[f"{subset}_ann"], options.transforms,
                         skip_bad_images=options.skip_bad_images,
                         verify_images=options.verify_images, keep_coco_gt=subset == "val")


def _build_voc(args: Mapping[str, Any], subset: Subset, options: BuildOptions) -> VocDetection:
    return VocDetection(args["root"], args[f"{subset}_split"], subset=subset,
                        split_ratio=args["split_ratio"], class_names=args["class_names"],
                        transforms=options.transforms, skip_bad_images=options.skip_bad_images,
                        verify_images=options.verify_images)


def _check_voc(args: Mapping[str, Any]) -> None:
    if (args["train_split"] is None) != (args["val_split"] is None):
        raise ValueError("format='voc': give both train_split and val_split, or neither (to "
                         "split by split_ratio)")


def _prepare_synthetic(args: Mapping[str, Any]) -> dict[str, Any]:
    """Generate the built-in set of ``args["synthetic"]`` (or reuse it); its COCO files for
    every split. Without ``root`` it lives in ``SYNTHETIC_ROOT/<folder_name()>`` and must match
    the factors; a given ``root`` with the default factors reuses any set found there."""
    factors = args["synthetic"]
    if args["root"] is None:
        root = Path(SYNTHETIC_ROOT) / factors.folder_name()
    else:
        root = Path(args["root"])
    reuse_any = args["root"] is not None and factors == _DEFAULT_FACTORS
    return synthetic.ensure_dataset(root, factors.spec(), reuse_any=reuse_any)


_COCO_ARGS = ("train_images", "train_ann", "val_images", "val_ann")

FORMATS: dict[str, DatasetFormat] = {
    "coco": DatasetFormat(args=_COCO_ARGS, required=_COCO_ARGS, build=_build_coco),
    "voc": DatasetFormat(
        args=("root", "train_split", "val_split", "split_ratio", "class_names"),
        required=("root",), build=_build_voc, check=_check_voc, extra_metrics=("voc",)),
    "synthetic": DatasetFormat(args=("root", "synthetic"), required=(), build=_build_coco,
                               prepare=_prepare_synthetic),
}
"""Every dataset format by the name ``--data.format`` takes."""

# The format-specific DetectionDataModule arguments (each read by at least one format).
_FORMAT_ARGS = tuple(dict.fromkeys(name for f in FORMATS.values() for name in f.args))


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
    rank); with ``num_workers=0`` :meth:`train_dataloader` seeds the training transforms itself.
    Both derive from the run's seed and the epoch only (see :meth:`train_dataloader`), so
    ``seed_everything(s, workers=True)`` makes them reproducible, whatever the model.

    Args:
        format: a name in :data:`FORMATS`: ``"coco"`` (needs ``train_images``, ``train_ann``,
            ``val_images``, ``val_ann``), ``"voc"`` (needs ``root``; ``train_split``/
            ``val_split`` name split files, or both None to split by ``split_ratio``) or
            ``"synthetic"`` (the built-in set of ``synthetic``'s factors, generated under
            ``root``, default ``SYNTHETIC_ROOT/<synthetic.folder_name()>``).
        train_images, train_ann, val_images, val_ann: COCO image folders and JSON files.
        root: VOC dataset folder, or where the synthetic set lives (given with the default
            ``synthetic``, any synthetic set found there is used as is).
        synthetic: the synthetic set's preset and factors (``SyntheticFactors``).
        train_split, val_split: VOC split names (``root/ImageSets/Main/{name}.txt``).
        split_ratio: VOC train fraction when there are no split files.
        class_names: VOC class names in label order (None: every name found, sorted).
        batch_size: images per batch.
        num_workers: DataLoader worker processes (persistent when > 0).
        min_size, max_size: resize targets (shorter side, cap on the longer side).
        hflip, scale_jitter, color_jitter, crop_border, min_visibility: training augmentation,
            see :func:`~detkit.data.transforms.train_transforms`.
        skip_bad_images: leave out missing/undecodable image files instead of raising. Training
            serves the next image in place of an undecodable one; validation decodes every image
            at setup and leaves the bad ones out of predictions and ground truth alike (counted
            in :attr:`val_images_skipped`).
        val_max_images: validation on a budget: the validations run DURING fit score a fixed
            subset of this many images (drawn once with :data:`VAL_SUBSET_SEED`, the same in
            every validation and run); ``trainer.validate`` (the evaluation that ends
            ``detkit.engine.cli.train``, and ``tools/eval.py``) always scores the whole set.
            None: always the whole set.

    Raises:
        ValueError: an unknown format (valid ones listed), arguments the format needs are
            missing or ones it does not read are given (all named); at setup, an empty training
            set (no images or no boxes), naming its file or folder.
    """

    def __init__(
        self,
        *,
        format: str = "synthetic",
        train_images: str | None = None,
        train_ann: str | None = None,
        val_images: str | None = None,
        val_ann: str | None = None,
        root: str | None = None,
        synthetic: SyntheticFactors = _DEFAULT_FACTORS,
        train_split: str | None = None,
        val_split: str | None = None,
        split_ratio: float = 0.8,
        class_names: list[str] | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        min_size: int = 800,
        max_size: int = 1333,
        hflip: float = AUGMENTATION.hflip,
        scale_jitter: tuple[float, float] = AUGMENTATION.scale_jitter,
        color_jitter: float = AUGMENTATION.color_jitter,
        crop_border: float = AUGMENTATION.crop_border,
        min_visibility: float = AUGMENTATION.min_visibility,
        skip_bad_images: bool = False,
        val_max_images: int | None = None,
    ) -> None:
        super().__init__()
        self.format = format
        self.format_args: dict[str, Any] = dict(
            train_images=train_images, train_ann=train_ann, val_images=val_images,
            val_ann=val_ann, root=root, synthetic=synthetic, train_split=train_split,
            val_split=val_split,
            split_ratio=split_ratio, class_names=class_names)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.min_size, self.max_size = min_size, max_size
        self.augmentation = Augmentation(hflip, tuple(scale_jitter), color_jitter, crop_border,
                                         min_visibility)
        self.skip_bad_images = skip_bad_images
        self.val_max_images = val_max_images
        self.train_dataset: DetectionDataset | None = None
        self.val_dataset: DetectionDataset | None = None
        self._prepared_args: dict[str, Any] | None = None
        self._check_args()
        # saved in checkpoints ("datamodule_hyper_parameters"): prediction on new images
        # (detkit.engine.predict) resizes them as validation did
        self.save_hyperparameters({"min_size": min_size, "max_size": max_size})

    def _check_args(self) -> None:
        check_choice("format", self.format, sorted(FORMATS))
        spec = FORMATS[self.format]
        missing = [name for name in spec.required if self.format_args[name] is None]
        if missing:
            raise ValueError(f"format={self.format!r} needs {', '.join(missing)} (missing)")
        defaults = inspect.signature(type(self).__init__).parameters
        ignored = [name for name in _FORMAT_ARGS if name not in spec.args
                   and self.format_args[name] != defaults[name].default]
        if ignored:
            users = {name: [f for f, s in FORMATS.items() if name in s.args] for name in ignored}
            raise ValueError(f"format={self.format!r} does not read "
                             + ", ".join(f"{name} (used by {users[name]})" for name in ignored))
        if spec.check is not None:
            spec.check(self.format_args)
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError(f"need batch_size >= 1 and num_workers >= 0, got {self.batch_size}, "
                             f"{self.num_workers}")
        if self.val_max_images is not None and (
            isinstance(self.val_max_images, bool) or not isinstance(self.val_max_images, int)
            or self.val_max_images < 1
        ):
            raise ValueError(f"val_max_images must be None or an integer >= 1, got "
                             f"{self.val_max_images!r}")

    @property
    def extra_metrics(self) -> tuple[str, ...]:
        """Evaluations beyond COCO's the validation set supports, e.g. ``("voc",)`` (VOC AP)."""
        return FORMATS[self.format].extra_metrics

    @property
    def val_images_skipped(self) -> int:
        """Validation images left out (missing or undecodable, with ``skip_bad_images``): they
        are in neither the predictions nor the evaluated ground truth."""
        if self.val_dataset is None:
            return 0
        stats = self.val_dataset.stats
        return stats["missing_images_skipped"] + stats["undecodable_images_skipped"]

    @property
    def coco_paths(self) -> dict[str, Any]:
        """The COCO folders/files the datasets are read from (``*_images``, ``*_ann``): the
        ``coco`` format's arguments or, once prepared, the synthetic set's (its test split
        too); empty for VOC."""
        args = self._prepared_args if self._prepared_args is not None else self.format_args
        return {k: v for k, v in args.items() if k.endswith(("_images", "_ann"))}

    def _args(self) -> dict[str, Any]:
        """The format's arguments as its ``build`` reads them (prepared once per process)."""
        if self._prepared_args is None:
            spec = FORMATS[self.format]
            args = {name: self.format_args[name] for name in spec.args}
            self._prepared_args = spec.prepare(args) if spec.prepare is not None else args
        return self._prepared_args

    def prepare_data(self) -> None:
        """Run the format's ``prepare`` (the synthetic set is generated here, once, on one
        process); nothing to do for files on disk."""
        self._args()

    def setup(self, stage: str | None = None) -> None:
        """Build ``val_dataset`` and, for stage ``"fit"`` or None, ``train_dataset``."""
        if self.val_dataset is None:
            self.val_dataset = self._build("val")
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._build("train")
            self._check_not_empty(self.train_dataset)
        if self.train_dataset is not None:
            self._check_same_categories(self.train_dataset, self.val_dataset)

    def _build(self, subset: Subset) -> DetectionDataset:
        if subset == "train":
            transforms = train_transforms(self.min_size, self.max_size, self.augmentation)
        else:
            transforms = eval_transforms(self.min_size, self.max_size)
        options = BuildOptions(transforms, self.skip_bad_images,
                               verify_images=self.skip_bad_images and subset == "val")
        return FORMATS[self.format].build(self._args(), subset, options)

    @staticmethod
    def _check_not_empty(train: DetectionDataset) -> None:
        """Training on no images or on negatives only would run and learn nothing."""
        if len(train) == 0:
            raise ValueError(f"the training set {train.source} has no images")
        if not train.records.box_offsets[-1]:
            raise ValueError(f"the training set {train.source} has {len(train)} images but no "
                             "object boxes to train on")

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

    def _loader(self, dataset: Dataset, *, shuffle: bool, seed: int | None = None) -> DataLoader:
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
            # the workers' base seed (see seed_worker) comes from this generator
            generator=None if seed is None else torch.Generator().manual_seed(seed),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (``(images, targets)``, see :func:`collate`).

        Order and augmentation are functions of the run's seed (``torch.initial_seed()``, set by
        ``seed_everything``) and the epoch, never of how far torch's RNG has advanced: building
        the model draws a different amount of random numbers for each architecture, and runs
        that differ only in the model must see the same batches."""
        if self.train_dataset is None:
            raise RuntimeError("call setup('fit') before train_dataloader()")
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        sequence = np.random.SeedSequence([torch.initial_seed(), epoch])
        seed = int(sequence.generate_state(1, np.uint64)[0] >> 2)
        if self.num_workers == 0:
            # No worker starts, so seed_worker never runs: seed the transforms here.
            seed_transforms(self.train_dataset, seed)
        return self._loader(self.train_dataset, shuffle=True, seed=seed)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in dataset order (eval transforms: resize + normalise only): the
        :meth:`val_subset` while fitting, else the whole set."""
        if self.val_dataset is None:
            raise RuntimeError("call setup() before val_dataloader()")
        fitting = self.trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        dataset = self.val_subset() if fitting else self.val_dataset
        return self._loader(dataset, shuffle=False)

    def val_subset(self) -> Dataset:
        """What validations during fit score: ``val_dataset`` itself, or with
        ``val_max_images`` a fixed :class:`~torch.utils.data.Subset` of it (dataset order)."""
        if self.val_dataset is None:
            raise RuntimeError("call setup() before val_subset()")
        if self.val_max_images is None or self.val_max_images >= len(self.val_dataset):
            return self.val_dataset
        return IndexSubset(self.val_dataset,
                           val_subset_indices(len(self.val_dataset), self.val_max_images))
