import re

import pytest
import torch

from detkit.data import VocDetection, eval_transforms, parse_voc_xml, ratio_split
from tests.data.helpers import flat_voc, write_split, write_voc_image


def _standard_voc(root):
    """Five images (h 30, w 40) in the standard layout with train/val split files."""
    write_voc_image(root, "000001", (30, 40), [
        {"name": "dog", "box": (11, 6, 30, 20), "difficult": 0},
        {"name": "cat", "box": (1, 1, 10, 10), "difficult": 1},
    ], seed=1)
    write_voc_image(root, "000002", (30, 40), [{"name": "cat", "box": (5, 5, 45, 25)}], seed=2)
    write_voc_image(root, "000003", (30, 40), [], seed=3)
    write_voc_image(root, "000004", (30, 40), [{"name": "dog", "box": (2, 2, 8, 9)}], seed=4)
    write_voc_image(root, "000005", (30, 40), [{"name": "bird", "box": (2, 2, 8, 9)}], seed=5)
    write_split(root, "train", ["000001", "000002", "000003"])
    write_split(root, "val", ["000004", "000005"])


def test_standard_layout_with_split_files(tmp_path):
    _standard_voc(tmp_path)
    train = VocDetection(tmp_path, "train")
    val = VocDetection(tmp_path, "val")
    # classes: every name in every XML of the folder, sorted, so both splits agree
    assert train.category_names == val.category_names == ["bird", "cat", "dog"]
    assert train.label_to_category_id == [-1, 1, 2, 3]
    # ids: 1 + position among all stems sorted, disjoint between the splits
    assert train.image_ids == [1, 2, 3] and val.image_ids == [4, 5]
    image, target = train[0]
    assert image.shape == (3, 30, 40)
    # VOC 1-based (11, 6, 30, 20) -> continuous (10, 5, 30, 20); the difficult cat is left out
    assert target["boxes_xyxy"].tolist() == [[10.0, 5.0, 30.0, 20.0]]
    assert target["labels"].tolist() == [3]
    # 000002: xmax 45 > width 40 -> clipped
    assert train[1][1]["boxes_xyxy"].tolist() == [[4.0, 4.0, 40.0, 25.0]]
    assert train[2][1]["boxes_xyxy"].shape == (0, 4)  # negative image kept
    assert train.stats == {
        "images": 3, "annotations": 3, "difficult_excluded": 1, "boxes_clipped": 1,
        "boxes_dropped_empty": 0, "images_without_boxes": 1, "missing_images_skipped": 0,
        "undecodable_images_skipped": 0,
    }


def test_difficult_objects_are_crowd_in_coco_gt_and_flagged_for_voc_ap(tmp_path):
    _standard_voc(tmp_path)
    train = VocDetection(tmp_path, "train")
    gt = train.coco_gt.loadAnns(train.coco_gt.getAnnIds(imgIds=[1]))
    assert [(a["category_id"], a["iscrowd"], a["bbox"], a["area"]) for a in gt] == [
        (3, 0, [10.0, 5.0, 20.0, 15.0], 300.0),
        (2, 1, [0.0, 0.0, 10.0, 10.0], 100.0),
    ]
    voc_gt = train.voc_ground_truth()
    assert sorted(voc_gt) == [1, 2, 3]
    assert voc_gt[1]["boxes"].tolist() == [[10.0, 5.0, 30.0, 20.0], [0.0, 0.0, 10.0, 10.0]]
    assert voc_gt[1]["labels"].tolist() == [3, 2]
    assert voc_gt[1]["difficult"].tolist() == [False, True]
    assert voc_gt[3]["boxes"].shape == (0, 4) and voc_gt[3]["difficult"].dtype == torch.bool
    assert voc_gt[2]["difficult"].tolist() == [False]  # <difficult> missing -> 0
    assert train.coco_gt.getImgIds() == [1, 2, 3]
    assert [c["name"] for c in train.coco_gt.dataset["categories"]] == ["bird", "cat", "dog"]


def test_flat_layout_ratio_split_is_deterministic_disjoint_and_complete(tmp_path):
    stems = flat_voc(tmp_path, 10)
    train = VocDetection(tmp_path, subset="train", split_ratio=0.8)
    val = VocDetection(tmp_path, subset="val", split_ratio=0.8)
    assert (len(train), len(val)) == (8, 2)
    assert set(train.image_ids).isdisjoint(val.image_ids)
    assert sorted(train.image_ids + val.image_ids) == list(range(1, 11))
    again = VocDetection(tmp_path, subset="val", split_ratio=0.8)
    assert again.image_ids == val.image_ids
    assert ratio_split(stems, 0.8) == ratio_split(list(reversed(stems)), 0.8)
    assert train.category_names == ["cat", "dog"]


def test_ratio_split_keeps_both_sides_non_empty():
    train, val = ratio_split(["a", "b", "c"], 0.99)
    assert len(train) == 2 and len(val) == 1
    assert ratio_split(["a", "b"], 1.0) == (["a", "b"], [])
    with pytest.raises(ValueError, match="split_ratio"):
        ratio_split(["a"], 1.5)


def test_unknown_class_names_file_and_class(tmp_path):
    _standard_voc(tmp_path)
    with pytest.raises(ValueError) as info:
        VocDetection(tmp_path, "val", class_names=["cat", "dog"])
    assert "000005.xml" in str(info.value) and "'bird'" in str(info.value)
    ds = VocDetection(tmp_path, "train", class_names=["dog", "cat"])
    assert ds[0][1]["labels"].tolist() == [1]


def test_malformed_xml_names_the_file(tmp_path):
    _standard_voc(tmp_path)
    broken = tmp_path / "Annotations" / "000002.xml"
    broken.write_text("<annotation><object><name>cat</name></annotation>")
    with pytest.raises(ValueError, match="malformed XML") as info:
        VocDetection(tmp_path, "train")
    assert str(broken) in str(info.value)


def test_object_without_numeric_box_names_the_file(tmp_path):
    _standard_voc(tmp_path)
    broken = tmp_path / "Annotations" / "000004.xml"
    broken.write_text(broken.read_text().replace("<xmax>8</xmax>", "<xmax>eight</xmax>"))
    with pytest.raises(ValueError, match="xmax") as info:
        VocDetection(tmp_path, "val")
    assert str(broken) in str(info.value)


def test_layout_and_split_errors_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        VocDetection(tmp_path)
    _standard_voc(tmp_path)
    with pytest.raises(ValueError, match="test.txt"):
        VocDetection(tmp_path, "test")
    with pytest.raises(ValueError, match="subset"):
        VocDetection(tmp_path, subset="validation")


def test_missing_image_files_raise_or_are_skipped(tmp_path):
    _standard_voc(tmp_path)
    (tmp_path / "JPEGImages" / "000002.png").unlink()
    with pytest.raises(ValueError, match="000002.png"):
        VocDetection(tmp_path, "train")
    ds = VocDetection(tmp_path, "train", skip_bad_images=True)
    assert ds.image_ids == [1, 3]
    assert ds.stats["missing_images_skipped"] == 1
    assert ds.coco_gt.getImgIds() == [1, 3]
    assert sorted(ds.voc_ground_truth()) == [1, 3]


def test_missing_size_is_read_from_the_image(tmp_path):
    write_voc_image(tmp_path, "a", (21, 33), [{"name": "x", "box": (1, 1, 5, 5)}], flat=True,
                    xml_size=False)
    assert parse_voc_xml(tmp_path / "annotations" / "a.xml").width == 0
    ds = VocDetection(tmp_path, subset="train", split_ratio=1.0)
    assert ds[0][1]["orig_size"] == (21, 33)
    assert ds.coco_gt.loadImgs(1)[0]["height"] == 21


def test_eval_transform_scales_voc_boxes(tmp_path):
    _standard_voc(tmp_path)
    ds = VocDetection(tmp_path, "train", transforms=eval_transforms(60, 1000))
    image, target = ds[0]
    assert target["input_size"] == (60, 80) and image.shape == (3, 60, 80)
    torch.testing.assert_close(target["boxes_xyxy"], torch.tensor([[20.0, 10.0, 60.0, 40.0]]),
                               atol=1e-4, rtol=0)


def test_split_file_listing_an_image_twice_or_an_unknown_one(tmp_path):
    _standard_voc(tmp_path)
    write_split(tmp_path, "dup", ["000001", "000002", "000001"])
    with pytest.raises(ValueError, match="more than once.*000001"):
        VocDetection(tmp_path, "dup")
    write_split(tmp_path, "ghost", ["000001", "000009"])
    with pytest.raises(ValueError, match="000009"):
        VocDetection(tmp_path, "ghost")
