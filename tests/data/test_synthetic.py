import contextlib
import dataclasses
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from detkit.data import CocoDetection
from detkit.data.synthetic import (
    CATEGORY_NAMES,
    SIZE_BUCKETS,
    SceneSpec,
    SyntheticSpec,
    dataset_statistics,
    ensure_dataset,
    generate_split,
    render_image,
    size_bucket,
    spec_fields,
)

TINY = SyntheticSpec(seed=3, image_size=128, train_images=4, val_images=2, test_images=2,
                     scene=SceneSpec(max_objects=3, max_object_size=110, max_distractors=2))
# Large enough for bucket shares and every class to show. 256 px as by default: COCO's buckets
# are absolute sizes, so in much smaller images the large objects no longer fit.
MODERATE = SyntheticSpec(seed=0, train_images=60, val_images=0, test_images=0)


@pytest.fixture(scope="module")
def moderate(tmp_path_factory) -> dict[str, str]:
    return ensure_dataset(tmp_path_factory.mktemp("moderate") / "set", MODERATE)


def _load(ann_file: str) -> dict:
    return json.loads(Path(ann_file).read_text())


def test_same_spec_gives_same_files_and_another_seed_differs(tmp_path):
    first = ensure_dataset(tmp_path / "a", TINY)
    second = ensure_dataset(tmp_path / "b", TINY)
    for split in ("train", "val", "test"):
        assert _load(first[f"{split}_ann"]) == _load(second[f"{split}_ann"])
        for path in sorted(Path(first[f"{split}_images"]).iterdir()):
            assert path.read_bytes() == (Path(second[f"{split}_images"]) / path.name).read_bytes()
    other = dataclasses.replace(TINY, seed=4)
    image, annotations = render_image(TINY, "train", 0)
    other_image, other_annotations = render_image(other, "train", 0)
    assert not np.array_equal(image, other_image) and annotations != other_annotations


def test_images_do_not_depend_on_other_splits_or_order():
    bigger = dataclasses.replace(TINY, train_images=50)
    for index in (1, 0):
        image, annotations = render_image(TINY, "val", index)
        again, again_annotations = render_image(bigger, "val", index)
        assert np.array_equal(image, again) and annotations == again_annotations


def test_size_buckets_are_balanced_and_every_class_appears(moderate):
    stats = dataset_statistics(moderate)["train"]
    assert stats["images"] == 60 and stats["objects"] >= 120
    for bucket in SIZE_BUCKETS:
        assert 0.25 <= stats["per_bucket"][bucket] / stats["objects"] <= 0.42, stats
    assert all(stats["per_class"][name] > 0 for name in CATEGORY_NAMES), stats


def test_boxes_and_areas_are_consistent(moderate):
    coco = _load(moderate["train_ann"])
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5, 6]
    assert [c["name"] for c in coco["categories"]] == list(CATEGORY_NAMES)
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w >= 1 and h >= 1 and x >= 0 and y >= 0 and x + w <= 256 and y + h <= 256
        assert 0 < ann["area"] <= w * h
        assert ann["iscrowd"] == 0 and MODERATE.scene.min_visibility <= ann["visibility"] <= 1
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])


def test_image_ids_are_unique_across_splits(tmp_path):
    paths = ensure_dataset(tmp_path / "set", TINY)
    ids = [img["id"] for split in ("train", "val", "test")
           for img in _load(paths[f"{split}_ann"])["images"]]
    assert len(ids) == len(set(ids)) == 8


def test_set_loads_through_coco_detection_and_pycocotools(moderate):
    dataset = CocoDetection(moderate["train_images"], moderate["train_ann"])
    assert len(dataset) == 60 and dataset.category_names == list(CATEGORY_NAMES)
    image, target = dataset[0]
    assert tuple(image.shape) == (3, 256, 256)
    assert dataset.stats["boxes_clipped"] == dataset.stats["boxes_dropped_empty"] == 0
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(moderate["train_ann"])
    assert len(coco.getAnnIds()) == dataset_statistics(moderate)["train"]["objects"]
    # COCO's own size buckets (from ``area``) agree with ours
    small = [a for a in coco.loadAnns(coco.getAnnIds(areaRng=[0, 32**2]))]
    assert all(size_bucket(a["area"]) == "small" for a in small)


def test_existing_set_is_reused_and_another_spec_refused(tmp_path, caplog):
    root = tmp_path / "set"
    paths = ensure_dataset(root, TINY)
    files = [p for p in root.rglob("*") if p.is_file()]
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    with caplog.at_level(logging.INFO, logger="detkit.data.synthetic"):
        assert ensure_dataset(root, TINY) == paths
        assert ensure_dataset(str(root)) == paths  # spec None: whatever set is there
    assert "reusing" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes
    other = dataclasses.replace(TINY, scene=dataclasses.replace(TINY.scene, max_objects=4))
    with pytest.raises(ValueError) as info:
        ensure_dataset(root, other)
    assert str(root) in str(info.value)
    assert "'max_objects': 3" in str(info.value) and "'max_objects': 4" in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no partial folder left behind


def test_refuses_a_folder_with_other_files_and_an_incomplete_set(tmp_path):
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a synthetic set"):
        ensure_dataset(tmp_path / "user", TINY)
    paths = ensure_dataset(tmp_path / "set", TINY)
    Path(paths["val_ann"]).unlink()
    with pytest.raises(ValueError, match="incomplete"):
        ensure_dataset(tmp_path / "set", TINY)


def test_an_existing_empty_folder_is_filled(tmp_path):
    paths = ensure_dataset(tmp_path, TINY)
    assert Path(paths["train_ann"]).is_file() and (tmp_path / "spec.json").is_file()


def test_a_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    import detkit.data.synthetic.files as files

    def fail(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(files, "generate_split", fail)
    with pytest.raises(RuntimeError):
        ensure_dataset(tmp_path / "set", TINY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"jpeg_quality": 100}, {"image_size": 32}])
def test_invalid_specs_are_refused(kwargs):
    with pytest.raises(ValueError, match="invalid SyntheticSpec"):
        SyntheticSpec(**kwargs)


@pytest.mark.parametrize("kwargs", [{"min_object_size": 0.5},
                                    {"min_object_size": 50, "max_object_size": 40},
                                    {"background_contrast": -1}, {"min_visibility": 0},
                                    {"max_aspect": 0.5}])
def test_invalid_scenes_are_refused(kwargs):
    with pytest.raises(ValueError, match="invalid SceneSpec"):
        SceneSpec(**kwargs)


def test_spec_record_is_flat_in_field_order_and_round_trips():
    record = TINY.record()
    assert list(record) == [
        "seed", "image_size", "train_images", "val_images", "test_images", "max_objects",
        "min_object_size", "max_object_size", "max_distractors", "background_contrast",
        "max_aspect", "max_shear", "elastic_strength", "min_visibility", "jpeg_quality"]
    assert record["max_objects"] == 3 and record["seed"] == 3
    assert SyntheticSpec.from_record(record) == TINY
    assert [name for name, _, _ in spec_fields()] == list(record)
    with pytest.raises(ValueError, match="max_object"):
        SyntheticSpec.from_record({"max_object": 3})


def test_generation_says_where_it_writes_and_shows_progress(tmp_path, capsys):
    ensure_dataset(tmp_path / "set", TINY)
    err = capsys.readouterr().err
    assert f"into {(tmp_path / 'set').resolve()}" in err and "(8 images)" in err
    assert "synthetic train" in err and "4/4" in err  # the train split's progress bar
    assert f"synthetic set written to {tmp_path / 'set'}" in err
    ensure_dataset(tmp_path / "quiet", TINY, progress=False)
    assert capsys.readouterr().err == ""


def test_parallel_generation_writes_the_same_files(tmp_path):
    """Workers render images in any order; each image draws from its own generator, so the
    JPEGs and the COCO dict are those of a single process."""
    from detkit.data.synthetic.files import _PARALLEL_FROM

    spec = dataclasses.replace(TINY, train_images=_PARALLEL_FROM)
    serial = generate_split(spec, "train", tmp_path / "serial", workers=1)
    parallel = generate_split(spec, "train", tmp_path / "parallel", workers=2)
    assert parallel == serial and len(serial["images"]) == _PARALLEL_FROM
    for image in serial["images"]:
        name = image["file_name"]
        assert (tmp_path / "parallel" / name).read_bytes() == (
            tmp_path / "serial" / name).read_bytes(), name
