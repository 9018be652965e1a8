"""--model.init.frozen_cache: head-only runs share their frozen front (backbone, FPN and RPN
outputs per step) and train exactly as they would alone."""

from pathlib import Path

import pytest
import torch

from detkit.engine.frozen_front import FrozenFrontStore, front_key
from detkit.engine.module import DetectionModule, InitSettings
from detkit.engine.runs import run_key
from tests.engine.helpers import FAST_MODEL, FAST_TRAINER, coco_args
from tests.engine.test_init_from import fit, weights

STEPS = 4  # 6 training images in batches of 2: the fourth step starts a second epoch


@pytest.fixture
def donor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = coco_args(tmp_path / "coco")
    return data, fit(data, tmp_path / "donor")["checkpoint"]


def head_only(data, donor, run_dir, extractor, cache=None):
    from detkit.engine.cli import train

    return train([*data, *FAST_MODEL, *FAST_TRAINER, "--trainer.max_steps", str(STEPS),
                  "--trainer.val_check_interval", str(STEPS),
                  "--trainer.check_val_every_n_epoch", "null", "--run_dir", str(run_dir),
                  "--model.roi_extractor", extractor, "--model.init.checkpoint", donor,
                  "--model.init.freeze", "[backbone,fpn,rpn]",
                  *([] if cache is None else ["--model.init.frozen_cache", str(cache)])])


def test_runs_that_read_the_shared_front_train_bit_identically(donor, tmp_path):
    data, checkpoint = donor
    cache = tmp_path / "front"
    # the first run computes and stores every step's front, the second reads them all
    writer = head_only(data, checkpoint, tmp_path / "w", "roi_align", cache)
    reader = head_only(data, checkpoint, tmp_path / "r", "deform_roi_pool", cache)
    assert writer["frozen_front"] == {"read": 0, "computed": STEPS}
    assert reader["frozen_front"] == {"read": STEPS, "computed": 0}
    (front,) = [p for p in cache.iterdir() if p.is_dir()]
    assert len(list(front.glob("step*.pt"))) == STEPS
    for name, cached in (("roi_align", writer), ("deform_roi_pool", reader)):
        alone = head_only(data, checkpoint, tmp_path / f"alone_{name}", name)
        assert "frozen_front" not in alone
        ours, theirs = weights(cached["checkpoint"]), weights(alone["checkpoint"])
        trained = [k for k in ours if k.startswith("roi_heads.")]
        assert trained and all(torch.equal(ours[k], theirs[k]) for k in ours), name
        assert cached["AP"] == alone["AP"] and cached["AR100"] == alone["AR100"]
    # the cache does not enter the run key: the runs are the same runs
    assert (tmp_path / "w" / "run.json").read_text() == (
        tmp_path / "alone_roi_align" / "run.json").read_text()


def test_a_step_file_of_another_batch_is_an_error_not_a_swap(tmp_path):
    store = FrozenFrontStore(tmp_path, {"data.seed": 0})
    images = torch.rand(2, 3, 8, 8)
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([1])}] * 2

    def compute():
        torch.rand(5)  # the RPN's sampler draws from torch's RNG
        return ({"p2": images * 2}, [torch.zeros(3, 4)], {"loss_objectness": torch.tensor(0.5)})

    torch.manual_seed(7)
    features, _, _ = store.front(0, images, targets, compute)
    after_computing = torch.rand(3)
    torch.manual_seed(99)  # the reader's RNG is set to the state after the writer's RPN
    read, proposals, losses = store.front(0, images, targets, compute)
    assert torch.equal(read["p2"], features["p2"]) and torch.equal(torch.rand(3), after_computing)
    assert losses["loss_objectness"] == 0.5 and proposals[0].shape == (3, 4)
    assert (store.reads, store.writes) == (1, 1)
    other = [{"boxes": torch.tensor([[1.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([1])}] * 2
    with pytest.raises(RuntimeError, match="holds the frozen front of another batch than step 0"):
        store.front(0, images, other, compute)


def test_the_front_key_leaves_out_what_only_the_head_sees():
    key = {"model.roi_extractor": "roi_align", "model.roi_extractor_args.output_size": 7,
           "model.roi_head.representation_size": 256, "model.optimizer.lr": 0.001,
           "trainer.max_steps": 1000, "data.synthetic.deformation": "none",
           "seed_everything": 0, "model.rpn.post_nms_top_n_train": 500,
           "model.init.checkpoint_sha256": "ab"}
    assert front_key(key) == {"data.synthetic.deformation": "none", "seed_everything": 0,
                              "model.rpn.post_nms_top_n_train": 500,
                              "model.init.checkpoint_sha256": "ab"}
    base = {"model": {"roi_extractor": "roi_align", "init": {"freeze": ["rpn"]}}}
    cached = {"model": {"roi_extractor": "roi_align",
                        "init": {"freeze": ["rpn"], "frozen_cache": "x"}}}
    assert run_key(cached) == run_key(base)


def test_only_the_most_recent_fronts_are_kept(tmp_path):
    first = FrozenFrontStore(tmp_path, {"seed_everything": 0}).directory
    second = FrozenFrontStore(tmp_path, {"seed_everything": 1}).directory
    (tmp_path / "not_a_front").mkdir()
    assert first.exists() and second.exists()
    third = FrozenFrontStore(tmp_path, {"seed_everything": 2}).directory
    assert not first.exists() and second.exists() and third.exists()
    assert (tmp_path / "not_a_front").exists()


def test_the_cache_needs_a_frozen_front_and_one_batch_per_step(tmp_path):
    with pytest.raises(ValueError, match=r"model.init.freeze must hold all three, got \['rpn'\]"):
        DetectionModule(3, init=InitSettings(freeze=("rpn",), frozen_cache=str(tmp_path)))
    module = DetectionModule(3, init=InitSettings(freeze=("backbone", "fpn", "rpn"),
                                                  frozen_cache=str(tmp_path)))
    with pytest.raises(ValueError, match="accumulate_grad_batches at 1"):
        module.share_frozen_front({}, accumulate_grad_batches=2)
    uncached = DetectionModule(3)
    uncached.share_frozen_front({})
    assert uncached.frozen_front is None and not any(Path(tmp_path).iterdir())
