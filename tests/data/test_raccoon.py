"""The real raccoon photographs (Pascal VOC XML, flat layout) from ../shared/datasets."""

from pathlib import Path

import pytest
import torch

from detkit.data import VocDetection, collate, eval_transforms, train_transforms

# ../shared beside the repository (or shared/ inside a copy of it)
_CANDIDATES = [p / "shared" / "datasets" / "raccoon" for p in Path(__file__).resolve().parents[2:4]]
RACCOON = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[-1])

pytestmark = pytest.mark.skipif(
    not (RACCOON / "annotations").is_dir(),
    reason="the raccoon photographs (annotations/ and images/) are in neither "
    f"{' nor '.join(map(str, _CANDIDATES))}: put them in ../shared/datasets/raccoon beside the "
    "repository",
)


def test_loads_all_200_images_and_217_boxes():
    ds = VocDetection(RACCOON, split_ratio=1.0)
    assert len(ds) == 200
    assert ds.category_names == ["raccoon"]
    assert ds.stats["annotations"] == 217
    assert ds.stats["boxes_dropped_empty"] == 0 and ds.stats["difficult_excluded"] == 0
    assert sum(len(g["boxes"]) for g in ds.voc_ground_truth().values()) == 217
    assert len(ds.coco_gt.getAnnIds()) == 217
    assert sum(len(r.boxes_xyxy) for r in ds.records) == 217


def test_train_val_split_is_disjoint_and_deterministic():
    train = VocDetection(RACCOON, subset="train")
    val = VocDetection(RACCOON, subset="val")
    assert (len(train), len(val)) == (160, 40)
    assert set(train.image_ids).isdisjoint(val.image_ids)
    assert sorted(train.image_ids + val.image_ids) == list(range(1, 201))
    assert VocDetection(RACCOON, subset="val").image_ids == val.image_ids
    assert train.stats["annotations"] + val.stats["annotations"] == 217


def test_items_follow_the_contract():
    ds = VocDetection(RACCOON, subset="val", transforms=eval_transforms(320, 512))
    images, targets = collate([ds[0], ds[1]])
    for image, target in zip(images, targets, strict=True):
        assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
        assert tuple(image.shape[1:]) == target["input_size"]
        assert min(target["input_size"]) == 320 or max(target["input_size"]) == 512
        boxes, labels = target["boxes_xyxy"], target["labels"]
        assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert labels.dtype == torch.int64 and labels.shape == (boxes.shape[0],)
        assert (labels == 1).all() and len(labels) >= 1
        assert isinstance(target["image_id"], int) and target["image_id"] in ds.image_ids
        h, w = target["orig_size"]
        assert ds.coco_gt.loadImgs(target["image_id"])[0]["height"] == h
        assert (boxes[:, 2] <= target["input_size"][1] + 1e-3).all()
        assert (boxes[:, 3] <= target["input_size"][0] + 1e-3).all()
    image, target = VocDetection(RACCOON, transforms=train_transforms(256, 400))[3]
    assert image.shape[0] == 3 and target["boxes_xyxy"].shape[1] == 4
