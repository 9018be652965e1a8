"""Dataset files and statistics: splits written as JPEGs + COCO JSON under a root, reused when
the same spec is asked for again, and per-split counts."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from detkit.data.synthetic.factors import factor_settings
from detkit.data.synthetic.scenes import render_image
from detkit.data.synthetic.spec import (
    CATEGORY_NAMES,
    SIZE_BUCKETS,
    SPLITS,
    SyntheticSpec,
    image_id,
    size_bucket,
)

logger = logging.getLogger(__name__)

# Bump when the generator changes what a spec produces, so old sets are not reused silently.
FORMAT_VERSION = 1
SPEC_FILE = "spec.json"


def _categories() -> list[dict[str, Any]]:
    return [{"id": i, "name": name, "supercategory": "shape"}
            for i, name in enumerate(CATEGORY_NAMES, start=1)]


def _render_to_file(job: tuple[SyntheticSpec, str, int, Path]) -> list[dict[str, Any]]:
    """Render image ``index`` of ``split``, write its JPEG and return its annotations (runs in
    worker processes: each image draws from its own generator, so any split of the work gives
    the same files)."""
    spec, split, index, images_dir = job
    pixels, image_annotations = render_image(spec, split, index)
    Image.fromarray(pixels).save(images_dir / f"{index:06d}.jpg", quality=spec.jpeg_quality)
    return image_annotations


# Below this many images, starting the worker processes costs more than it saves.
_PARALLEL_FROM = 64


def generate_split(
    spec: SyntheticSpec, split: str, images_dir: str | Path, *, progress: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """Render every image of ``split``, write them as ``images_dir/NNNNNN.jpg`` and return the
    COCO dict (``info``, ``images``, ``annotations``, ``categories``).

    Annotation ids run from 1 within the split; image ids are unique across splits
    (:func:`image_id`). ``progress`` shows a progress bar on stderr. ``workers``: processes
    rendering in parallel (None: one per CPU; 1: this process). The files are the same for
    any number of workers.
    """
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    count = spec.num_images(split)
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    jobs = [(spec, split, index, images_dir) for index in range(count)]
    bar = {"desc": f"synthetic {split}", "unit": "img", "file": sys.stderr,
           "disable": not progress, "leave": True, "total": count}
    if workers > 1 and count >= _PARALLEL_FROM:
        # the platform's default start method, as torch's DataLoader workers use
        with multiprocessing.get_context().Pool(workers) as pool:
            rendered = list(tqdm(pool.imap(_render_to_file, jobs, chunksize=8), **bar))
    else:
        rendered = [_render_to_file(job) for job in tqdm(jobs, **bar)]
    images, annotations = [], []
    for index, image_annotations in enumerate(rendered):
        images.append({"id": image_id(split, index), "file_name": f"{index:06d}.jpg",
                       "width": spec.image_size, "height": spec.image_size})
        for annotation in image_annotations:
            annotations.append({"id": len(annotations) + 1, "image_id": images[-1]["id"],
                                **annotation})
    info = {"description": f"detkit synthetic shapes, {split} split", **_spec_record(spec)}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations,
            "categories": _categories()}


def dataset_paths(root: str | Path) -> dict[str, str]:
    """``{"<split>_images": folder, "<split>_ann": COCO JSON}`` of a set under ``root``."""
    root = Path(root)
    paths = {}
    for split in SPLITS:
        paths[f"{split}_images"] = str(root / split)
        paths[f"{split}_ann"] = str(root / "annotations" / f"instances_{split}.json")
    return paths


def _spec_record(spec: SyntheticSpec) -> dict[str, Any]:
    """What ``spec.json`` and the annotation files' ``info`` record: the format version, the
    spec and its factors' setting names (:func:`~detkit.data.synthetic.factors.
    factor_settings`)."""
    return {"format_version": FORMAT_VERSION, "spec": spec.record(),
            "factors": factor_settings(spec.scene)}


def _read_spec_record(root: Path) -> dict[str, Any] | None:
    """The ``spec.json`` record of a complete set under ``root``, or None where there is none."""
    spec_file = root / SPEC_FILE
    if not spec_file.is_file():
        return None
    try:
        record = json.loads(spec_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{spec_file}: unreadable ({error}); remove {root} to regenerate"
                         ) from None
    missing = [p for p in dataset_paths(root).values() if not Path(p).exists()]
    if missing:
        raise ValueError(f"{root} holds {SPEC_FILE} but not {missing}: an incomplete or edited "
                         f"synthetic set; remove {root} to regenerate")
    return record


def _write_set(directory: Path, spec: SyntheticSpec, progress: bool) -> None:
    """Generate every split into ``directory``; ``spec.json`` last (it marks completeness)."""
    paths = dataset_paths(directory)
    Path(paths["train_ann"]).parent.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        start = time.perf_counter()
        coco = generate_split(spec, split, paths[f"{split}_images"], progress=progress)
        with open(paths[f"{split}_ann"], "w", encoding="utf-8") as f:
            json.dump(coco, f)
        logger.info("synthetic %s: %d images, %d objects in %.1f s", split, len(coco["images"]),
                    len(coco["annotations"]), time.perf_counter() - start)
    (directory / SPEC_FILE).write_text(json.dumps(_spec_record(spec), indent=2) + "\n",
                                       encoding="utf-8")


def _generate(root: Path, spec: SyntheticSpec, progress: bool) -> None:
    """Generate into a hidden sibling of ``root``, then rename it to ``root``: a killed run
    leaves only the sibling (``.NAME.partial-*``), never a set that looks complete."""
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        _write_set(partial, spec, progress)
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        os.replace(partial, root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def ensure_dataset(
    root: str | Path, spec: SyntheticSpec | None = None, *, progress: bool = True,
    reuse_any: bool = False,
) -> dict[str, str]:
    """Generate the synthetic COCO-format set under ``root`` unless it is already there.

    Layout: ``root/{train,val,test}/NNNNNN.jpg``, ``root/annotations/instances_{split}.json``
    and ``root/spec.json`` (the spec and :data:`FORMAT_VERSION`).

    Args:
        root: the set's folder; it must not exist, be empty, or hold a complete set.
        spec: what to generate; None means the default :class:`SyntheticSpec` (the ``hard``
            preset's numbers) with ``reuse_any``.
        reuse_any: accept any complete set of this :data:`FORMAT_VERSION` that ``root``
            already holds (so a set made by ``tools/make_dataset.py`` with other settings is
            used as is); ``spec`` is only what a new set gets.
        progress: when generating, say on stderr where the set goes, show a progress bar per
            split and the time taken (False: log at INFO only).

    Returns:
        COCO paths ``{"train_images", "train_ann", "val_images", "val_ann", "test_images",
        "test_ann"}`` (str).

    Raises:
        ValueError: ``root`` holds a set of another spec or format version (both named), an
            incomplete set, or other files: nothing is overwritten.
    """
    root = Path(root)
    reuse_any = reuse_any or spec is None
    spec = spec if spec is not None else SyntheticSpec()
    wanted = _spec_record(spec)
    found = _read_spec_record(root)
    if found is not None:
        other_version = found.get("format_version") != FORMAT_VERSION
        if other_version or (not reuse_any and found != wanted):
            raise ValueError(f"{root} holds a synthetic set generated from {found}, not the "
                             f"requested {wanted}; choose another root or remove {root}")
        logger.info("synthetic set found at %s (%s), reusing it", root, found)
        return dataset_paths(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not a synthetic set (no {SPEC_FILE}); choose an "
                         "empty or new folder for the synthetic set")
    total = sum(spec.num_images(split) for split in SPLITS)
    _say(f"generating the synthetic set ({total} images) into {root.resolve()}", progress)
    start = time.perf_counter()
    _generate(root, spec, progress)
    _say(f"synthetic set written to {root} in {time.perf_counter() - start:.1f} s", progress)
    return dataset_paths(root)


def _say(message: str, on_stderr: bool) -> None:
    """A one-line status: on stderr (shown without any logging set up), or logged at INFO."""
    if on_stderr:
        print(message, file=sys.stderr, flush=True)
    else:
        logger.info(message)


def dataset_statistics(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per split: ``factors`` (each factor's setting name, from the annotation file's
    ``info``; {} for files without), ``images``, ``objects``, ``images_without_objects``,
    ``per_bucket`` (COCO size bucket of the annotation ``area``) and ``per_class`` (by
    category name) counts, read from the annotation files of :func:`ensure_dataset`'s
    ``paths``."""
    statistics = {}
    for split in SPLITS:
        if f"{split}_ann" not in paths:
            continue
        coco = json.loads(Path(paths[f"{split}_ann"]).read_text(encoding="utf-8"))
        names = {c["id"]: c["name"] for c in coco["categories"]}
        annotations = coco["annotations"]
        per_bucket = dict.fromkeys(SIZE_BUCKETS, 0)
        per_class = dict.fromkeys(names.values(), 0)
        for annotation in annotations:
            per_bucket[size_bucket(annotation["area"])] += 1
            per_class[names[annotation["category_id"]]] += 1
        with_objects = {annotation["image_id"] for annotation in annotations}
        statistics[split] = {
            "factors": coco.get("info", {}).get("factors", {}),
            "images": len(coco["images"]), "objects": len(annotations),
            "images_without_objects": len(coco["images"]) - len(with_objects),
            "per_bucket": per_bucket, "per_class": per_class,
        }
    return statistics


def format_statistics(statistics: dict[str, dict[str, Any]]) -> str:
    """:func:`dataset_statistics` as a small text table (counts and bucket shares)."""
    lines = []
    factors = next((stats["factors"] for stats in statistics.values() if stats["factors"]), {})
    if factors:
        lines.append("factors: " + ", ".join(f"{name} {value}" for name, value in factors.items()))
    for split, stats in statistics.items():
        total = max(stats["objects"], 1)
        buckets = ", ".join(f"{name} {count} ({100 * count / total:.0f}%)"
                            for name, count in stats["per_bucket"].items())
        classes = ", ".join(f"{name} {count}" for name, count in stats["per_class"].items())
        lines.append(f"{split}: {stats['images']} images ({stats['images_without_objects']} "
                     f"without objects), {stats['objects']} objects")
        lines.append(f"  per size bucket: {buckets}")
        lines.append(f"  per class: {classes}")
    return "\n".join(lines)
