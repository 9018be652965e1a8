"""What the COCO and VOC datasets share: image records, box clipping, loading, items, collate.

Frames: a record's ``boxes_xyxy`` are in the ORIGINAL image's pixels (continuous coordinates,
``0 <= x1 < x2 <= width``); an item's ``target["boxes_xyxy"]`` are in the TRANSFORMED image's
pixels. The model maps predictions back by scaling ``input_size`` -> ``orig_size``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from detkit.eval import build_coco_gt

logger = logging.getLogger(__name__)

# How many missing paths a "missing image files" error lists before "... and N more".
_MAX_LISTED_PATHS = 5

Transform = Callable[..., dict[str, Any]]
"""An albumentations-style callable: ``transform(image=HxWx3 uint8, bboxes=[M, 4] pascal_voc,
labels=[M]) -> {"image": Tensor[3, H', W'] float32, "bboxes": [M', 4], "labels": [M']}``."""


class UnreadableImageError(OSError):
    """An image file exists but cannot be decoded, or decodes to another size than recorded."""


@dataclass(frozen=True)
class ImageRecord:
    """One image as the item loader needs it.

    Attributes:
        image_id: id of the image in the dataset's ``coco_gt``.
        path: the image file.
        height, width: size of the file in pixels (from the annotation file, checked at load).
        boxes_xyxy: ``float32 [M, 4]`` training boxes in original pixels, clipped and non-empty.
        labels: ``int64 [M]`` contiguous labels in ``1..K``.
    """

    image_id: int
    path: Path
    height: int
    width: int
    boxes_xyxy: np.ndarray
    labels: np.ndarray


class RecordArrays(Sequence[ImageRecord]):
    """Image records serialized into a few flat numpy arrays.

    A list of :class:`ImageRecord` s is one Python object (with refcount) per record, array and
    path; a forked DataLoader worker that merely reads them writes their refcounts (and the
    garbage collector writes their headers), turning shared pages into private copies, so memory
    grows with the workers and over an epoch (the copy-on-read problem; detectron2 and
    mmdetection serialize their records for the same reason). Here a record is rebuilt on
    indexing from arrays that hold no Python objects, and stay shared.

    Attributes:
        image_ids: ``int64 [N]``.
        heights, widths: ``int32 [N]`` image sizes in pixels.
        box_offsets: ``int64 [N + 1]``: the boxes of record ``i`` are rows
            ``box_offsets[i]:box_offsets[i + 1]`` of ``boxes_xyxy`` and ``labels``.
        boxes_xyxy: ``float32 [B, 4]`` training boxes in original pixels; ``labels``: ``int64 [B]``.
        path_bytes, path_offsets: ``uint8`` UTF-8 of every path, and ``int64 [N + 1]`` offsets.

    Args:
        image_ids, heights, widths, paths: one per record.
        box_counts: ``[N]`` boxes of each record; ``boxes_xyxy`` and ``labels`` hold them record
            after record.
    """

    def __init__(
        self,
        *,
        image_ids: np.ndarray,
        heights: np.ndarray,
        widths: np.ndarray,
        box_counts: np.ndarray,
        boxes_xyxy: np.ndarray,
        labels: np.ndarray,
        paths: Sequence[str | Path],
    ) -> None:
        n = len(image_ids)
        if not (len(heights) == len(widths) == len(box_counts) == len(paths) == n):
            raise ValueError("image_ids, heights, widths, box_counts and paths need one entry per "
                             f"record, got {n}, {len(heights)}, {len(widths)}, "
                             f"{len(box_counts)}, {len(paths)}")
        self.image_ids = np.asarray(image_ids, np.int64)
        self.heights = np.asarray(heights, np.int32)
        self.widths = np.asarray(widths, np.int32)
        self.box_offsets = np.concatenate([[0], np.cumsum(box_counts, dtype=np.int64)])
        self.boxes_xyxy = np.ascontiguousarray(boxes_xyxy, np.float32).reshape(-1, 4)
        self.labels = np.ascontiguousarray(labels, np.int64).reshape(-1)
        if not len(self.boxes_xyxy) == len(self.labels) == self.box_offsets[-1]:
            raise ValueError(f"box_counts sum to {self.box_offsets[-1]} but there are "
                             f"{len(self.boxes_xyxy)} boxes and {len(self.labels)} labels")
        encoded = [str(path).encode("utf-8") for path in paths]
        self.path_offsets = np.concatenate(
            [[0], np.cumsum([len(e) for e in encoded], dtype=np.int64)])
        self.path_bytes = np.frombuffer(b"".join(encoded), np.uint8)

    @classmethod
    def from_records(cls, records: Sequence[ImageRecord]) -> RecordArrays:
        """Serialize :class:`ImageRecord` s (datasets small enough to build them one by one)."""
        return cls(
            image_ids=np.array([r.image_id for r in records], np.int64),
            heights=np.array([r.height for r in records], np.int32),
            widths=np.array([r.width for r in records], np.int32),
            box_counts=np.array([len(r.labels) for r in records], np.int64),
            boxes_xyxy=np.concatenate([np.empty((0, 4), np.float32)]
                                      + [r.boxes_xyxy.reshape(-1, 4) for r in records]),
            labels=np.concatenate([np.empty(0, np.int64)] + [r.labels for r in records]),
            paths=[r.path for r in records],
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> ImageRecord:  # type: ignore[override]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"record {index} out of range for {n} records")
        index %= n
        start, stop = self.box_offsets[index], self.box_offsets[index + 1]
        path = self.path_bytes[self.path_offsets[index]:self.path_offsets[index + 1]]
        return ImageRecord(int(self.image_ids[index]), Path(path.tobytes().decode("utf-8")),
                           int(self.heights[index]), int(self.widths[index]),
                           self.boxes_xyxy[start:stop], self.labels[start:stop])

    def box_counts(self) -> np.ndarray:
        """``int64 [N]`` training boxes per record."""
        return np.diff(self.box_offsets)


def original_scale(target: dict[str, Any]) -> Tensor:
    """``Tensor[4]`` that maps xyxy boxes from the transformed image (``input_size``) back to the
    file's pixels (``orig_size``): ``boxes_original = boxes_xyxy * original_scale(target)``."""
    in_h, in_w = target["input_size"]
    orig_h, orig_w = target["orig_size"]
    return torch.tensor([orig_w / in_w, orig_h / in_h] * 2)


def clip_boxes_xyxy(
    boxes_xyxy: np.ndarray, height: int | np.ndarray, width: int | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip boxes to the image and find the ones left empty.

    Args:
        boxes_xyxy: ``float [M, 4]`` boxes in pixels.
        height, width: image size, or ``[M, 1]`` sizes of each box's image.

    Returns:
        ``(clipped float32 [M, 4], keep bool [M], changed bool [M])``: ``keep`` is False for boxes
        with zero width or height after clipping (degenerate, inverted or outside the image);
        ``changed`` is True for kept boxes that clipping moved.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = keep & (clipped != boxes).any(axis=1)
    return clipped, keep, changed


def find_missing_files(paths: Sequence[Path], *, what: str, skip: bool) -> list[bool]:
    """Check image files exist at construction.

    Args:
        paths: image paths in item order.
        what: the dataset file or folder named in the error.
        skip: drop missing images (return their mask) instead of raising.

    Returns:
        ``exists`` per path.

    Raises:
        ValueError: naming the first few missing paths and how many, unless ``skip``.
    """
    exists = [p.is_file() for p in paths]
    missing = [str(p) for p, ok in zip(paths, exists, strict=True) if not ok]
    if missing and not skip:
        listed = ", ".join(missing[:_MAX_LISTED_PATHS])
        more = len(missing) - _MAX_LISTED_PATHS
        tail = f" ... and {more} more" if more > 0 else ""
        raise ValueError(
            f"{what}: {len(missing)} of {len(paths)} image files are missing: {listed}{tail} "
            "(pass skip_bad_images=True to drop them)"
        )
    return exists


# 16-bit grayscale modes (PNG, TIFF); Pillow's "I" (int32) also holds 16-bit PNG data.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# Modes Pillow converts to RGB without losing meaning (alpha and palette transparency are
# composited first, see _composite_on_white).
_PLAIN_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


def _sixteen_bit_to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    """16-bit grayscale ``0..65535`` to ``uint8 [H, W, 3]``: ``round(v / 257)`` maps 65535 to
    255 exactly (Pillow's own ``convert("RGB")`` clips at 255, turning the image white)."""
    values = np.asarray(image)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > 65535:
        raise UnreadableImageError(
            f"image {path} has mode {image.mode!r} with values {low}..{high}, outside the 16-bit "
            "range 0..65535; convert it to 8- or 16-bit"
        )
    gray = np.round(values.astype(np.float32) / 257.0).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _composite_on_white(image: Image.Image) -> np.ndarray:
    """Transparent pixels shown on white (as image viewers and browsers show them), so their
    hidden colour values do not leak into training: ``uint8 [H, W, 3]``."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:] / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def _to_rgb_array(image: Image.Image, path: Path) -> np.ndarray:
    """A decoded image of any supported mode as ``uint8 [H, W, 3]`` RGB."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image, path)
    if mode in _ALPHA_MODES or (mode in _PLAIN_MODES and "transparency" in image.info):
        return _composite_on_white(image)
    if mode in _PLAIN_MODES:
        return np.array(image.convert("RGB"))  # a writable copy
    supported = sorted(_SIXTEEN_BIT_MODES | _PLAIN_MODES | _ALPHA_MODES)
    raise UnreadableImageError(
        f"image {path} has mode {mode!r}, which has no defined 8-bit RGB conversion (e.g. 32-bit "
        f"float 'F' has no standard value range); supported modes: {supported}"
    )


def load_rgb(path: str | Path, size_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file to ``uint8 [H, W, 3]`` RGB: the one image reader of detkit.

    Modes: 8-bit RGB, grayscale (``L``, ``1``), palette, CMYK, YCbCr, LAB and HSV are converted
    by Pillow; 16-bit grayscale (``I;16*`` and ``I`` holding 0..65535) is scaled to 0..255;
    images with alpha (``LA``, ``RGBA``, ``PA``) or palette/tRNS transparency are composited on
    white. Other modes (``F``, 32-bit ``I`` beyond 16 bits) are rejected by name.

    Args:
        path: the image file.
        size_hw: the ``(height, width)`` an annotation records for it; None skips the check.

    Raises:
        UnreadableImageError: naming the path, when the file cannot be decoded, has an
            unsupported mode, or its size is not ``size_hw`` (the boxes would not fit it).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            array = _to_rgb_array(image, path)
    except UnreadableImageError:
        raise
    except (OSError, SyntaxError, ValueError) as error:  # PIL's decoders raise all three
        raise UnreadableImageError(f"cannot decode image {path}: {error}") from error
    if size_hw is not None and array.shape[:2] != tuple(size_hw):
        raise UnreadableImageError(
            f"image {path} is {array.shape[0]}x{array.shape[1]} (h x w) but its annotation "
            f"says {size_hw[0]}x{size_hw[1]}"
        )
    return array


def _to_chw_float(image: Any) -> Tensor:
    """A transform's output image as ``float32 [3, H, W]`` (numpy ``HxWx3`` is permuted)."""
    if isinstance(image, Tensor):
        return image.float()
    array = np.ascontiguousarray(image)
    if array.dtype == np.uint8:
        return torch.from_numpy(array).permute(2, 0, 1).float().div(255.0)
    return torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1)


class DetectionDataset(Dataset[tuple[Tensor, dict[str, Any]]]):
    """Base of the COCO and VOC datasets: turns :class:`ImageRecord` s into items.

    An item is ``(image, target)``: ``image: Tensor[3, H, W]`` float32 as the transform made it
    (with ``transforms=None``: the file's pixels scaled to ``[0, 1]``, not normalised);
    ``target`` has ``boxes_xyxy: Tensor[M, 4]`` float32 in the transformed image's pixels,
    ``labels: Tensor[M]`` int64 in ``1..K``, ``image_id: int``, ``orig_size: (h, w)`` of the file
    and ``input_size: (h, w)`` after the transform.

    Undecodable files: with ``skip_bad_images`` (and not ``verify_images``) the item at the next
    index (wrapping around) that decodes is returned instead, so ``ds[i]`` is deterministic - the
    right thing for training, where an item is a sample; the bad file is logged once and counted
    in ``stats["undecodable_images_skipped"]`` of the process that loaded it (a DataLoader
    worker's count stays in the worker). With ``verify_images`` every image was decoded at
    construction and the bad ones left out (items and ``coco_gt`` alike, counted in the
    constructing process - what evaluation needs); a file that fails later raises. Without
    ``skip_bad_images``: :class:`UnreadableImageError`.

    Subclasses set ``category_names``, ``label_to_category_id``, ``stats`` and
    ``_coco_gt_dataset`` (the dict ``coco_gt`` is built from, lazily; None: no ``coco_gt``) and
    call ``_init_records`` with the records, serialized (:class:`RecordArrays`) if not yet.
    ``source`` names the annotation file or folder in messages.
    """

    category_names: list[str]
    label_to_category_id: list[int]
    stats: dict[str, int]
    _coco_gt_dataset: dict[str, Any] | None

    def _init_records(
        self,
        records: RecordArrays | Sequence[ImageRecord],
        transforms: Transform | None,
        *,
        skip_bad_images: bool,
        verify_images: bool,
        source: str | Path,
    ) -> None:
        if not isinstance(records, RecordArrays):
            records = RecordArrays.from_records(records)
        self.records = records
        self.transforms = transforms
        self.skip_bad_images = skip_bad_images
        self.verify_images = verify_images
        self.source = str(source)
        self._bad_indices: set[int] = set()

    @property
    def image_ids(self) -> list[int]:
        """``coco_gt`` image id of each item, in item order."""
        return self.records.image_ids.tolist()

    @cached_property
    def coco_gt(self) -> COCO:
        """pycocotools ``COCO`` with the original annotations, for evaluation (built by
        ``detkit.eval.build_coco_gt``, the one COCO ground-truth builder).

        Raises:
            RuntimeError: the dataset was built without its ground truth (a training set).
        """
        dataset = self._coco_gt_dataset
        if dataset is None:
            raise RuntimeError(
                f"{type(self).__name__}({self.source}) was built with keep_coco_gt=False (as "
                "training sets are, to stay lean), so it has no coco_gt; build it with "
                "keep_coco_gt=True to evaluate on it")
        return build_coco_gt(dataset["images"], dataset["annotations"], dataset["categories"],
                             info=dataset.get("info"), licenses=dataset.get("licenses"))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        index %= n
        for offset in range(n):
            candidate = (index + offset) % n
            if candidate in self._bad_indices:
                continue
            record = self.records[candidate]
            try:
                image = load_rgb(record.path, (record.height, record.width))
            except UnreadableImageError as error:
                if not self.skip_bad_images or self.verify_images:
                    raise
                self._bad_indices.add(candidate)
                self.stats["undecodable_images_skipped"] += 1
                logger.warning("%s; skipped, serving the next image instead", error)
                continue
            return self._make_item(record, image)
        raise UnreadableImageError(f"none of the {n} images of this dataset can be decoded")

    def _make_item(self, record: ImageRecord, image: np.ndarray) -> tuple[Tensor, dict[str, Any]]:
        if self.transforms is None:
            out = {"image": image, "bboxes": record.boxes_xyxy, "labels": record.labels}
        else:
            out = self.transforms(
                image=image, bboxes=record.boxes_xyxy.copy(), labels=record.labels.copy()
            )
        tensor = _to_chw_float(out["image"])
        target = {
            "boxes_xyxy": torch.as_tensor(np.asarray(out["bboxes"], np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], np.int64).reshape(-1)),
            "image_id": record.image_id,
            "orig_size": (record.height, record.width),
            "input_size": (int(tensor.shape[-2]), int(tensor.shape[-1])),
        }
        return tensor, target

    def _log_stats(self) -> None:
        """Log the construction counts once: at WARNING when anything was clipped, dropped or
        skipped (so it is shown without logging set up), else at INFO."""
        summary = ", ".join(f"{key}={value}" for key, value in self.stats.items())
        notable = any(v for k, v in self.stats.items() if k not in _INFORMATIONAL_STATS)
        message = f"{type(self).__name__}({self.source}): {summary}"
        if self.stats.get("boxes_dropped_empty"):
            message += (f". The {self.stats['boxes_dropped_empty']} empty boxes (no width or "
                        "height inside the image) are left out of the training targets but stay "
                        "in the evaluated ground truth (coco_gt), as the file defines them")
        logger.log(logging.WARNING if notable else logging.INFO, message)


# Counts that describe a dataset without anything having been changed or left out.
_INFORMATIONAL_STATS = frozenset({"images", "annotations", "images_without_boxes",
                                  "crowd_excluded", "difficult_excluded"})


def decodes(path: Path, size_hw: tuple[int, int], *, skip: bool) -> bool:
    """Decode one image at construction (``verify_images``).

    Returns:
        True when it decodes to ``size_hw``; False (logged at WARNING, naming the file) when it
        does not and ``skip``.

    Raises:
        UnreadableImageError: when it does not decode and not ``skip``.
    """
    try:
        load_rgb(path, size_hw)
    except UnreadableImageError as error:
        if not skip:
            raise
        logger.warning("%s; left out of this dataset", error)
        return False
    return True


def collate(
    batch: Sequence[tuple[Tensor, dict[str, Any]]],
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """DataLoader ``collate_fn``: images keep their own sizes (the model pads them).

    Returns:
        ``(images, targets)``: ``list[Tensor[3, H_i, W_i]]`` and the matching target dicts.
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
