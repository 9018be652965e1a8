"""--model.init.frozen_cache: head-only runs share their frozen front (backbone, FPN and RPN
outputs per step) and train exactly as they would alone."""

import os
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from detkit.engine.frozen_front import FrozenFrontStore, batch_digest, front_key
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
    (front,) = [p for p in cache.iterdir() if p.is_dir()]
    assert len(list(front.glob("step*.pt"))) == STEPS
    val_batches = len(list(front.glob("val*.pt")))  # the validation's batches, stored too
    assert val_batches > 0
    assert writer["frozen_front"] == {"read": 0, "computed": STEPS, "val_read": 0,
                                      "val_computed": val_batches}
    assert reader["frozen_front"] == {"read": STEPS, "computed": 0, "val_read": val_batches,
                                      "val_computed": 0}
    assert not list((front / ".in_use").iterdir())  # both runs closed it
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


def batch(shift=0.0, dtype=torch.float32):
    images = ImageList(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
                       .to(dtype), [(8, 8), (8, 6)])
    targets = [{"boxes": torch.tensor([[shift, 0.0, 4.0, 4.0]]), "labels": torch.tensor([1])}]
    return images, targets * 2


def front_of(images, value=2.0):
    def compute():
        torch.rand(5)  # the RPN's sampler draws from torch's RNG
        return ({"p2": images.tensors * value}, [torch.zeros(3, 4)],
                {"loss_objectness": torch.tensor(0.5)})
    return compute


def test_a_stored_front_is_read_with_the_rng_state_after_it_and_checked_once(tmp_path):
    store = FrozenFrontStore(tmp_path, {"data.seed": 0})
    images, targets = batch()
    torch.manual_seed(7)
    features, _, _ = store.front(0, images, targets, front_of(images))
    after_computing = torch.rand(3)
    reader = FrozenFrontStore(tmp_path, {"data.seed": 0})
    assert reader.directory == store.directory
    # the first read is also computed and compared (the RNG state after it too: a reader starts
    # its step from the writer's state), the second is only read, and sets the RNG to the state
    # after the writer's RPN whatever it was before
    for seed in (7, 99):
        torch.manual_seed(seed)
        read, proposals, losses = reader.front(0, images, targets, front_of(images))
        assert torch.equal(read["p2"], features["p2"]) and torch.equal(torch.rand(3),
                                                                       after_computing)
        assert losses["loss_objectness"] == 0.5 and proposals[0].shape == (3, 4)
    assert (reader.reads, reader.writes, reader.verified) == (2, 0, True)


def test_a_validation_batch_is_read_without_touching_the_rng(tmp_path):
    """Validation batches have their own files and their own first-read check, and a read
    leaves torch's RNG where this run has it (no per-step reseeding there)."""
    images, _ = batch()

    def val_front():  # an RPN in eval mode draws nothing
        return {"p2": images.tensors * 2.0}, [torch.zeros(3, 4)], {}

    store = FrozenFrontStore(tmp_path, {"data.seed": 0})
    torch.manual_seed(1)
    features, _, _ = store.front(0, images, None, val_front, stage="val")
    torch.manual_seed(2)
    store.front(0, images, None, front_of(images), stage="train")  # step 0: another file
    assert [p.name[:4] for p in sorted(store.directory.glob("*.pt"))] == ["step", "val0"]
    reader = FrozenFrontStore(tmp_path, {"data.seed": 0})
    for seed in (5, 6):  # verified on the first read (RNG not compared), then only read
        torch.manual_seed(seed)
        expected = torch.rand(3)
        torch.manual_seed(seed)
        read, _, _ = reader.front(0, images, None, val_front, stage="val")
        assert torch.equal(read["p2"], features["p2"]) and torch.equal(torch.rand(3), expected)
    assert reader.read_counts == {"train": 0, "val": 2} and not reader.verified
    torch.manual_seed(2)  # the training step's first read is checked on its own
    reader.front(0, images, None, front_of(images), stage="train")
    assert reader.verified and reader.reads == 1
    with pytest.raises(ValueError, match="stage must be one of"):
        reader.front(0, images, None, front_of(images), stage="test")


def test_another_batch_at_a_step_is_computed_never_swapped(tmp_path):
    """A resumed run's augmentation restarts, so its batch at a step can differ from the one
    stored there: it gets its own file."""
    store = FrozenFrontStore(tmp_path, {"data.seed": 0})
    images, targets = batch()
    store.front(0, images, targets, front_of(images, 2.0))
    _, other = batch(shift=1.0)
    features, _, _ = store.front(0, images, other, front_of(images, 3.0))
    assert torch.equal(features["p2"], images.tensors * 3.0)
    assert (store.reads, store.writes) == (0, 2)
    assert len(list(store.directory.glob("step0_*.pt"))) == 2
    small = ImageList(images.tensors, [(8, 8), (6, 6)])  # other sizes: another batch too
    assert batch_digest(small, targets) != batch_digest(images, targets)
    half, _ = batch(dtype=torch.bfloat16)  # any dtype hashes
    assert batch_digest(half, targets) != batch_digest(images, targets)


def test_a_front_written_by_other_code_is_recomputed_and_dropped(tmp_path, caplog):
    images, targets = batch()
    torch.manual_seed(3)  # each step starts from the same RNG state, as step seeding makes it
    FrozenFrontStore(tmp_path, {"data.seed": 0}).front(0, images, targets, front_of(images, 2.0))
    store = FrozenFrontStore(tmp_path, {"data.seed": 0})
    store.front(5, images, targets, front_of(images, 2.0))  # another step, to be dropped too
    reader = FrozenFrontStore(tmp_path, {"data.seed": 0})
    torch.manual_seed(3)
    features, _, _ = reader.front(0, images, targets, front_of(images, 2.5))  # "new code"
    assert torch.equal(features["p2"], images.tensors * 2.5) and reader.reads == 0
    assert "does not match the front computed now" in caplog.text
    assert [p.name.split("_")[0] for p in reader.directory.glob("step*.pt")] == ["step0"]
    again = FrozenFrontStore(tmp_path, {"data.seed": 0})
    torch.manual_seed(3)
    features, _, _ = again.front(0, images, targets, front_of(images, 2.5))
    assert again.reads == 1 and torch.equal(features["p2"], images.tensors * 2.5)


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


def test_only_the_most_recent_fronts_are_kept_and_none_in_use(tmp_path):
    def front(seed, age):
        store = FrozenFrontStore(tmp_path, {"seed_everything": seed}, keep=2)
        os.utime(store.directory, (1e9 + age, 1e9 + age))
        return store

    first, second = front(0, 1), front(1, 2)
    first.close()
    second.close()
    (tmp_path / "not_a_front").mkdir()
    third = front(2, 3)  # keeps the one most recent unused front (second)
    assert not first.directory.exists() and second.directory.exists()
    fourth = front(3, 4)  # third is still open: it stays, second is the older unused one
    assert third.directory.exists() and second.directory.exists()
    fourth.close()
    front(4, 5)  # unused: fourth (kept, the more recent) and second
    assert not second.directory.exists() and third.directory.exists()
    assert fourth.directory.exists() and (tmp_path / "not_a_front").exists()
    third.close()
    assert not list((third.directory / ".in_use").iterdir())


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
