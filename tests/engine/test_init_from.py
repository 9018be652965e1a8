"""--model.init: start a run's backbone, FPN and RPN from another run's checkpoint and freeze
them (the study's head-only protocol); the run key follows the file's content."""

from pathlib import Path

import pytest
import torch

from detkit.engine.cli import evaluate, load_module, train
from detkit.engine.module import DetectionModule, InitSettings
from detkit.engine.runs import read_key, run_key
from tests.engine.helpers import FAST_MODEL, FAST_TRAINER, coco_args

FROZEN = ("backbone.body.body.", "backbone.body.fpn.", "rpn.")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fit(data, run_dir, extra=()):
    return train([*data, *FAST_MODEL, *FAST_TRAINER, "--trainer.max_steps", "3",
                  "--trainer.val_check_interval", "3", "--trainer.check_val_every_n_epoch",
                  "null", "--run_dir", str(run_dir), *extra])


def weights(checkpoint):
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def test_a_head_only_run_keeps_the_donors_parts_and_trains_the_head(workdir):
    data = coco_args(workdir / "coco")
    donor = Path(fit(data, workdir / "donor")["checkpoint"])
    metrics = fit(data, workdir / "head", ["--model.init.checkpoint", str(donor),
                                           "--model.init.freeze", "[backbone,fpn,rpn]"])
    theirs, ours = weights(donor), weights(metrics["checkpoint"])
    for name, tensor in ours.items():
        if name.startswith(FROZEN):  # copied, then never trained
            assert torch.equal(tensor, theirs[name]), name
    head = [n for n in ours if n.startswith("roi_heads.box_head.")]
    assert head and not any(torch.equal(ours[n], theirs[n]) for n in head)  # fresh and trained
    key = read_key(workdir / "head")
    assert key["model.init.freeze"] == ["backbone", "fpn", "rpn"]
    assert len(key["model.init.checkpoint_sha256"]) == 64
    # the run's checkpoint holds every weight: it loads without the donor's file
    donor.rename(donor.with_name("moved.ckpt"))
    saved = torch.load(metrics["checkpoint"], weights_only=True)["hyper_parameters"]
    assert saved["init"]["checkpoint"] == str(donor)  # recorded with the run
    module = load_module(metrics["checkpoint"])  # and not read again
    assert module.hparams["trainable_layers"] == 0
    assert not any(p.requires_grad for p in module.model.backbone.parameters())
    assert all(p.requires_grad for p in module.model.roi_heads.parameters())
    # eval.py with the run's own config.yaml, which names the moved donor, reads only --ckpt
    scored = evaluate(["--config", str(workdir / "head" / "config.yaml"),
                       "--ckpt", metrics["checkpoint"], "--out", str(workdir / "eval")])
    assert scored["AP"] == pytest.approx(metrics["AP"])


def test_contradictory_or_bad_init_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="both give the backbone"):
        DetectionModule(3, backbone_weights="imagenet",
                        init=InitSettings(checkpoint=str(tmp_path / "a.ckpt")))
    with pytest.raises(ValueError, match="model.init.freeze has 'backbone' but "
                                         "model.trainable_layers is 3"):
        DetectionModule(3, trainable_layers=3, init=InitSettings(freeze=("backbone",)))
    with pytest.raises(ValueError, match="model.init.freeze entry must be 'backbone', 'fpn', "
                                         "'rpn' or 'roi_heads', got 'heads'"):
        DetectionModule(3, init=InitSettings(freeze=("heads",)))
    with pytest.raises(FileNotFoundError, match=r"model.init.checkpoint .*a.ckpt does not exist"):
        DetectionModule(3, init=InitSettings(checkpoint=str(tmp_path / "a.ckpt")))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "b.pth")
    with pytest.raises(ValueError, match="is not a detkit training checkpoint"):
        DetectionModule(3, init=InitSettings(checkpoint=str(tmp_path / "b.pth")))


def test_the_run_key_leaves_default_init_out_and_hashes_the_checkpoint(tmp_path):
    """Runs keyed before model.init existed keep their keys; another file at the same path makes
    another run."""
    base = {"model": {"roi_extractor": "roi_align"}, "trainer": {"max_steps": 4}}
    default = {"checkpoint": None, "parts": ["backbone", "fpn", "rpn"], "freeze": []}
    assert run_key({**base, "model": {**base["model"], "init": default}}) == run_key(base)
    path = tmp_path / "donor.ckpt"
    path.write_bytes(b"first")
    config = {**base, "model": {**base["model"], "init": {**default, "checkpoint": str(path),
                                                          "freeze": ["backbone"]}}}
    first = run_key(config)
    assert first["model.init.freeze"] == ["backbone"] and "model.init.parts" not in first
    path.write_bytes(b"second")
    assert run_key(config)["model.init.checkpoint_sha256"] != first["model.init.checkpoint_sha256"]
