import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader, Dataset

from detkit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CocoDetection,
    ResizeShortestSide,
    collate,
    seed_transforms,
    seed_worker,
    train_transforms,
)
from detkit.data._albumentations import A
from tests.data.helpers import small_coco


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_horizontal_flip_moves_boxes_and_pixels():
    image = _noise(40, 60)
    boxes = np.array([[5.0, 6.0, 25.0, 16.0], [30.0, 0.0, 60.0, 40.0]])
    t = train_transforms(40, 1000, hflip=1.0, scale_jitter=(1.0, 1.0))
    out = t(image=image, bboxes=boxes, labels=np.array([1, 2]))
    # by hand: x -> W - x, so (x1, x2) -> (W - x2, W - x1) with W = 60
    expected = [[35.0, 6.0, 55.0, 16.0], [0.0, 0.0, 30.0, 40.0]]
    np.testing.assert_allclose(out["bboxes"], expected, atol=1e-4)
    assert list(out["labels"]) == [1, 2]
    flipped = (image[:, ::-1] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    torch.testing.assert_close(out["image"], torch.tensor(flipped).permute(2, 0, 1).float(),
                               atol=1e-5, rtol=0)


def test_min_visibility_drops_a_mostly_cropped_box():
    # A box in the left 10% of the image and one in the centre. crop_border=0.4 cuts 0..40 px
    # from each side of a 100x100 image: the centre box always survives whole, the left one
    # keeps (10 - x_min) / 10 of its area.
    image = _noise(100, 100)
    boxes = np.array([[0.0, 40.0, 10.0, 60.0], [40.0, 40.0, 60.0, 60.0]])
    labels = np.array([1, 2])
    kwargs = {"hflip": 0.0, "scale_jitter": (1.0, 1.0), "crop_border": 0.4}
    keep_all = train_transforms(100, 1000, min_visibility=0.0, **kwargs)
    strict = train_transforms(100, 1000, min_visibility=0.3, **kwargs)
    dropped_by_visibility = 0
    for seed in range(80):
        seed_transforms(keep_all, seed)
        seed_transforms(strict, seed)  # same seed -> same crop
        a = keep_all(image=image, bboxes=boxes, labels=labels)
        b = strict(image=image, bboxes=boxes, labels=labels)
        assert torch.equal(a["image"], b["image"])
        pairs = zip(a["bboxes"], a["labels"], strict=True)
        widths = {int(label): box[2] - box[0] for box, label in pairs}
        assert 2 in widths and 2 in list(b["labels"])  # centre box always kept
        visibility = widths.get(1, 0.0) / widths[2] * 20 / 10
        if visibility >= 0.35:
            assert 1 in list(b["labels"])
        elif visibility <= 0.25:
            assert 1 not in list(b["labels"])
            dropped_by_visibility += 0 < visibility
    assert dropped_by_visibility > 0


@pytest.mark.parametrize("hw, expected", [((100, 400), (25, 100)), ((50, 40), (62, 50))])
def test_resize_shortest_side_caps_the_longest(hw, expected):
    # (100, 400): 50 / 100 = 0.5 would make the long side 200 > 100, so 100 / 400 = 0.25 wins
    # (50, 40): shorter side 40 -> 50, factor 1.25, 50 * 1.25 = 62.5 -> 62 (round half to even)
    t = A.Compose([ResizeShortestSide(50, 100)])
    assert t(image=_noise(*hw))["image"].shape[:2] == expected


def test_scale_jitter_multiplies_the_target_sizes():
    t = A.Compose([ResizeShortestSide(100, 1000, scale_range=(0.5, 1.5))])
    seed_transforms(t, 0)
    shorter = {min(t(image=_noise(80, 90))["image"].shape[:2]) for _ in range(40)}
    assert min(shorter) >= 50 and max(shorter) <= 150 and len(shorter) > 10


def test_seed_transforms_does_not_correlate_children():
    image = np.arange(4, dtype=np.uint8).reshape(2, 2, 1).repeat(3, axis=2)

    def outcomes(t):
        return {tuple(t(image=image)["image"][..., 0].ravel()) for _ in range(32)}

    flips = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    # albumentations' own seed= gives each child the same generator seed: both flip or neither
    assert outcomes(A.Compose(flips, seed=1)) <= {(0, 1, 2, 3), (3, 2, 1, 0)}
    ours = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    seed_transforms(ours, 1)
    assert len(outcomes(ours)) == 4


def _augmenting_dataset(tmp_path):
    t = train_transforms(32, 64, hflip=0.5, scale_jitter=(0.7, 1.3), color_jitter=0.3,
                         crop_border=0.2)
    return CocoDetection(*small_coco(tmp_path), transforms=t)


def _epoch(dataset, seed: int, num_workers: int) -> list:
    seed_everything(seed, workers=True, verbose=False)
    if num_workers == 0:
        seed_transforms(dataset, int(torch.randint(0, 2**62, ()).item()))  # as the DataModule
    loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=num_workers,
                        collate_fn=collate, worker_init_fn=seed_worker)
    return [(t["image_id"], image, t["boxes_xyxy"])
            for images, targets in loader for image, t in zip(images, targets, strict=True)]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and x[1].shape == y[1].shape and torch.equal(x[1], y[1])
        and torch.equal(x[2], y[2]) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_same_seed_same_samples_through_a_dataloader(tmp_path, num_workers):
    dataset = _augmenting_dataset(tmp_path)
    first = _epoch(dataset, 7, num_workers)
    second = _epoch(dataset, 7, num_workers)
    assert len(first) == 4 and _same(first, second)
    assert _augmentation_differs(first, _epoch(dataset, 8, num_workers))


def _augmentation_differs(a: list, b: list) -> bool:
    """Some image id got a different augmented image (not only another order)."""
    by_id = {image_id: image for image_id, image, _ in a}
    return any(by_id[i].shape != image.shape or not torch.equal(by_id[i], image)
               for i, image, _ in b)


class _Repeat(Dataset):
    """The same image at every index (to see what each worker's transforms draw)."""

    def __init__(self, dataset: CocoDetection) -> None:
        self.dataset, self.transforms = dataset, dataset.transforms

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        return self.dataset[0]


def test_workers_draw_different_augmentations(tmp_path):
    repeat = _Repeat(_augmenting_dataset(tmp_path))
    seed_transforms(repeat, 0)

    def images(worker_init_fn):
        loader = DataLoader(repeat, batch_size=1, num_workers=2, collate_fn=collate,
                            worker_init_fn=worker_init_fn)
        return [images[0] for images, _ in loader]  # index 0 -> worker 0, index 1 -> worker 1

    a, b = images(None)
    assert torch.equal(a, b)  # without seeding, both workers inherit one generator state
    a, b = images(seed_worker)
    assert a.shape != b.shape or not torch.equal(a, b)
