"""Prediction on one's own images: tools/predict.py, the Detector API and its docstring example.

One tiny deformable checkpoint (one training step) is shared by the module's tests.
"""

import doctest
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from detkit.data import DetectionDataModule
from detkit.engine import DetectionModule, OptimizerSettings, ScheduleSettings
from detkit.engine.cli import load_module
from detkit.engine.predict import (
    Detector,
    _unique_stems,
    checkpoint_settings,
    find_images,
    predict_files,
)
from detkit.models import RoIHeadSettings, RPNSettings, build_faster_rcnn
from tests.engine.helpers import write_shapes_coco

REPO = Path(__file__).resolve().parents[2]


# tests/engine/helpers.py's FAST_MODEL as constructor arguments
FAST_MODULE = {
    "backbone": "resnet18", "roi_extractor": "deform_roi_pool",
    "rpn": RPNSettings(anchor_sizes=(16, 32, 64, 128, 256), pre_nms_top_n_train=200,
                       post_nms_top_n_train=100, pre_nms_top_n_test=100, post_nms_top_n_test=50),
    "roi_head": RoIHeadSettings(batch_size_per_image=32, representation_size=64,
                                score_thresh=0.0),
    "optimizer": OptimizerSettings(lr=0.01), "schedule": ScheduleSettings(warmup_steps=2),
}


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A checkpoint after one training step, and what validation predicts with it."""
    root = tmp_path_factory.mktemp("predict")
    train_images, train_ann = write_shapes_coco(root / "coco", "train", 2, seed=1)
    # val images larger than min_size/max_size, so the resize (and mapping back) is not identity
    val_images, val_ann = write_shapes_coco(root / "coco", "val", 2, seed=2, size=96)
    data = DetectionDataModule(
        format="coco", train_images=str(train_images), train_ann=str(train_ann),
        val_images=str(val_images), val_ann=str(val_ann), min_size=64, max_size=64,
        batch_size=1)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, default_root_dir=root)
    trainer.fit(DetectionModule(3, **FAST_MODULE), datamodule=data)
    ckpt = root / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)
    validated = load_module(ckpt)  # as tools/eval.py does
    quiet_trainer(default_root_dir=root).validate(validated, datamodule=data, verbose=False)
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    # class names: stored by training (when it stores them), else the fallback
    names = hparams.get("category_names") or ["class1", "class2", "class3"]
    return SimpleNamespace(root=root, ckpt=ckpt, val_images=val_images, names=names,
                           val_predictions=validated.last_predictions)


@pytest.fixture(scope="module")
def detector(tiny):
    return Detector.from_checkpoint(tiny.ckpt, device="cpu")


def user_images(folder: Path) -> dict[str, tuple[int, int]]:
    """JPEG, 16-bit PNG, grayscale, RGBA, a corrupt file and a text file; (h, w) of the images."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    rgb[10:30, 20:50] = (255, 40, 40)
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=95)
    deep = (rng.integers(0, 65535, (60, 40))).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")  # mode I;16
    assert Image.open(folder / "deep16.png").mode.startswith("I")
    Image.fromarray(rgb[:, :, 0]).save(folder / "gray.png")  # mode L
    rgba = np.dstack([rgb, np.full((48, 80), 200, np.uint8)])
    Image.fromarray(rgba).save(folder / "alpha.png")  # mode RGBA
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "notes.txt").write_text("not an image")
    return {"photo.jpg": (48, 80), "deep16.png": (60, 40), "gray.png": (48, 80),
            "alpha.png": (48, 80)}


def test_checkpoint_records_the_validation_resize(tiny):
    checkpoint = torch.load(tiny.ckpt, weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"] == {"min_size": 64, "max_size": 64}
    settings = checkpoint_settings(checkpoint)
    assert (settings.min_size, settings.max_size) == (64, 64)


def test_tool_predicts_on_a_folder_of_user_images(tiny, tmp_path, monkeypatch, capsys):
    sizes = user_images(tmp_path / "mine")
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "tools/predict.py", "--ckpt", str(tiny.ckpt), "--images", str(tmp_path / "mine"),
        "--out", str(out), "--score_thresh", "0.0", "--batch_size", "2", "--device", "cpu",
        "--offsets", "--no_progress"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "tools" / "predict.py"), run_name="__main__")
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "1 unreadable file(s)" in printed and "broken.jpg" in printed
    assert "1 file(s)" in printed and "no image suffix" in printed  # notes.txt
    assert "min_size=64, max_size=64" in printed  # the checkpoint's resize
    assert "have no detection scoring" not in printed  # every read image has one at 0.0

    detections = json.loads((out / "detections.json").read_text())
    assert detections, "roi_head.score_thresh 0 and --score_thresh 0 give detections"
    # image ids follow the sorted files, broken.jpg (2) included
    assert {(d["image_id"], d["file_name"]) for d in detections} <= {
        (1, "alpha.png"), (3, "deep16.png"), (4, "gray.png"), (5, "photo.jpg")}
    for d in detections:
        height, width = sizes[d["file_name"]]
        x, y, w, h = d["bbox"]
        assert 0 <= x <= x + w <= width + 1e-3 and 0 <= y <= y + h <= height + 1e-3
        assert d["category_name"] == tiny.names[d["category_id"] - 1]
        assert 0 <= d["score"] <= 1
    for name, (height, width) in sizes.items():  # drawings at the original size
        with Image.open(out / f"{Path(name).stem}.png") as drawing:
            assert drawing.size == (width, height)
    assert not (out / "broken.png").exists() and not (out / "notes.png").exists()
    assert list(out.glob("*_offsets.png")), "deformable checkpoint: offsets drawn"


def test_images_without_detections_are_counted(tiny, tmp_path, capsys):
    from detkit.engine.predict import run_prediction

    user_images(tmp_path / "mine")
    run = run_prediction(tiny.ckpt, str(tmp_path / "mine"), tmp_path / "out", score_thresh=1.01,
                         device="cpu", progress=False)  # no score reaches 1.01
    assert run.images > 0 and run.detections == 0 and run.without_detections == run.images
    assert (f"{run.images} of {run.images} image(s) have no detection scoring >= 1.01"
            in capsys.readouterr().out)


def test_detector_gives_what_validation_gives(tiny, detector):
    """Same transform, same mapping to original pixels: Detector on the val files equals what
    validation (tools/eval.py's predictions.json) gives (COCO ids 1, 2, 5 are labels 1, 2, 3)."""
    expected = tiny.val_predictions
    files = sorted(tiny.val_images.iterdir())
    results = detector.predict(files)
    ids = json.loads((tiny.root / "coco" / "val.json").read_text())["images"]
    id_of = {image["file_name"]: image["id"] for image in ids}
    compared = 0
    for path, found in zip(files, results, strict=True):
        mine = [(s, [1, 2, 5][label - 1], box) for s, label, box in zip(
            found.scores.tolist(), found.labels.tolist(), found.boxes_xyxy.tolist(), strict=True)]
        theirs = [(p["score"], p["category_id"], p["bbox"]) for p in expected
                  if p["image_id"] == id_of[path.name]]
        assert len(mine) == len(theirs) > 0
        for (s1, c1, (x1, y1, x2, y2)), (s2, c2, xywh) in zip(mine, theirs, strict=True):
            assert c1 == c2 and s1 == pytest.approx(s2, abs=1e-5)
            assert [x1, y1, x2 - x1, y2 - y1] == pytest.approx(xywh, abs=1e-3)
            compared += 1
    assert compared > 0


def test_paths_arrays_and_tensors_agree(detector, tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    by_path, by_array, by_tensor = detector.predict([tmp_path / "x.png", rgb, tensor])
    assert len(by_path.scores) > 1
    for other in (by_array, by_tensor):
        assert torch.equal(other.boxes_xyxy, by_path.boxes_xyxy)
        assert torch.equal(other.scores, by_path.scores)
        assert other.names == by_path.names and other.image_size == (50, 70)
    cut = float(by_path.scores[len(by_path.scores) // 2])
    thresholded = detector.predict(rgb, score_thresh=cut)  # one image: still a list
    assert len(thresholded) == 1
    assert torch.equal(thresholded[0].scores, by_path.scores[by_path.scores >= cut])


def test_bad_inputs_are_named(tiny, detector, tmp_path):
    with pytest.raises(ValueError, match=r"image 1: an array must be uint8 \[H, W, 3\]"):
        detector.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)],
                         batch_size=2)
    with pytest.raises(ValueError, match=r"image 0: tensor values must lie in \[0, 1\]"):
        detector.predict(torch.full((3, 8, 8), 255.0))
    with pytest.raises(TypeError, match="image 0: expected a path"):
        detector.predict([[1, 2, 3]])
    with pytest.raises(FileNotFoundError, match="image not found: .*nope.jpg"):
        detector.predict(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        Detector.from_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "plain_state_dict.pt")
    with pytest.raises(ValueError, match="is not a detkit training checkpoint"):
        Detector.from_checkpoint(tmp_path / "plain_state_dict.pt")
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        detector.predict(np.zeros((8, 8, 3), np.uint8), batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' asked for, but CUDA is not available"):
            Detector.from_checkpoint(tiny.ckpt, device="cuda")


def test_offsets_need_a_deformable_extractor(tmp_path):
    model = build_faster_rcnn(2, backbone="resnet18", fpn_channels=16, roi_extractor="roi_align",
                              roi_head=RoIHeadSettings(representation_size=16))
    detector = Detector(model, ["a", "b"], min_size=32, max_size=32)
    with pytest.raises(ValueError, match="RoIAlign.* learns no offsets"):
        predict_files(detector, [(tmp_path / "x.png", "x.png")], tmp_path / "out", offsets=True)


def test_find_images_folder_glob_file(tmp_path):
    for name in ("a.jpg", "b.PNG", "readme.txt", "sub/a.jpg", "sub/deeper/c.jpeg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found, ignored = find_images(str(tmp_path))  # a folder: not recursive, suffix filter
    assert [name for _, name in found] == ["a.jpg", "b.PNG"] and ignored == 1
    pattern = str(tmp_path / "**" / "*.jp*g")
    found, ignored = find_images(pattern)  # a glob: every file it matches, paths as matched
    assert [p for p, _ in found] == [tmp_path / "a.jpg", tmp_path / "sub/a.jpg",
                                     tmp_path / "sub/deeper/c.jpeg"]
    assert found[1][1] == str(tmp_path / "sub/a.jpg") and ignored == 0
    assert _unique_stems([p for p, _ in found]) == ["a", "sub_a", "sub_deeper_c"]
    assert _unique_stems([tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "a-2.jpg"]) == [
        "a", "a-2", "a-2-2"]
    one = tmp_path / "b.PNG"
    assert find_images(str(one)) == ([(one, str(one))], 0)
    with pytest.raises(FileNotFoundError, match="no images found at .*nothing.*no file matches"):
        find_images(str(tmp_path / "nothing*.jpg"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="a folder without image files"):
        find_images(str(tmp_path / "empty"))


def test_checkpoint_settings_fallbacks_and_overrides(tmp_path):
    old = {"hyper_parameters": {"num_classes": 2}}  # before names and resize were stored
    settings = checkpoint_settings(old, run_config=tmp_path / "absent.yaml")
    assert settings.category_names == ["class1", "class2"]
    assert (settings.min_size, settings.max_size) == (800, 1333)  # DetectionDataModule defaults
    assert any("class1..class2" in note for note in settings.notes)
    assert any("does not record the training resize; using the data module's defaults" in note
               for note in settings.notes)
    config = tmp_path / "config.yaml"  # what LightningCLI saved beside checkpoints/
    config.write_text("model:\n  num_classes: 2\ndata:\n  min_size: 256\n  max_size: 320\n")
    settings = checkpoint_settings(old, run_config=config, min_size=200)
    assert (settings.min_size, settings.max_size) == (200, 320)
    assert any(f"using {config}'s" in note for note in settings.notes)
    assert any("min_size=200; validation in training used 256" in n for n in settings.notes)
    new = {"hyper_parameters": {"num_classes": 2, "category_names": ["cat", "dog"]},
           "datamodule_hyper_parameters": {"min_size": 256, "max_size": 300}}
    settings = checkpoint_settings(new, max_size=400)
    assert settings.category_names == ["cat", "dog"]
    assert (settings.min_size, settings.max_size) == (256, 400)
    assert settings.notes == ("resizing with max_size=400; validation in training used 300",)
    with pytest.raises(ValueError, match=r"3 class names \['a', 'b', 'c'\] for 2 classes"):
        checkpoint_settings({"hyper_parameters": {"num_classes": 2,
                                                  "category_names": ["a", "b", "c"]}})


def test_docstring_example_runs(tiny, tmp_path, monkeypatch):
    """The Detector docstring, as written, on the tiny checkpoint placed where it looks."""
    checkpoints = tmp_path / "runs" / "quickstart" / "roi_align" / "v0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(tiny.ckpt, checkpoints / "best.ckpt")
    user_images(tmp_path / "mine")
    shutil.copy(tmp_path / "mine" / "photo.jpg", tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    tests = doctest.DocTestFinder().find(Detector, "Detector", globs={})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    assert runner.tries >= 8 and runner.failures == 0


def test_import_detkit_stays_light():
    code = "import sys, detkit; assert not {'torch', 'lightning'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    import detkit

    assert detkit.Detector is Detector  # resolved lazily
    with pytest.raises(AttributeError, match="no attribute 'Detectr'"):
        detkit.Detectr  # noqa: B018
