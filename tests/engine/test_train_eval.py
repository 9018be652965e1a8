import json
import math
from argparse import ArgumentError
from pathlib import Path

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.engine import DetectionModule, NonFiniteLossError, ScheduleSettings, lr_factor
from detkit.engine.cli import evaluate, load_module, train
from tests.engine.helpers import FAST_MODEL, FAST_TRAINER, coco_args

RACCOON = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "raccoon"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ goes here
    return tmp_path


def fit_args(data_args, steps, extra=()):
    return [*data_args, *FAST_MODEL, *FAST_TRAINER, "--trainer.max_steps", str(steps),
            "--trainer.val_check_interval", "2", "--trainer.check_val_every_n_epoch", "null",
            *extra]


def test_fit_coco_then_eval_matches_pycocotools(workdir, capsys):
    data = coco_args(workdir / "coco")
    metrics = train(fit_args(data, 4, ["--trainer.enable_progress_bar", "true"]))
    captured = capsys.readouterr()
    printed = captured.out
    # FAST_MODEL keeps 50 proposals per image at test time: recall is scored at 50 only
    assert "AP50" in printed and "proposal_AR@50" in printed and "tensorboard --logdir" in printed
    assert "proposal_AR@100" not in printed
    run = workdir / "runs" / "detkit" / "roi_align" / "v0"
    assert Path(metrics["run_dir"]).resolve() == run
    assert printed.count(f"Run folder: {metrics['run_dir']}") == 2  # at start and end
    ckpt_dir = run / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert Path(metrics["checkpoint"]).resolve() == ckpt_dir / "best.ckpt"
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 4
    for name in ("config.yaml", "hparams.yaml", "run.json"):  # resolved config saved
        assert (run / name).exists(), name
    # the final evaluation's first validation images (all 3 here, resized to <= 64 px) side
    # by side in one PNG, whose path is printed
    png = run / "predictions.png"
    assert (f"(ground truth green, detections red): {Path(metrics['run_dir']) / png.name}"
            in printed)
    with Image.open(png) as drawn:
        assert drawn.mode == "RGB" and drawn.height <= 64 + 8 and drawn.width > 3 * 32
    # each validation prints one summary line; the bar counts steps toward max_steps (6 images
    # in batches of 2: epochs of 3 batches), not batches per epoch
    assert "validation at step 1 (2 steps trained): AP " in printed
    assert "validation at step 3 (4 steps trained): AP " in printed
    assert "4/4 [" in printed and "/3 [" not in printed

    out = workdir / "eval"
    evaluated = evaluate([*data, *FAST_MODEL, "--trainer.accelerator", "cpu",
                          "--ckpt", str(ckpt_dir / "last.ckpt"), "--out", str(out)])
    saved = json.loads((out / "metrics.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    assert set(saved) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
                          "ARs", "ARm", "ARl", "per_class", "proposal_AR@50"}
    assert predictions, "score_thresh 0 gives detections"
    assert {p["category_id"] for p in predictions} <= {1, 2, 5}  # original ids
    # pycocotools on predictions.json against the annotation file gives metrics.json
    gt = COCO(str(workdir / "coco" / "val.json"))
    coco_eval = COCOeval(gt, gt.loadRes(str(out / "predictions.json")), "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    for key, value in zip(keys, coco_eval.stats, strict=True):
        assert saved[key] == pytest.approx(float(value), abs=1e-12), key
    assert evaluated["AP"] == saved["AP"]
    # the final evaluation of train() used the same data (best or last checkpoint)
    assert set(metrics) >= set(keys)


def test_fit_tiny_voc(workdir):
    from tests.data.helpers import flat_voc

    flat_voc(workdir / "voc", 8)
    args = ["--data.format", "voc", "--data.root", str(workdir / "voc"), "--data.min_size", "32",
            "--data.max_size", "64", "--data.split_ratio", "0.75"]
    metrics = train(fit_args(args, 2))
    assert {"voc_AP50", "voc_AP50_07", "AP", "proposal_AR@50"} <= set(metrics)
    assert all(math.isfinite(v) for k, v in metrics.items() if isinstance(v, float))


@pytest.mark.skipif(not RACCOON.exists(), reason=f"real photographs not found at {RACCOON}")
def test_fit_raccoon_photographs(workdir):
    args = ["--data.format", "voc", "--data.root", str(RACCOON), "--data.min_size", "96",
            "--data.max_size", "128", "--trainer.limit_val_batches", "3"]
    metrics = train(fit_args(args, 2))
    assert metrics["APs"] == -1  # the raccoon set has no small objects
    assert 0 <= metrics["AP"] <= 1 and 0 <= metrics["voc_AP50"] <= 1


def test_resume_continues_from_the_checkpoint_step(workdir, monkeypatch):
    data = coco_args(workdir / "coco")
    train(fit_args(data, 4))
    run = workdir / "runs" / "detkit" / "roi_align" / "v0"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    steps_run = []
    original = DetectionModule.training_step

    def counting(self, batch, batch_idx):
        steps_run.append(self.global_step)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DetectionModule, "training_step", counting)
    metrics = train(fit_args(data, 6, ["--ckpt_path", "last"]))
    assert steps_run == [4, 5]  # continued where it stopped, did not start over
    assert Path(metrics["run_dir"]).resolve() == run  # in the run's own folder
    assert torch.load(last, weights_only=True)["global_step"] == 6
    # a new training of the same config and extractor gets its own folder
    steps_run.clear()
    assert Path(train(fit_args(data, 1))["run_dir"]).resolve() == run.with_name("v1")
    assert steps_run == [0]


def poison(monkeypatch, steps, *, loss=False):
    """At the given global steps, make the loss (or one parameter's gradient) NaN."""
    original = DetectionModule.training_step

    def poisoned(self, batch, batch_idx):
        if self.global_step in steps:
            if loss:
                losses = {"loss_classifier": torch.tensor(float("nan"))}
                monkeypatch.setattr(self.model, "forward", lambda *a, **k: losses)
            else:
                weight = next(p for p in self.parameters() if p.requires_grad)
                handle = weight.register_hook(lambda g: handle.remove() or g * float("nan"))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DetectionModule, "training_step", poisoned)


def all_finite(path):
    checkpoint = torch.load(path, weights_only=True)
    return checkpoint, all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values()
                           if v.is_floating_point())


def test_nan_loss_stops_naming_the_step_and_the_good_checkpoint(workdir, monkeypatch):
    data = coco_args(workdir / "coco")
    poison(monkeypatch, {3}, loss=True)
    last = Path("runs", "detkit", "roi_align", "v0", "checkpoints", "last.ckpt")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step 3 .*The last good "
                       rf"checkpoint is {last} \(step 2\)"):
        train(fit_args(data, 10))
    checkpoint, finite = all_finite(last)
    assert checkpoint["global_step"] == 2 and finite  # saved at the step-2 validation
    assert isinstance(load_module(last), DetectionModule)


def test_nan_gradient_with_finite_loss_stops_before_the_step(workdir, monkeypatch):
    data = coco_args(workdir / "coco")
    poison(monkeypatch, {3})
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradients in 1 of \d+ tensors "
                       r"\(model\.backbone\.\S+\) at step 3 .*good checkpoint .*\(step 3\)"):
        train(fit_args(data, 10, ["--checkpoint_every_n_steps", "1"]))
    _, finite = all_finite(workdir / "runs" / "detkit" / "roi_align" / "v0" / "checkpoints"
                           / "last.ckpt")
    assert finite


def test_nonfinite_skip_drops_the_update_and_stops_after_too_many(workdir, monkeypatch, caplog):
    data = coco_args(workdir / "coco")
    poison(monkeypatch, {1})
    weights = {}
    original = DetectionModule.on_train_batch_start

    def record(self, batch, batch_idx):
        weights[self.global_step] = [p.detach().clone() for p in self.parameters()]
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DetectionModule, "on_train_batch_start", record)
    train(fit_args(data, 3, ["--model.nonfinite", "skip"]))
    assert "optimizer step skipped (1 skipped in this run, 1 in a row" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(weights[1], weights[2], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(weights[0], weights[1], strict=True))
    poison(monkeypatch, {0, 1, 2, 3})
    with pytest.raises(NonFiniteLossError, match="2 steps in a row skipped"):
        train(fit_args(data, 6, ["--model.nonfinite", "skip", "--model.max_nonfinite_skips",
                                 "2"]))


def test_no_checkpoint_holds_a_nonfinite_tensor():
    module = DetectionModule(2, backbone="resnet18")
    state = {"global_step": 7, "state_dict": module.state_dict()}
    state["state_dict"]["model.rpn.head.conv.0.0.weight"] = torch.tensor([1.0, float("inf")])
    with pytest.raises(NonFiniteLossError, match=r"checkpoint at step 7: 1 tensors .*rpn"):
        module.on_save_checkpoint(state)


def test_config_typo_and_unknown_extractor_fail_clearly(workdir, capsys):
    data = coco_args(workdir / "coco")
    with pytest.raises(ArgumentError, match="unrecognized arguments: --model.roi_extractr"):
        train([*data, "--model.roi_extractr", "roi_align"])
    with pytest.raises(ValueError, match="valid names: roi_align"):
        train([*data, "--model.roi_extractor", "roi_warp"])


def test_lr_schedule():
    step = ScheduleSettings(kind="step", warmup_steps=10, warmup_factor=0.1, milestones=(20, 30))
    assert lr_factor(0, 40, step) == pytest.approx(0.1)
    assert lr_factor(5, 40, step) == pytest.approx(0.55)
    assert lr_factor(10, 40, step) == 1.0
    assert lr_factor(25, 40, step) == pytest.approx(0.1)
    assert lr_factor(35, 40, step) == pytest.approx(0.01)
    cosine = ScheduleSettings(kind="cosine", warmup_steps=0)
    assert lr_factor(0, 100, cosine) == 1.0
    assert lr_factor(50, 100, cosine) == pytest.approx(0.5)
    assert lr_factor(100, 100, cosine) == pytest.approx(0.0)


@pytest.mark.parametrize(("steps", "extra", "validated_again"), [
    (2, [], 0), (3, [], 1), (2, ["--data.val_max_images", "2"], 1)])
def test_the_final_evaluation_reuses_the_last_validation_of_the_final_weights(
        workdir, monkeypatch, steps, extra, validated_again):
    """One validation, at step 2: a run of 2 steps ends on it, so its best checkpoint is the
    final state, just scored, and is not validated a second time; a run of 3 steps trained on
    after it, so its best checkpoint (step 2) is loaded and validated; so is a run whose
    validations scored a subset (2 of the 3 images). Either way the metrics are those of
    evaluating the best checkpoint afresh, on every validation image."""
    import lightning as L

    calls = []
    validate = L.Trainer.validate
    monkeypatch.setattr(L.Trainer, "validate",
                        lambda self, *a, **k: calls.append(1) or validate(self, *a, **k))
    data = coco_args(workdir / "coco")
    metrics = train(fit_args(data, steps, extra))
    assert torch.load(metrics["checkpoint"], weights_only=True)["global_step"] == 2
    assert len(calls) == validated_again  # fit's own validations do not call Trainer.validate
    fresh = evaluate([*data, *FAST_MODEL, "--trainer.accelerator", "cpu",
                      "--ckpt", metrics["checkpoint"], "--out", str(workdir / "eval")])
    for key in ("AP", "AP50", "APs", "AR100", "proposal_AR@50"):
        assert metrics[key] == fresh[key], key
