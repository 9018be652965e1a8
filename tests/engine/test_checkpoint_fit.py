"""eval/visualize refuse a checkpoint that does not fit the command line or the data."""

import json

import pytest
import torch

from detkit.engine import DetectionModule
from detkit.engine.cli import checkpoint_mismatches, evaluate, load_module, visualize
from detkit.models import RoIHeadSettings, RPNSettings
from tests.engine.helpers import FAST_MODEL, coco_args

NAMES = ["shape1", "shape2", "shape5"]  # the categories of helpers.write_shapes_coco
# FAST_MODEL's settings, as the module takes them
FAST = {
    "roi_head": RoIHeadSettings(batch_size_per_image=32, representation_size=64,
                                score_thresh=0.0),
    "rpn": RPNSettings(anchor_sizes=(16, 32, 64, 128, 256), pre_nms_top_n_train=200,
                       post_nms_top_n_train=100, pre_nms_top_n_test=100,
                       post_nms_top_n_test=50),
}


@pytest.fixture(scope="module")
def trained():
    """The hyperparameters and weights of a 3-class model with FAST_MODEL's settings."""
    torch.manual_seed(0)
    module = DetectionModule(3, category_names=NAMES, **FAST)
    return dict(module.hparams), module.state_dict()


def save_checkpoint(path, trained, **changes):
    """A checkpoint as training writes it (hyper_parameters, state_dict), with ``changes`` to
    its hyperparameters (a dict updates a settings group)."""
    hparams, state = trained
    hparams = dict(hparams)
    for key, value in changes.items():
        hparams[key] = {**hparams[key], **value} if isinstance(value, dict) else value
    torch.save({"hyper_parameters": hparams, "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return coco_args(tmp_path_factory.mktemp("coco"))


def eval_args(data, ckpt, out, *extra):
    return [*data, *FAST_MODEL, "--trainer.accelerator", "cpu", "--ckpt", str(ckpt),
            "--out", str(out), *extra]


def test_a_fitting_checkpoint_evaluates_with_the_command_lines_test_settings(data, trained,
                                                                             tmp_path):
    ckpt = save_checkpoint(tmp_path / "a.ckpt", trained, roi_head={"score_thresh": 0.9})
    metrics = evaluate(eval_args(data, ckpt, tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["AP"] == metrics["AP"]
    # score_thresh is a test-time setting: the command line's 0.0 applies, not the saved 0.9
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert predictions and min(p["score"] for p in predictions) < 0.9


def test_another_extractor_and_other_class_names_are_refused_naming_both_sides(data, trained,
                                                                              tmp_path):
    ckpt = save_checkpoint(tmp_path / "a.ckpt", trained, roi_extractor="roi_pool",
                           category_names=["shape2", "shape1", "shape5"])
    with pytest.raises(ValueError) as error:
        evaluate(eval_args(data, ckpt, tmp_path / "out"))
    message = str(error.value)
    assert f"checkpoint {ckpt} does not fit" in message
    assert ("model.roi_extractor is 'roi_pool' in the checkpoint, 'roi_align' on the command "
            "line") in message
    # the command line's names come from the data (linked into the model like num_classes)
    assert ("the checkpoint's classes are ['shape2', 'shape1', 'shape5'], the data's "
            "['shape1', 'shape2', 'shape5']") in message
    assert not (tmp_path / "out").exists()


def test_mismatches_of_architecture_and_classes(trained):
    saved = trained[0]
    assert checkpoint_mismatches(saved, saved) == []
    assert checkpoint_mismatches({**saved, "fpn_channels": 128}, saved) == [
        "model.fpn_channels is 128 in the checkpoint, 256 on the command line"]
    anchors = {**saved["rpn"], "anchor_sizes": (32, 64, 128, 256, 512)}
    assert checkpoint_mismatches({**saved, "rpn": anchors}, saved) == [
        "model.rpn.anchor_sizes is (32, 64, 128, 256, 512) in the checkpoint, (16, 32, 64, 128, "
        "256) on the command line"]
    two = {**saved, "num_classes": 2, "category_names": ["a", "b"]}
    assert checkpoint_mismatches(two, saved) == [
        "the checkpoint has 2 classes (a, b), the data 3 (shape1, shape2, shape5)"]
    # test-time and training-only settings may differ
    other = {**saved, "trainable_layers": 2, "optimizer": {**saved["optimizer"], "lr": 1.0},
             "roi_head": {**saved["roi_head"], "score_thresh": 0.5, "batch_size_per_image": 8}}
    assert checkpoint_mismatches(other, saved) == []
    # a checkpoint from before category_names was stored: the count only
    old = {k: v for k, v in saved.items() if k != "category_names"}
    assert checkpoint_mismatches(old, saved) == []
    four = {**saved, "num_classes": 4, "category_names": [*NAMES, "x"]}
    assert checkpoint_mismatches(old, four) == [
        "the checkpoint has 3 classes, the data 4 (shape1, shape2, shape5, x)"]
    # a checkpoint from before backbone_width existed was built 64 wide (the module's default)
    before_width = {k: v for k, v in saved.items() if k != "backbone_width"}
    assert checkpoint_mismatches(before_width, saved) == []
    assert checkpoint_mismatches(before_width, {**saved, "backbone_width": 32}) == [
        "model.backbone_width is 64 in the checkpoint, 32 on the command line"]
    # lists (YAML) and tuples (dataclasses) of one value are the same setting
    listed = {**saved, "rpn": {**saved["rpn"], "anchor_sizes": list(FAST["rpn"].anchor_sizes)}}
    assert checkpoint_mismatches(listed, saved) == []


def test_unused_trainer_flags_are_refused(data, trained, tmp_path):
    ckpt = save_checkpoint(tmp_path / "a.ckpt", trained)
    with pytest.raises(ValueError, match="does not use --trainer.max_steps"):
        evaluate(eval_args(data, ckpt, tmp_path / "out", "--trainer.max_steps", "3"))
    with pytest.raises(ValueError, match=r"does not use --trainer.accelerator \(Trainer flags "
                                         r"it reads: none\)"):
        visualize(eval_args(data, ckpt, tmp_path / "out"))


def test_files_that_are_not_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_module(tmp_path / "missing.ckpt")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="not a detkit training checkpoint"):
        load_module(tmp_path / "weights.pth")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(ValueError, match="unreadable"):
        load_module(tmp_path / "text.ckpt")


def test_load_module_reads_the_names_and_weights(trained, tmp_path):
    ckpt = save_checkpoint(tmp_path / "a.ckpt", trained)
    module = load_module(ckpt)
    assert module.hparams["category_names"] == NAMES
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, trained[1][key])


def test_a_runs_own_config_yaml_is_accepted(data, trained, tmp_path):
    """A run's config.yaml also holds the training tool's options (ckpt_path, run_dir, ...) and
    LightningCLI's optimizer slots: eval reads it as --config and ignores them."""
    config = tmp_path / "config.yaml"
    config.write_text("ckpt_path: null\nrun_dir: runs/x/roi_align/v0\n"
                      "checkpoint_every_n_steps: 100\noptimizer: null\nlr_scheduler: null\n")
    ckpt = save_checkpoint(tmp_path / "a.ckpt", trained)
    metrics = evaluate(["--config", str(config), *eval_args(data, ckpt, tmp_path / "out")])
    assert "AP" in metrics and (tmp_path / "out" / "metrics.json").exists()
