"""Detection on one's own images: the :class:`Detector` API and what ``tools/predict.py`` runs.

A checkpoint is all prediction needs: it holds the model settings and weights, the class names
(``hyper_parameters["category_names"]``, when training stored them) and the validation resize
(``datamodule_hyper_parameters["min_size"/"max_size"]``). Images go through the SAME evaluation
transform as validation (:func:`detkit.data.eval_transforms`: shorter side to ``min_size``, longer
at most ``max_size``, ImageNet normalisation), and boxes are mapped back to the ORIGINAL image's
pixels (``boxes_original = boxes_input * original_scale``, as validation does).
"""

from __future__ import annotations

import glob
import inspect
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from tqdm import tqdm

from detkit.data import IMAGENET_MEAN, IMAGENET_STD, eval_transforms, original_scale
from detkit.data.base import load_rgb
from detkit.data.datamodule import DetectionDataModule
from detkit.engine.cli import load_module, read_checkpoint
from detkit.engine.drawing import draw_detections, save_png
from detkit.eval import to_coco_results
from detkit.models import FasterRCNN

ImageInput = str | os.PathLike | np.ndarray | Tensor
"""A file path, a ``uint8 [H, W, 3]`` RGB array, or a ``float Tensor[3, H, W]`` in ``[0, 1]``."""

# what a folder given to tools/predict.py contributes (other files are counted, not read)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ------------------------------------------------------------------------ checkpoint settings
@dataclass(frozen=True)
class CheckpointSettings:
    """What prediction needs from a checkpoint besides the weights.

    Attributes:
        category_names: ``[label - 1]`` name of each of the K classes.
        min_size, max_size: the evaluation resize (see :func:`detkit.data.eval_transforms`).
        notes: the fallbacks and overrides used, in words, for the user to see.
    """

    category_names: list[str]
    min_size: int
    max_size: int
    notes: tuple[str, ...] = ()


def checkpoint_settings(
    checkpoint: dict[str, Any], *, min_size: int | None = None, max_size: int | None = None,
    run_config: str | os.PathLike | None = None,
) -> CheckpointSettings:
    """Class names and resize of a loaded checkpoint dict; ``min_size``/``max_size`` override.

    Checkpoints made before the names or the resize were stored fall back to ``class1..classK``
    and to the ``data`` section of ``run_config`` (the resolved config training saved beside its
    ``checkpoints/`` folder), or, without it, to :class:`~detkit.data.DetectionDataModule`'s
    defaults; ``notes`` says which.

    Raises:
        ValueError: the stored class names do not match the class count.
    """
    hparams = checkpoint["hyper_parameters"]
    num_classes = int(hparams["num_classes"])
    notes: list[str] = []
    names = hparams.get("category_names")
    if names is None:
        names = [f"class{label}" for label in range(1, num_classes + 1)]
        notes.append(f"the checkpoint stores no class names; calling its {num_classes} classes "
                     f"class1..class{num_classes}")
    elif len(names) != num_classes:
        raise ValueError(f"the checkpoint stores {len(names)} class names {list(names)} for "
                         f"{num_classes} classes")
    stored, source = checkpoint.get("datamodule_hyper_parameters", {}), "the checkpoint"
    if min_size is None or max_size is None:
        if not {"min_size", "max_size"} <= set(stored):
            stored, source = _resize_from_config(run_config)
            notes.append(f"the checkpoint does not record the training resize; using {source}'s "
                         "(pass --min_size/--max_size to match your training config)")
    sizes = {"min_size": min_size, "max_size": max_size}
    for key, given in sizes.items():
        trained = stored.get(key)
        if given is None:
            sizes[key] = int(trained)
        elif trained is not None and trained != given:
            notes.append(f"resizing with {key}={given}; validation in training used {trained}")
    return CheckpointSettings(list(names), sizes["min_size"], sizes["max_size"], tuple(notes))


def _resize_from_config(run_config: str | os.PathLike | None) -> tuple[dict[str, int], str]:
    """``({"min_size", "max_size"}, where from)``: a run's saved config, else the defaults."""
    if run_config is not None and Path(run_config).is_file():
        data = (yaml.safe_load(Path(run_config).read_text()) or {}).get("data") or {}
        if {"min_size", "max_size"} <= set(data):
            return {key: int(data[key]) for key in ("min_size", "max_size")}, str(run_config)
    # defaults live in the constructor signature only (DESIGN.md)
    parameters = inspect.signature(DetectionDataModule).parameters
    return ({key: parameters[key].default for key in ("min_size", "max_size")},
            "the data module's defaults")


# ----------------------------------------------------------------------------- the API
@dataclass
class Detections:
    """One image's detections, by decreasing score.

    Attributes:
        boxes_xyxy: ``float32 Tensor[N, 4]`` in the ORIGINAL image's pixels (on the CPU).
        scores: ``float32 Tensor[N]``.
        labels: ``int64 Tensor[N]`` in ``1..K`` (0 is background, never returned).
        names: ``list[str]`` of N class names.
        image_size: ``(height, width)`` of the original image.
    """

    boxes_xyxy: Tensor
    scores: Tensor
    labels: Tensor
    names: list[str]
    image_size: tuple[int, int]


@dataclass
class _Prediction:
    """Detections plus what the model saw: ``model_input`` (``Tensor[3, h, w]`` resized and
    normalised) and ``model_output`` (the model's dict, boxes in ``model_input`` pixels)."""

    detections: Detections
    model_input: Tensor
    model_output: dict[str, Tensor]


class Detector:
    """A trained detector that takes images as they come and gives boxes in their own pixels.

    Example (a checkpoint from ``tools/train.py --config configs/quickstart.yaml``):

    >>> import numpy as np
    >>> from detkit import Detector
    >>> detector = Detector.from_checkpoint("runs/quickstart/roi_align/v0/checkpoints/best.ckpt",
    ...                                 device="cpu")
    >>> array = np.zeros((240, 320, 3), dtype=np.uint8)  # or a Tensor[3, H, W] in [0, 1]
    >>> results = detector.predict(["photo.jpg", array], score_thresh=0.05)
    >>> len(results), results[1].image_size
    (2, (240, 320))
    >>> first = results[0]  # photo.jpg's boxes, scores, labels and names, by decreasing score
    >>> height, width = first.image_size
    >>> all(0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
    ...     for x1, y1, x2, y2 in first.boxes_xyxy.tolist())
    True
    >>> bool((first.scores >= 0.05).all()), set(first.names) <= set(detector.category_names)
    (True, True)

    Args:
        model: a detkit Faster R-CNN (put in eval mode and moved to ``device``).
        category_names: ``[label - 1]`` name of each class.
        min_size, max_size: the evaluation resize, as in training's validation.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        notes: fallbacks used to build it, in words (see :func:`checkpoint_settings`).
    """

    def __init__(
        self, model: FasterRCNN, category_names: Sequence[str], *, min_size: int, max_size: int,
        device: str | torch.device = "cpu", notes: Sequence[str] = (),
    ) -> None:
        self.device = _check_device(device)
        self.model = model.eval().to(self.device)
        self.category_names = list(category_names)
        self.min_size, self.max_size = min_size, max_size
        self.transform = eval_transforms(min_size, max_size)
        self.notes = list(notes)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", *,
        min_size: int | None = None, max_size: int | None = None,
    ) -> Detector:
        """Load a ``tools/train.py`` checkpoint; ``min_size``/``max_size`` override its resize."""
        _check_device(device)
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        checkpoint = read_checkpoint(path)  # read once; a file of another kind is named
        # runs/NAME/checkpoints/x.ckpt -> runs/NAME/config.yaml (LightningCLI saves it there)
        settings = checkpoint_settings(checkpoint, min_size=min_size, max_size=max_size,
                                       run_config=Path(path).parent.parent / "config.yaml")
        return cls(load_module(path, checkpoint).model, settings.category_names,
                   min_size=settings.min_size, max_size=settings.max_size, device=device,
                   notes=settings.notes)

    def predict(
        self, images: ImageInput | Sequence[ImageInput], *, score_thresh: float = 0.0,
        batch_size: int = 1,
    ) -> list[Detections]:
        """Detect objects on each image.

        Args:
            images: one image or a sequence of them: file paths (any format the data layer
                reads), ``uint8 ndarray[H, W, 3]`` RGB, or ``float Tensor[3, H, W]`` in
                ``[0, 1]`` (quantised to 8 bits, as a file would be, so all three take the
                validation transform's path).
            score_thresh: keep detections scoring at least this (the model's own
                ``roi_head.score_thresh`` applies first).
            batch_size: images per forward pass. Images in a batch are padded to a common size
                and the backbone's GroupNorm statistics see the padding, so results can differ
                slightly with the batch; 1 gives every image the same result wherever it is.

        Returns:
            One :class:`Detections` per image, in order (a list even for one image).
        """
        if isinstance(images, (str, os.PathLike, np.ndarray, Tensor)):
            images = [images]
        return [p.detections for p in self._predict(list(images), score_thresh, batch_size)]

    def _predict(
        self, images: list[ImageInput], score_thresh: float, batch_size: int
    ) -> list[_Prediction]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        predictions = []
        for start in range(0, len(images), batch_size):
            arrays = [as_rgb_array(image, index=start + i)
                      for i, image in enumerate(images[start : start + batch_size])]
            inputs = [self.transform(image=a, bboxes=np.zeros((0, 4), np.float32),
                                     labels=np.zeros(0, np.int64))["image"].float()
                      for a in arrays]
            with torch.no_grad():
                outputs = self.model([x.to(self.device) for x in inputs])
            for array, x, output in zip(arrays, inputs, outputs, strict=True):
                output = {key: value.cpu() for key, value in output.items()}
                predictions.append(_Prediction(
                    self._detections(array.shape[:2], x.shape[-2:], output, score_thresh), x,
                    output))
        return predictions

    def _detections(
        self, orig_hw: tuple[int, ...], input_hw: tuple[int, ...], output: dict[str, Tensor],
        score_thresh: float,
    ) -> Detections:
        keep = output["scores"] >= score_thresh
        scale = original_scale({"orig_size": tuple(orig_hw), "input_size": tuple(input_hw)})
        labels = output["labels"][keep]
        return Detections(
            boxes_xyxy=output["boxes_xyxy"][keep].float() * scale,
            scores=output["scores"][keep].float(), labels=labels,
            names=[self.category_names[int(label) - 1] for label in labels],
            image_size=(int(orig_hw[0]), int(orig_hw[1])))


def _check_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here; "
                         "use device='cpu'")
    return device


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``uint8 [H, W, 3]`` RGB, through the data layer's reader.

    Raises:
        FileNotFoundError: no such file.
        UnreadableImageError: the file cannot be decoded (the path is named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return load_rgb(path)


def as_rgb_array(image: ImageInput, *, index: int = 0) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB from a path, such an array, or a ``float Tensor[3, H, W]`` in
    ``[0, 1]``; anything else is an error naming the image's ``index`` and what was wrong."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {index}: an array must be uint8 [H, W, 3] RGB, got "
                             f"{image.dtype} {list(image.shape)}")
        return np.ascontiguousarray(image)
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(f"image {index}: a tensor must be float [3, H, W] in [0, 1], got "
                             f"{image.dtype} {list(image.shape)}")
        low, high = float(image.min()), float(image.max())
        if not 0.0 <= low <= high <= 1.0:  # NaN fails too
            raise ValueError(f"image {index}: tensor values must lie in [0, 1], got "
                             f"[{low}, {high}]")
        pixels = (image.detach().float().cpu() * 255).round().to(torch.uint8)
        return pixels.permute(1, 2, 0).contiguous().numpy()
    raise TypeError(f"image {index}: expected a path, a uint8 ndarray [H, W, 3] or a float "
                    f"Tensor[3, H, W], got {type(image).__name__}")


# ------------------------------------------------------------------ files (tools/predict.py)
@dataclass
class PredictionRun:
    """What :func:`predict_files` did.

    Attributes:
        images: images read and predicted.
        detections: detections written (at or above the score threshold).
        without_detections: images read on which no detection reached the threshold.
        unreadable: ``(file name, reason)`` of each file that could not be read.
        written: files written (``detections.json`` first, then the PNGs).
    """

    images: int = 0
    detections: int = 0
    without_detections: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


def find_images(spec: str) -> tuple[list[tuple[Path, str]], int]:
    """Image files named by ``spec``: a folder (its files with an image suffix, sorted, not
    recursive), a glob pattern (every file it matches; ``**`` recurses) or one file.

    Returns:
        ``([(path, file_name)], ignored)``: ``file_name`` is the name written to
        ``detections.json`` (relative to the folder, else the path as matched); ``ignored``
        counts the folder's files without an image suffix.

    Raises:
        FileNotFoundError: nothing matches.
    """
    path = Path(spec)
    ignored = 0
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        found = [(p, p.name) for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        ignored = len(files) - len(found)
    elif path.is_file():
        found = [(path, spec)]
    else:
        found = [(Path(p), p) for p in sorted(glob.glob(spec, recursive=True))
                 if Path(p).is_file()]
    if not found:
        what = "a folder without image files" if path.is_dir() else "no file matches"
        raise FileNotFoundError(f"no images found at {spec!r} ({what}; image suffixes: "
                                f"{', '.join(IMAGE_SUFFIXES)})")
    return found, ignored


def predict_files(
    detector: Detector, files: Sequence[tuple[Path, str]], out: str | os.PathLike, *,
    score_thresh: float = 0.3, batch_size: int = 1, offsets: bool = False, progress: bool = True,
) -> PredictionRun:
    """Predict on image files; write ``out/detections.json`` and a drawing per image.

    ``detections.json`` is a COCO results list with two more keys: ``{"image_id": 1-based
    position in files, "file_name", "category_id": model label 1..K, "category_name",
    "bbox": [x, y, w, h] original pixels, "score"}``. ``out/<stem>.png`` shows the image with its
    labelled boxes; with ``offsets`` (deformable extractors), ``out/<stem>_offsets.png`` the
    learned bins of the top detections. Unreadable files are skipped and listed in the result.

    Raises:
        ValueError: ``offsets`` with an extractor that learns none.
    """
    out = Path(out)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if offsets:
        from detkit.engine.offsets import check_moves_bins

        check_moves_bins(detector.model)
    out.mkdir(parents=True, exist_ok=True)
    run, results = PredictionRun(), []
    stems = _unique_stems([path for path, _ in files])
    bar = tqdm(total=len(files), unit="image", desc="predict", disable=not progress,
               file=sys.stderr)
    for start in range(0, len(files), batch_size):
        arrays, indices = [], []
        for index in range(start, min(start + batch_size, len(files))):
            try:
                arrays.append(read_image(files[index][0]))
                indices.append(index)
            except OSError as error:  # UnreadableImageError and file-system errors
                run.unreadable.append((files[index][1], str(error)))
        for index, array, prediction in zip(
                indices, arrays, detector._predict(arrays, score_thresh, batch_size), strict=True):
            name, found = files[index][1], prediction.detections
            run.without_detections += len(found.scores) == 0
            results += _coco_results(index + 1, name, found, len(detector.category_names))
            run.written.append(save_png(_drawing(array, found, detector.category_names),
                                        out / f"{stems[index]}.png"))
            if offsets:
                figure = _offsets_drawing(detector.model, prediction, score_thresh)
                if figure is not None:
                    run.written.append(save_png(figure, out / f"{stems[index]}_offsets.png"))
        run.images += len(arrays)
        bar.update(min(batch_size, len(files) - start))
    bar.close()
    run.detections = len(results)
    (out / "detections.json").write_text(json.dumps(results))
    run.written.insert(0, out / "detections.json")
    return run


def _coco_results(image_id: int, file_name: str, found: Detections, num_classes: int
                  ) -> list[dict]:
    # no dataset category ids here: category_id is the model's label (identity map)
    results = to_coco_results(image_id, found.boxes_xyxy, found.scores, found.labels,
                              range(num_classes + 1))
    for result, name in zip(results, found.names, strict=True):
        result.update(file_name=file_name, category_name=name)
    return results


def _drawing(array: np.ndarray, found: Detections, category_names: list[str]) -> Tensor:
    """The original image with its labelled boxes, as ``uint8 Tensor[3, H, W]``."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    normalised = (torch.from_numpy(array).permute(2, 0, 1).float() / 255 - mean) / std
    output = {"boxes_xyxy": found.boxes_xyxy, "scores": found.scores, "labels": found.labels}
    # score_thresh -inf: `found` is already thresholded
    return draw_detections(normalised, {"boxes_xyxy": torch.zeros(0, 4)}, output,
                           category_names, float("-inf"))


def _offsets_drawing(model: FasterRCNN, prediction: _Prediction, score_thresh: float
                     ) -> Tensor | None:
    from detkit.engine.offsets import offsets_figure

    return offsets_figure(model, prediction.model_input, prediction.model_output,
                          score_thresh=score_thresh)


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    """File stems for the drawings, one per path, relative to the folder all paths share
    (``sub/b.jpg`` -> ``sub_b``); a repeated stem gets ``-2``, ``-3``..."""
    folders = [str(Path(p).resolve().parent) for p in paths]
    common = Path(os.path.commonpath(folders)) if folders else Path()
    stems: list[str] = []
    used: set[str] = set()
    for path in paths:
        relative = Path(path).resolve().relative_to(common).with_suffix("")
        stem = candidate = "_".join(relative.parts).lstrip(".") or "image"
        repeat = 1
        while candidate in used:
            repeat += 1
            candidate = f"{stem}-{repeat}"
        stems.append(candidate)
        used.add(candidate)
    return stems


def run_prediction(
    ckpt: str, images: str, out: str, *, score_thresh: float = 0.3, batch_size: int = 1,
    device: str | None = None, min_size: int | None = None, max_size: int | None = None,
    offsets: bool = False, progress: bool = True,
) -> PredictionRun:
    """``tools/predict.py``: find the images, load the checkpoint, predict, print a summary.
    ``device`` None picks CUDA when there is one."""
    files, ignored = find_images(images)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    detector = Detector.from_checkpoint(ckpt, device=device, min_size=min_size,
                                        max_size=max_size)
    for note in detector.notes:
        print(f"note: {note}")
    if ignored:
        print(f"note: {ignored} file(s) in {images} have no image suffix and were not read")
    print(f"predicting on {len(files)} image(s) on {device}, resized as in validation "
          f"(min_size={detector.min_size}, max_size={detector.max_size})")
    run = predict_files(detector, files, out, score_thresh=score_thresh, batch_size=batch_size,
                        offsets=offsets, progress=progress)
    print(f"{run.detections} detection(s) scoring >= {score_thresh} on {run.images} image(s): "
          f"{run.written[0]}; {len(run.written) - 1} drawing(s) in {out}")
    if run.without_detections:
        print(f"{run.without_detections} of {run.images} image(s) have no detection scoring >= "
              f"{score_thresh} (lower --score_thresh to see weaker ones)")
    if run.unreadable:
        print(f"{len(run.unreadable)} unreadable file(s), skipped:")
        for name, reason in run.unreadable:
            print(f"  {name}: {reason}")
    return run
