"""Study-set factors and presets of the synthetic set: each factor changes only its property."""

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from jsonargparse import ArgumentParser

from detkit.data import datamodule
from detkit.data.datamodule import DetectionDataModule
from detkit.data.synthetic import (
    FACTORS,
    PRESETS,
    SceneSpec,
    SyntheticFactors,
    SyntheticSpec,
    dataset_statistics,
    factor_settings,
    format_statistics,
    render_image,
)
from detkit.data.synthetic.rendering import render_sized
from detkit.data.synthetic.shapes import category_fills, random_shape
from detkit.data.synthetic.spec import Deformation

SMALL_SCENE = {"image_size": 128, "max_objects": 3}


def _spec(factors: SyntheticFactors, **scene: float) -> SyntheticSpec:
    """``factors``' spec in 128 px images with at most 3 objects (fast to render)."""
    spec = factors.spec()
    scene = {"max_objects": 3, **scene}
    return dataclasses.replace(spec, image_size=128,
                               scene=dataclasses.replace(spec.scene, **scene))


def test_hard_preset_is_the_original_generator():
    assert SyntheticFactors(preset="hard").spec() == SyntheticSpec()
    # sha256 of this image as the generator wrote it before factors existed (commit 4f80035)
    tiny = SyntheticSpec(seed=3, image_size=128,
                         scene=SceneSpec(max_objects=3, max_object_size=110, max_distractors=2))
    image, annotations = render_image(tiny, "train", 1)
    assert hashlib.sha256(image.tobytes()).hexdigest() == (
        "5ed5920bb364a2cacd6e0ccd40002e749675ffe291fec839a1250f406bb489ce")
    assert [a["bbox"] for a in annotations] == [[36, 0, 57, 116], [3, 56, 31, 33],
                                                [68, 37, 23, 18]]


def test_each_factor_sets_only_its_own_fields():
    owned = {name: set(next(iter(table.values()))) for name, table in FACTORS.items()}
    assert sum(len(fields) for fields in owned.values()) == len(set().union(*owned.values()))
    base = SyntheticFactors().spec().record()
    for name, table in FACTORS.items():
        assert all(set(numbers) == owned[name] for numbers in table.values())
        for setting in table:
            record = SyntheticFactors(**{name: setting}).spec().record()
            changed = {key for key in record if record[key] != base[key]}
            assert changed <= owned[name], (name, setting, changed)
            scene = SyntheticFactors(**{name: setting}).spec().scene
            assert factor_settings(scene)[name] == setting


def test_presets_and_overrides():
    assert SyntheticFactors().settings() == PRESETS["default"]["factors"]
    hard = SyntheticFactors(preset="hard", deformation="none")
    assert hard.settings() == {**PRESETS["hard"]["factors"], "deformation": "none"}
    assert SyntheticFactors().spec().train_images == 2000
    assert factor_settings(SceneSpec(max_shear=0.2))["deformation"] == "custom"


def test_preset_scene_fields_are_none_of_the_factors():
    """A preset's own scene fields (objects per image, ...) reach the spec and never touch a
    factor's fields, so a sweep over one factor still changes that factor only."""
    factor_fields = set().union(*(numbers for table in FACTORS.values()
                                  for numbers in table.values()))
    for name, preset in PRESETS.items():
        scene = preset.get("scene", {})
        assert not set(scene) & factor_fields, name
        spec_scene = SyntheticFactors(preset=name).spec().scene
        assert all(getattr(spec_scene, key) == value for key, value in scene.items()), name


@pytest.mark.parametrize("kwargs, word", [({"preset": "easy"}, "preset"),
                                          ({"deformation": "wild"}, "deformation"),
                                          ({"clutter": "mild"}, "clutter"),
                                          ({"seed": -1}, "seed")])
def test_invalid_factors_are_refused_by_name(kwargs, word):
    with pytest.raises(ValueError, match=f"invalid SyntheticFactors: {word}"):
        SyntheticFactors(**kwargs)


def test_deformation_none_keeps_the_canonical_shape():
    rng = np.random.default_rng(0)
    none = Deformation(**FACTORS["deformation"]["none"])
    strong = Deformation(**FACTORS["deformation"]["strong"])
    for _ in range(5):
        shape = random_shape(category_fills("disk", rng), none, rng)
        assert np.allclose(shape.linear @ shape.linear.T, np.eye(2))  # a rotation only
        assert not shape.warp.any()
        rows, cols = np.nonzero(render_sized(shape, 40.0, (32, 96)) >= 0.5)
        # an undistorted disk: a square box of the disk's diameter
        assert abs((rows.max() - rows.min()) - (cols.max() - cols.min())) <= 1
        assert abs(rows.max() - rows.min() + 1 - 40 * 2 / np.sqrt(np.pi)) <= 1.5
    ratios = []
    for _ in range(10):
        rows, cols = np.nonzero(render_sized(random_shape(category_fills("disk", rng), strong,
                                                          rng), 40.0, (32, 96)) >= 0.5)
        ratios.append((rows.max() - rows.min() + 1) / (cols.max() - cols.min() + 1))
    assert max(abs(np.log(r)) for r in ratios) > 0.15  # strong deformation does distort


@pytest.mark.parametrize("factor", ["deformation", "occlusion"])
def test_a_factor_keeps_the_background_and_the_drawn_objects(factor, monkeypatch):
    """Same seed, another setting: the same background and objects (classes, buckets, sizes)."""
    import detkit.data.synthetic.scenes as scenes

    drawn = []

    def recording(function):
        def record(*args):
            result = function(*args)
            drawn.append((function.__name__, copy.deepcopy(result)))  # the image is painted on
            return result
        return record

    for name in ("background", "_sample_objects"):
        monkeypatch.setattr(scenes, name, recording(getattr(scenes, name)))
    for index in range(3):
        per_setting = []
        for setting in FACTORS[factor]:
            drawn.clear()
            render_image(_spec(SyntheticFactors(**{factor: setting})), "train", index)
            per_setting.append(list(drawn))
        (_, background), (_, objects) = per_setting[0]
        assert len(objects) >= 1
        for other in per_setting[1:]:
            assert np.array_equal(other[0][1], background) and other[1][1] == objects


def test_scale_range_medium_gives_only_medium_objects():
    spec = _spec(SyntheticFactors(scale_range="medium"))
    sides = [np.sqrt(a["area"]) for i in range(6) for a in render_image(spec, "train", i)[1]]
    assert len(sides) >= 6 and all(32 <= side < 96 for side in sides), sides
    extreme = _spec(SyntheticFactors(scale_range="extreme"), max_objects=6)
    assert extreme.scene.size_bounds() == {"small": (6.0, 32.0), "medium": (32.0, 96.0),
                                           "large": (96.0, 220.0)}


def _outside_boxes_std(spec: SyntheticSpec, images: int) -> list[float]:
    """Per image with 1000+ pixels more than 2 px outside every object box: their largest
    per-channel std."""
    stds = []
    for index in range(images):
        image, annotations = render_image(spec, "train", index)
        outside = np.ones(image.shape[:2], bool)
        for annotation in annotations:
            x, y, w, h = annotation["bbox"]
            outside[max(y - 2, 0):y + h + 2, max(x - 2, 0):x + w + 2] = False
        if outside.sum() >= 1000:
            stds.append(float(image[outside].astype(np.float32).std(0).max()))
    return stds


def test_clutter_none_gives_a_plain_background_without_distractors():
    plain = _spec(SyntheticFactors(clutter="none"))
    assert plain.scene.max_distractors == 0
    stds = _outside_boxes_std(plain, 6)
    assert len(stds) >= 3 and max(stds) < 8, stds  # only sensor noise (std <= 6)
    assert max(_outside_boxes_std(_spec(SyntheticFactors(clutter="high")), 6)) > 15


def test_occlusion_none_leaves_every_object_fully_visible():
    spec = _spec(SyntheticFactors(occlusion="none"), max_objects=5)
    visibility = [a["visibility"] for i in range(5) for a in render_image(spec, "train", i)[1]]
    assert len(visibility) >= 5 and all(v == 1.0 for v in visibility)
    high = _spec(SyntheticFactors(occlusion="high"), max_objects=5)
    assert min(a["visibility"] for i in range(5) for a in render_image(high, "train", i)[1]) < 1


def test_folder_names_differ_per_spec():
    names = {SyntheticFactors(preset=p, **{f: s}).folder_name(): SyntheticFactors(
        preset=p, **{f: s}).spec() for p in PRESETS for f, t in FACTORS.items() for s in t}
    assert len(set(names.values())) == len(names)  # one folder per spec, one spec per folder
    assert SyntheticFactors().folder_name() == "default"
    assert SyntheticFactors(deformation="none").folder_name() == "default"  # the preset's own
    assert SyntheticFactors(preset="hard", clutter="none", seed=2).folder_name() == (
        "hard_clutter-none_seed-2")


@pytest.fixture
def tiny_presets(monkeypatch, tmp_path):
    """Presets of 2/1/0 images, generated under tmp_path/synthetic."""
    for preset in PRESETS.values():
        for key, value in (("train_images", 2), ("val_images", 1), ("test_images", 0)):
            monkeypatch.setitem(preset, key, value)
    monkeypatch.setattr(datamodule, "SYNTHETIC_ROOT", str(tmp_path / "synthetic"))
    return tmp_path / "synthetic"


def test_datamodule_puts_each_spec_in_its_folder_and_records_factors(tiny_presets):
    first = DetectionDataModule(format="synthetic",
                                synthetic=SyntheticFactors(occlusion="low"))
    first.prepare_data()
    second = DetectionDataModule(format="synthetic",
                                 synthetic=SyntheticFactors(occlusion="high"))
    second.prepare_data()
    assert sorted(p.name for p in tiny_presets.iterdir()) == [
        "default_occlusion-high", "default_occlusion-low"]
    record = json.loads((tiny_presets / "default_occlusion-low" / "spec.json").read_text())
    assert record["factors"] == {**PRESETS["default"]["factors"], "occlusion": "low"}
    statistics = dataset_statistics(first.coco_paths)
    assert statistics["train"]["factors"]["occlusion"] == "low"
    assert "occlusion low" in format_statistics(statistics)
    again = DetectionDataModule(format="synthetic", synthetic=SyntheticFactors(occlusion="low"))
    again.prepare_data()  # the same spec: reused
    assert again.coco_paths == first.coco_paths


def test_a_given_root_must_hold_the_asked_factors(tiny_presets, tmp_path):
    root = tmp_path / "mine"
    DetectionDataModule(format="synthetic", root=str(root),
                        synthetic=SyntheticFactors(clutter="low")).prepare_data()
    assert json.loads((root / "spec.json").read_text())["factors"]["clutter"] == "low"
    DetectionDataModule(format="synthetic", root=str(root)).prepare_data()  # any set: reused
    with pytest.raises(ValueError, match="not the requested"):
        DetectionDataModule(format="synthetic", root=str(root),
                            synthetic=SyntheticFactors(clutter="high")).prepare_data()
    assert not Path(tiny_presets).exists()


def test_factors_reach_the_datamodule_from_the_command_line():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DetectionDataModule, "data")
    config = parser.parse_args(["--data.synthetic.preset", "hard",
                                "--data.synthetic.deformation", "none"])
    data = parser.instantiate(config).data
    assert data.format_args["synthetic"] == SyntheticFactors(preset="hard", deformation="none")
    with pytest.raises(Exception, match="deformation"):
        parser.parse_args(["--data.synthetic.deformation", "wild"])
