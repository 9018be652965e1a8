import json
import math
from argparse import ArgumentError
from pathlib import Path

import pytest
import torch
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
    metrics = train(fit_args(data, 4))
    printed = capsys.readouterr().out
    # FAST_MODEL keeps 50 proposals per image at test time: recall is scored at 50 only
    assert "AP50" in printed and "proposal_AR@50" in printed and "tensorboard --logdir" in printed
    assert "proposal_AR@100" not in printed
    ckpt_dir = workdir / "runs" / "detkit" / "checkpoints"
    assert (ckpt_dir / "last.ckpt").exists()
    assert any(p.name.startswith("best-step") for p in ckpt_dir.iterdir())
    assert (workdir / "runs" / "detkit" / "config.yaml").exists()  # resolved config saved

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
    last = workdir / "runs" / "detkit" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    steps_run = []
    original = DetectionModule.training_step

    def counting(self, batch, batch_idx):
        steps_run.append(self.global_step)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DetectionModule, "training_step", counting)
    train(fit_args(data, 6, ["--ckpt_path", "last"]))
    assert steps_run == [4, 5]  # continued where it stopped, did not start over
    assert torch.load(last, weights_only=True)["global_step"] == 6


def test_nan_loss_stops_naming_the_step_and_keeps_last_checkpoint(workdir, monkeypatch):
    data = coco_args(workdir / "coco")
    original = DetectionModule.training_step

    def poisoned(self, batch, batch_idx):
        if self.global_step == 3:
            losses = {"loss_classifier": torch.tensor(float("nan"))}
            monkeypatch.setattr(self.model, "forward", lambda *a, **k: losses)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DetectionModule, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3"):
        train(fit_args(data, 10))
    last = workdir / "runs" / "detkit" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 2  # saved at the step-2 validation, before the NaN
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values()
               if v.is_floating_point())
    assert isinstance(load_module(last), DetectionModule)


def test_config_typo_and_unknown_extractor_fail_clearly(workdir):
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
