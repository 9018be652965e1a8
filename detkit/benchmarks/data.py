"""Loading a training set of COCO train2017's size: build time and memory, old path against new.

An annotation file of train2017's shape is generated (no download; cached under ``work_dir``):
118,287 images with train2017's keys and URLs, 860,001 annotations with polygons (about 22
points each, so the file is about as big as train2017's 389 MB; 1% crowd with RLE counts),
80 categories with COCO's ids, and an empty file per image (the loaders check that files exist;
no image is decoded). ``scale`` shrinks the image and annotation counts.

Each loader builds the dataset in a fresh spawned process, which reports the build time, its
resident memory (``VmRSS``) after the build and its peak (``VmHWM``). The old path is
:class:`ReferenceCocoDetection`, the ``CocoDetection`` of commit 4f80035 kept here (full
``json.load``, every annotation dict completed and kept for ``coco_gt``, one ``ImageRecord``
object per image). Then 4 forked DataLoader workers iterate the records for one epoch in random
order while the parent samples each worker's USS (private pages) and PSS from
``/proc/<pid>/smaps_rollup``: memory that grows there is shared pages turned private by
refcount and garbage-collector writes (copy-on-read).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detkit.benchmarks.eval import COCO_CATEGORY_IDS
from detkit.data.base import ImageRecord, clip_boxes_xyxy, find_missing_files
from detkit.data.coco import (
    CocoDetection,
    _check_annotation,
    _check_categories,
    _check_images,
    _entry,
    _read_json,
)
from detkit.eval import complete_annotations

# COCO train2017 (instances_train2017.json).
TRAIN2017_IMAGES = 118_287
TRAIN2017_ANNOTATIONS = 860_001


@dataclass(frozen=True)
class DataBenchConfig:
    """Settings of :func:`run_data_benchmark`.

    Attributes:
        scale: fraction of train2017's image and annotation counts.
        work_dir: where the generated annotation file and empty image files are kept (reused).
        workers: DataLoader workers of the epoch.
        batch_size: records per worker batch.
        samples: how many times over the epoch the workers' memory is read.
        reference_workers: also run the epoch on the old path's dataset (at full scale it holds
            ~5 GB, which the workers may copy).
        seed: of the generated data and the epoch order.
    """

    scale: float = 1.0
    work_dir: str = "/tmp/detkit_benchmark_data"
    workers: int = 4
    batch_size: int = 64
    samples: int = 8
    reference_workers: bool = True
    seed: int = 0


# ------------------------------------------------------------------------------ generated data
def _polygon(gen: np.random.Generator, xywh: np.ndarray, points: int) -> list[float]:
    """A star-shaped polygon inside the box, as COCO writes it (2 decimals)."""
    angles = np.sort(gen.uniform(0, 2 * np.pi, points))
    radius = gen.uniform(0.6, 1.0, points)
    x = xywh[0] + xywh[2] * (0.5 + 0.5 * radius * np.cos(angles))
    y = xywh[1] + xywh[3] * (0.5 + 0.5 * radius * np.sin(angles))
    return np.round(np.stack([x, y], 1).reshape(-1), 2).tolist()


def _image_entry(image_id: int, gen: np.random.Generator) -> dict[str, Any]:
    name = f"{image_id:012d}.jpg"
    width, height = (640, int(gen.choice([360, 427, 480]))) if gen.uniform() < 0.7 else (
        int(gen.choice([375, 427, 480])), 640)
    return {"license": int(gen.integers(1, 9)), "file_name": name,
            "coco_url": f"http://images.cocodataset.org/train2017/{name}",
            "height": height, "width": width, "date_captured": "2013-11-14 11:18:45",
            "flickr_url": f"http://farm4.staticflickr.com/3153/{image_id}_d2f7c3e0a4_z.jpg",
            "id": image_id}


def _annotation_entries(gen: np.random.Generator, image: dict[str, Any], count: int,
                        first_id: int) -> list[dict[str, Any]]:
    width, height = image["width"], image["height"]
    wh = np.exp(gen.uniform(np.log(4), np.log(0.9 * min(width, height)), (count, 2)))
    xy = gen.uniform(0, 1, (count, 2)) * np.maximum([width, height] - wh, 1.0)
    boxes = np.round(np.concatenate([xy, wh], 1), 2)
    entries = []
    for k in range(count):
        crowd = gen.uniform() < 0.01
        if crowd:  # RLE counts, as train2017's crowd annotations have
            segmentation: Any = {"counts": gen.integers(0, 300, 120).tolist(),
                                 "size": [height, width]}
        else:
            segmentation = [_polygon(gen, boxes[k], int(gen.integers(8, 37)))]
        entries.append({"segmentation": segmentation,
                        "area": round(float(wh[k].prod() * gen.uniform(0.5, 0.9)), 4),
                        "iscrowd": int(crowd), "image_id": image["id"],
                        "bbox": boxes[k].tolist(),
                        "category_id": int(gen.choice(COCO_CATEGORY_IDS)), "id": first_id + k})
    return entries


def write_train2017_like(work_dir: Path, scale: float = 1.0, seed: int = 0
                         ) -> tuple[Path, Path]:
    """Write (or reuse) ``work_dir/scale{scale}/instances.json`` and its ``images/`` folder of
    empty files; returns ``(images_dir, ann_file)``. Written entry by entry, so generating it
    never holds the whole file in memory."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    root = Path(work_dir) / f"scale{scale:g}_seed{seed}"
    images_dir, ann_file = root / "images", root / "instances.json"
    if ann_file.is_file():
        return images_dir, ann_file
    images_dir.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    num_images = max(1, round(TRAIN2017_IMAGES * scale))
    # annotations per image: train2017's mean of 7.3, spread like a Poisson count
    counts = gen.poisson(TRAIN2017_ANNOTATIONS / TRAIN2017_IMAGES, num_images)
    images = [_image_entry(i + 1, gen) for i in range(num_images)]
    for image in images:
        (images_dir / image["file_name"]).touch()
    partial = ann_file.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as f:
        f.write('{"info": {"description": "generated like COCO 2017"}, "licenses": [], ')
        f.write('"images": [' + ", ".join(json.dumps(image) for image in images) + '], ')
        f.write('"annotations": [')
        next_id = 1
        for image, count in zip(images, counts, strict=True):
            for entry in _annotation_entries(gen, image, int(count), next_id):
                f.write((", " if next_id > 1 else "") + json.dumps(entry))
                next_id += 1
        categories = [{"supercategory": "thing", "id": i, "name": f"category{i}"}
                      for i in COCO_CATEGORY_IDS]
        f.write('], "categories": ' + json.dumps(categories) + "}")
    partial.rename(ann_file)
    return images_dir, ann_file


# ------------------------------------------------------------------------------- the old path
class ReferenceCocoDetection:
    """The records and ground truth of ``CocoDetection`` as of commit 4f80035 (the old path):
    the whole file parsed, every annotation completed and kept (polygons included) for
    ``coco_gt``, and one :class:`ImageRecord` per image in a list. Items are not served."""

    def __init__(self, images_dir: str | Path, ann_file: str | Path) -> None:
        images_dir, ann_file = Path(images_dir), Path(ann_file)
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
        images = _check_images(data["images"], ann_file)
        categories = _check_categories(data["categories"], ann_file)
        label_of = {c["id"]: label for label, c in enumerate(categories, start=1)}
        image_ids = {image["id"] for image in images}
        for i, ann in enumerate(data["annotations"]):
            _check_annotation(ann, _entry("annotations", i, ann), image_ids, set(label_of))
        per_image: dict[int, list[dict[str, Any]]] = {}
        for ann in complete_annotations(data["annotations"]):
            per_image.setdefault(ann["image_id"], []).append(ann)
        paths = [images_dir / image["file_name"] for image in images]
        find_missing_files(paths, what=str(ann_file), skip=False)
        self.records: list[ImageRecord] = []
        kept_anns: list[dict[str, Any]] = []
        for image, path in zip(images, paths, strict=True):
            anns = per_image.get(image["id"], [])
            self.records.append(self._record(image, path, anns, label_of))
            kept_anns.extend(anns)
        self._coco_gt_dataset = {"images": images, "annotations": kept_anns,
                                 "categories": data["categories"]}

    @staticmethod
    def _record(image: dict[str, Any], path: Path, anns: list[dict[str, Any]],
                label_of: dict[int, int]) -> ImageRecord:
        height, width = int(image["height"]), int(image["width"])
        objects = [a for a in anns if a["iscrowd"] != 1]
        boxes_xywh = np.array([a["bbox"] for a in objects], np.float64).reshape(-1, 4)
        labels = np.array([label_of[a["category_id"]] for a in objects], np.int64)
        boxes_xyxy = np.concatenate([boxes_xywh[:, :2], boxes_xywh[:, :2] + boxes_xywh[:, 2:]], 1)
        clipped, keep, _ = clip_boxes_xyxy(boxes_xyxy, height, width)
        return ImageRecord(image["id"], path, height, width, clipped[keep], labels[keep])


# ------------------------------------------------------------------------------- measurements
def _status_mb(field: str, pid: int | str = "self") -> float:
    """``VmRSS`` / ``VmHWM`` of a process in MB (from ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def smaps_mb(pid: int) -> dict[str, float]:
    """``{"rss", "pss", "uss"}`` of a process in MB, from ``/proc/<pid>/smaps_rollup`` (USS =
    private clean + private dirty pages: what the process does not share)."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) / 1024
    return {"rss": values["Rss"], "pss": values["Pss"],
            "uss": values["Private_Clean"] + values["Private_Dirty"]}


class _RecordItems(Dataset):
    """Reads one record per item as a training item would (no image decoding)."""

    def __init__(self, records: Any) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> int:
        record = self.records[index]
        return int(record.labels.sum()) + len(str(record.path)) + record.height


def _epoch_memory(records: Any, cfg: DataBenchConfig) -> list[list[dict[str, float]]]:
    """Run one epoch of ``cfg.workers`` forked workers; ``[sample][worker] -> smaps_mb``."""
    loader = DataLoader(_RecordItems(records), batch_size=cfg.batch_size, shuffle=True,
                        num_workers=cfg.workers, multiprocessing_context="fork",
                        generator=torch.Generator().manual_seed(cfg.seed))
    iterator = iter(loader)
    pids = [worker.pid for worker in iterator._workers]  # private, but the only handle
    batches = len(loader)
    due = set(np.linspace(0, batches - 1, cfg.samples).round().astype(int).tolist())
    samples = []
    for step, _ in enumerate(iterator):
        if step in due:
            samples.append([smaps_mb(pid) for pid in pids])
    return samples


def _build_and_measure(kind: str, images_dir: str, ann_file: str, cfg: DataBenchConfig
                       ) -> dict[str, Any]:
    """Runs in a fresh process: build one loader, measure, then (maybe) the worker epoch."""
    before = _status_mb("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    if kind == "parse_plain":
        with open(ann_file, encoding="utf-8") as f:
            dataset: Any = json.load(f)
    elif kind == "parse_hook":
        dataset = _read_json(Path(ann_file))
    elif kind == "old":
        dataset = ReferenceCocoDetection(images_dir, ann_file)
    else:
        dataset = CocoDetection(images_dir, ann_file, keep_coco_gt=kind == "new_val")
    result: dict[str, Any] = {
        "kind": kind, "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start, "rss_before_mb": before,
        "rss_after_mb": _status_mb("VmRSS"), "peak_rss_mb": _status_mb("VmHWM")}
    if kind == "new_train" or (kind == "old" and cfg.reference_workers):
        result["records"] = len(dataset.records)
        result["epoch"] = _epoch_memory(dataset.records, cfg)
    return result


def _child(queue: Any, *args: Any) -> None:
    try:
        queue.put(("ok", _build_and_measure(*args)))
    except BaseException as error:  # reported to the parent, which would otherwise wait forever
        queue.put(("error", f"{type(error).__name__}: {error}"))
        raise


def _in_fresh_process(*args: Any) -> dict[str, Any]:
    """``_build_and_measure(*args)`` in a spawned process; its error, or its death (e.g. the
    out-of-memory killer on the old path at full size), is raised here instead of hanging."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_child, args=(results, *args))
    process.start()
    while True:
        try:
            status, value = results.get(timeout=2.0)
            break
        except queue.Empty:
            if not process.is_alive():
                raise RuntimeError(f"the measuring process for {args[0]!r} died (exit code "
                                   f"{process.exitcode}) before reporting; out of memory?"
                                   ) from None
    process.join()
    if status == "error":
        raise RuntimeError(f"the measuring process for {args[0]!r} failed: {value}")
    return value


def run_data_benchmark(cfg: DataBenchConfig) -> dict[str, Any]:
    """Generate (or reuse) the data, then build each loader in its own process.

    Returns:
        ``{"config", "file_mb", "images", "load_average", "runs": [per-loader dicts]}``.
    """
    images_dir, ann_file = write_train2017_like(Path(cfg.work_dir), cfg.scale, cfg.seed)
    kinds = ("parse_plain", "parse_hook", "old", "new_val", "new_train")
    runs = [_in_fresh_process(kind, str(images_dir), str(ann_file), cfg) for kind in kinds]
    return {"config": cfg, "file_mb": ann_file.stat().st_size / 2**20,
            "load_average": os.getloadavg(), "ann_file": str(ann_file), "runs": runs}


def _epoch_lines(name: str, epoch: list[list[dict[str, float]]]) -> list[str]:
    lines = [f"{name}: per-worker memory over the epoch (MB, sample: worker values)"]
    for i, sample in enumerate(epoch):
        uss = " ".join(f"{w['uss']:7.1f}" for w in sample)
        pss = " ".join(f"{w['pss']:7.1f}" for w in sample)
        lines.append(f"  sample {i}: USS {uss} | PSS {pss}")
    growth = [last["uss"] - first["uss"] for first, last in zip(epoch[0], epoch[-1], strict=True)]
    lines.append("  USS growth first->last sample per worker: "
                 + " ".join(f"{g:+.1f}" for g in growth) + " MB")
    return lines


def _added(run: dict[str, Any]) -> float:
    return run["rss_after_mb"] - run["rss_before_mb"]


def format_data_benchmark(result: dict[str, Any]) -> str:
    """Side-by-side table: build seconds and memory of each loader, ratios old/new."""
    cfg, runs = result["config"], {r["kind"]: r for r in result["runs"]}
    load = ", ".join(f"{v:.2f}" for v in result["load_average"])
    lines = [f"annotation file: {result['ann_file']} ({result['file_mb']:.0f} MB, scale "
             f"{cfg.scale:g}); load average at the end: {load} on {os.cpu_count()} CPUs",
             f"{'loader':<46} {'seconds':>8} {'CPU s':>6} {'RSS after MB':>13} {'(+ by load)':>12} "
             f"{'peak RSS MB':>12}"]
    names = {"parse_plain": "json.load only (stdlib, polygons kept)",
             "parse_hook": "json.load only (object_hook drops polygons)",
             "old": "old CocoDetection (4f80035, reference)",
             "new_val": "new CocoDetection (val: keeps coco_gt dicts)",
             "new_train": "new CocoDetection (train: keep_coco_gt=False)"}
    for kind, name in names.items():
        r = runs[kind]
        lines.append(f"{name:<46} {r['seconds']:8.1f} {r['cpu_seconds']:6.1f} "
                     f"{r['rss_after_mb']:13.0f} "
                     f"{r['rss_after_mb'] - r['rss_before_mb']:+12.0f} {r['peak_rss_mb']:12.0f}")
    old, new = runs["old"], runs["new_train"]
    lines.append(f"old / new train: build time x{old['seconds'] / new['seconds']:.1f} (CPU "
                 f"x{old['cpu_seconds'] / new['cpu_seconds']:.1f}), RSS after "
                 f"load x{old['rss_after_mb'] / new['rss_after_mb']:.1f}, added by the load "
                 f"x{_added(old) / max(_added(new), 1.0):.1f} (each process starts "
                 f"at ~{new['rss_before_mb']:.0f} MB: Python, numpy, torch)")
    for kind in ("new_train", "old"):
        if "epoch" in runs[kind]:
            lines += _epoch_lines(f"{names[kind]}, {cfg.workers} workers, {runs[kind]['records']}"
                                  " records", runs[kind]["epoch"])
    return "\n".join(lines)
