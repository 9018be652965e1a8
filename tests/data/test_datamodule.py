import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.trainer.states import TrainerFn

from detkit.data import DetectionDataModule
from detkit.data.datamodule import val_subset_indices
from detkit.data.synthetic import CATEGORY_NAMES, SceneSpec, SyntheticSpec, ensure_dataset
from tests.data.helpers import flat_voc, small_coco

SMALL = {"min_size": 32, "max_size": 64}


def _coco_module(tmp_path, **kwargs) -> DetectionDataModule:
    images_dir, ann_file = small_coco(tmp_path)
    return DetectionDataModule(format="coco", train_images=str(images_dir),
                               train_ann=str(ann_file), val_images=str(images_dir),
                               val_ann=str(ann_file), **SMALL, **kwargs)


def _check_batch(batch, batch_size: int, num_classes: int) -> None:
    images, targets = batch
    assert isinstance(images, list) and isinstance(targets, list)
    assert len(images) == len(targets) == batch_size
    for image, target in zip(images, targets, strict=True):
        assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
        assert tuple(image.shape[1:]) == target["input_size"]
        assert set(target) == {"boxes_xyxy", "labels", "image_id", "orig_size", "input_size"}
        boxes, labels = target["boxes_xyxy"], target["labels"]
        assert boxes.dtype == torch.float32 and boxes.shape == (len(labels), 4)
        assert labels.dtype == torch.int64
        assert ((labels >= 1) & (labels <= num_classes)).all()
        assert isinstance(target["image_id"], int)
        assert len(target["orig_size"]) == 2


def test_coco_setup_and_one_train_batch(tmp_path):
    dm = _coco_module(tmp_path, batch_size=2)
    dm.setup("fit")
    assert dm.num_classes == 3
    assert dm.category_names == ["three", "seven", "eleven"]
    assert dm.label_to_category_id == [-1, 3, 7, 11]
    assert sorted(dm.val_dataset.coco_gt.getCatIds()) == [3, 7, 11]
    _check_batch(next(iter(dm.train_dataloader())), 2, 3)
    images, targets = next(iter(dm.val_dataloader()))
    assert [t["image_id"] for t in targets] == [1, 2]  # val is not shuffled
    assert [min(t["input_size"]) for t in targets] == [32, 32]  # no jitter at eval


def test_validate_stage_builds_only_val(tmp_path):
    dm = _coco_module(tmp_path)
    dm.setup("validate")
    assert dm.train_dataset is None and dm.num_classes == 3


def test_voc_setup_and_one_train_batch(tmp_path):
    flat_voc(tmp_path, 6)
    dm = DetectionDataModule(format="voc", root=str(tmp_path), split_ratio=0.5, batch_size=3,
                             **SMALL)
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.category_names == ["cat", "dog"]
    assert dm.label_to_category_id == [-1, 1, 2]
    assert len(dm.train_dataset) == len(dm.val_dataset) == 3
    assert set(dm.train_dataset.image_ids).isdisjoint(dm.val_dataset.image_ids)
    assert len(dm.val_dataset.coco_gt.getImgIds()) == 3
    _check_batch(next(iter(dm.train_dataloader())), 3, 2)


def test_synthetic_setup_and_one_train_batch(tmp_path):
    spec = SyntheticSpec(seed=2, image_size=128, train_images=4, val_images=2, test_images=1,
                         scene=SceneSpec(max_objects=3, max_object_size=110, max_distractors=2))
    root = tmp_path / "synthetic"
    ensure_dataset(root, spec)  # a tiny set; the DataModule reuses whatever set root holds
    dm = DetectionDataModule(format="synthetic", root=str(root), batch_size=2, **SMALL)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 6 and dm.category_names == list(CATEGORY_NAMES)
    assert dm.label_to_category_id == [-1, 1, 2, 3, 4, 5, 6]
    assert len(dm.train_dataset) == 4 and len(dm.val_dataset) == 2
    assert dm.coco_paths["val_ann"] == str(root / "annotations" / "instances_val.json")
    _check_batch(next(iter(dm.train_dataloader())), 2, 6)
    _check_batch(next(iter(dm.val_dataloader())), 2, 6)


@pytest.mark.parametrize("kwargs, names", [
    ({"format": "coco", "train_images": "x"}, ["train_ann", "val_images", "val_ann"]),
    ({"format": "coco", "train_images": "a", "train_ann": "b", "val_images": "c"}, ["val_ann"]),
    ({"format": "voc"}, ["root"]),
    ({"format": "voc", "root": "r", "train_split": "train"}, ["val_split"]),
    ({"format": "coco", "class_names": ["a"], "train_images": "a", "train_ann": "b",
      "val_images": "c", "val_ann": "d"}, ["class_names"]),
    ({"format": "yolo"}, ["format"]),
])
def test_missing_or_wrong_arguments_are_named(kwargs, names):
    with pytest.raises(ValueError) as info:
        DetectionDataModule(**kwargs)
    for name in names:
        assert name in str(info.value)


def _epoch(dm: DetectionDataModule, seed: int, draws: int = 0) -> list:
    seed_everything(seed, workers=True, verbose=False)
    torch.rand(draws)  # what building a model with more parameters draws
    loader = dm.train_dataloader()
    samples = [(t["image_id"], image) for images, targets in loader
               for image, t in zip(images, targets, strict=True)]
    del loader  # stops persistent workers
    return samples


@pytest.mark.parametrize("num_workers", [0, 2])
def test_seeded_runs_repeat_their_augmentation(tmp_path, num_workers):
    dm = _coco_module(tmp_path, num_workers=num_workers, color_jitter=0.3, crop_border=0.2)
    dm.setup("fit")
    first, second, other = _epoch(dm, 3), _epoch(dm, 3, draws=1000), _epoch(dm, 4)
    assert len(first) == 4
    # the same batches after other random draws (another model): a function of the seed only
    assert [i for i, _ in first] == [i for i, _ in second]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, second, strict=True))
    by_id = dict(first)
    assert any(by_id[i].shape != image.shape or not torch.equal(by_id[i], image)
               for i, image in other)


def test_val_max_images_scores_a_fixed_subset_while_fitting_and_all_otherwise(tmp_path):
    dm = _coco_module(tmp_path, val_max_images=2)
    dm.setup("fit")
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    dm.trainer = trainer
    expected = val_subset_indices(4, 2)
    assert expected == val_subset_indices(4, 2) and len(set(expected)) == 2
    assert expected == sorted(expected) and set(expected) <= {0, 1, 2, 3}
    trainer.state.fn = TrainerFn.FITTING
    fit_ids = [t["image_id"] for _, targets in dm.val_dataloader() for t in targets]
    assert fit_ids == [dm.val_dataset.image_ids[i] for i in expected]
    trainer.state.fn = TrainerFn.VALIDATING  # trainer.validate: the final / tools/eval.py run
    all_ids = [t["image_id"] for _, targets in dm.val_dataloader() for t in targets]
    assert all_ids == dm.val_dataset.image_ids == [1, 2, 3, 4]
    assert val_subset_indices(4, 9) == [0, 1, 2, 3]
    # the train set keeps no annotation dicts; the val set builds coco_gt
    assert dm.train_dataset._coco_gt_dataset is None
    assert dm.val_dataset.coco_gt.getImgIds() == [1, 2, 3, 4]


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_val_max_images_rejects_non_positive_integers(tmp_path, value):
    with pytest.raises(ValueError, match=f"val_max_images must be None or an integer >= 1, "
                       f"got {value!r}"):
        _coco_module(tmp_path, val_max_images=value)
