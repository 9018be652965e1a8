"""Nothing silently wrong in the data layer: skipped val images, empty training sets, the
construction statistics' log level, and the format table's arguments."""

import json
import logging

import pytest

from detkit.data import CocoDetection, DetectionDataModule, UnreadableImageError, VocDetection
from detkit.data.datamodule import FORMATS
from tests.data.helpers import flat_voc, small_coco, write_coco, write_voc_image

SMALL = {"min_size": 32, "max_size": 64}


def _coco_module(images_dir, ann_file, **kwargs) -> DetectionDataModule:
    return DetectionDataModule(format="coco", train_images=str(images_dir),
                               train_ann=str(ann_file), val_images=str(images_dir),
                               val_ann=str(ann_file), **SMALL, **kwargs)


def test_skipped_val_image_is_left_out_of_items_and_ground_truth(tmp_path, caplog):
    images_dir, ann_file = small_coco(tmp_path)
    (images_dir / "b.png").write_bytes(b"this is not a png")  # image 2, with 3 annotations
    dm = _coco_module(images_dir, ann_file, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="detkit.data"):
        dm.setup("fit")
    val = dm.val_dataset
    assert val.image_ids == [1, 3, 4]  # not replaced by image 3: left out
    assert val.coco_gt.getImgIds() == [1, 3, 4]
    assert sorted(a["image_id"] for a in val.coco_gt.dataset["annotations"]) == [1, 1, 4]
    assert [val[i][1]["image_id"] for i in range(len(val))] == [1, 3, 4]
    assert dm.val_images_skipped == 1 and val.stats["undecodable_images_skipped"] == 1
    assert "b.png" in caplog.text
    # training keeps every record and serves the next image in place of the bad one
    assert dm.train_dataset.image_ids == [1, 2, 3, 4]
    assert dm.train_dataset[1][1]["image_id"] == 3


def test_missing_val_images_count_as_skipped_too(tmp_path):
    images_dir, ann_file = small_coco(tmp_path)
    (images_dir / "c.png").unlink()
    dm = _coco_module(images_dir, ann_file, skip_bad_images=True)
    dm.setup("validate")
    assert dm.val_images_skipped == 1 and dm.val_dataset.image_ids == [1, 2, 4]


def test_verified_image_that_breaks_later_raises_instead_of_being_replaced(tmp_path):
    images_dir, ann_file = small_coco(tmp_path)
    ds = CocoDetection(images_dir, ann_file, skip_bad_images=True, verify_images=True)
    (images_dir / "b.png").write_bytes(b"")
    with pytest.raises(UnreadableImageError, match="b.png"):
        ds[1]


def test_verify_without_skip_raises_at_construction(tmp_path):
    images_dir, ann_file = small_coco(tmp_path)
    (images_dir / "d.png").write_bytes(b"garbage")
    CocoDetection(images_dir, ann_file)  # not verified: nothing decoded yet
    with pytest.raises(UnreadableImageError, match="d.png"):
        CocoDetection(images_dir, ann_file, verify_images=True)


def test_voc_val_image_skipped_from_ground_truth_and_voc_truth(tmp_path):
    flat_voc(tmp_path, 4)
    (tmp_path / "images" / "img-1.png").write_bytes(b"broken")
    ds = VocDetection(tmp_path, subset="train", split_ratio=1.0, skip_bad_images=True,
                      verify_images=True)
    assert ds.image_ids == [1, 3, 4] and ds.coco_gt.getImgIds() == [1, 3, 4]
    assert sorted(ds.voc_ground_truth()) == [1, 3, 4]
    assert ds.stats["undecodable_images_skipped"] == 1 and ds.stats["images"] == 3


def test_voc_image_without_size_that_cannot_be_read_is_skipped_with_skip(tmp_path):
    for i, stem in enumerate(("a", "b")):
        write_voc_image(tmp_path, stem, (21, 33), [{"name": "x", "box": (1, 1, 5, 5)}],
                        flat=True, xml_size=False, seed=i)
    (tmp_path / "images" / "b.png").write_bytes(b"no header")
    with pytest.raises(UnreadableImageError, match="b.png"):
        VocDetection(tmp_path, subset="train", split_ratio=1.0)
    ds = VocDetection(tmp_path, subset="train", split_ratio=1.0, skip_bad_images=True)
    assert ds.image_ids == [1] and ds.stats["undecodable_images_skipped"] == 1


def test_training_set_without_images_names_the_file(tmp_path):
    val_dir, val_ann = small_coco(tmp_path / "val")
    train_dir, train_ann = write_coco(tmp_path / "train", [], [],
                                      [{"id": c, "name": n} for c, n in
                                       ((11, "eleven"), (3, "three"), (7, "seven"))])
    dm = DetectionDataModule(format="coco", train_images=str(train_dir),
                             train_ann=str(train_ann), val_images=str(val_dir),
                             val_ann=str(val_ann), **SMALL)
    with pytest.raises(ValueError, match=rf"{train_ann}.* no images"):
        dm.setup("fit")
    dm.setup("validate")  # validating needs no training set


def test_training_set_without_boxes_names_the_file(tmp_path):
    images_dir, ann_file = small_coco(tmp_path)
    data = json.loads(ann_file.read_text())
    data["annotations"] = [a for a in data["annotations"] if a.get("iscrowd") == 1]
    ann_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"{ann_file}.* 4 images but no object boxes"):
        _coco_module(images_dir, ann_file).setup("fit")


def test_statistics_warn_when_boxes_dropped_else_info(tmp_path, caplog):
    images_dir, ann_file = small_coco(tmp_path)  # clips one box, drops two
    with caplog.at_level(logging.INFO, logger="detkit.data"):
        CocoDetection(images_dir, ann_file)
    record, = caplog.records
    assert record.levelno == logging.WARNING
    assert "boxes_clipped=1" in record.message and "boxes_dropped_empty=2" in record.message
    assert "stay in the evaluated ground truth" in record.message
    caplog.clear()
    clean = [{"id": 1, "file_name": "a.png", "height": 20, "width": 20}]
    images_dir, ann_file = write_coco(tmp_path / "clean", clean, [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        [{"id": 1, "name": "x"}])
    with caplog.at_level(logging.INFO, logger="detkit.data"):
        CocoDetection(images_dir, ann_file)
    record, = caplog.records
    assert record.levelno == logging.INFO and "boxes_clipped=0" in record.message


def test_degenerate_val_boxes_stay_in_evaluated_ground_truth(tmp_path):
    images_dir, ann_file = small_coco(tmp_path)
    ds = CocoDetection(images_dir, ann_file)
    assert ds.stats["boxes_dropped_empty"] == 2
    assert len(ds.records[1].boxes_xyxy) == 1  # training target of image 2: the clipped box
    assert sorted(ds.coco_gt.getAnnIds(imgIds=[2])) == [201, 202, 203]


def test_extra_metrics_come_from_the_format_table(tmp_path):
    images_dir, ann_file = small_coco(tmp_path)
    assert _coco_module(images_dir, ann_file).extra_metrics == ()
    assert DetectionDataModule(format="voc", root="r").extra_metrics == ("voc",)
    assert DetectionDataModule(format="synthetic").extra_metrics == ()
    assert set(FORMATS) == {"coco", "voc", "synthetic"}


@pytest.mark.parametrize("kwargs, names", [
    ({"format": "yolo"}, ["'coco'", "'synthetic'", "'voc'", "'yolo'"]),
    ({"format": "synthetic", "val_ann": "x.json"}, ["val_ann", "['coco']"]),
    ({"format": "coco", "train_images": "a", "train_ann": "b", "val_images": "c",
      "val_ann": "d", "root": "r"}, ["root", "['voc', 'synthetic']"]),
    ({"format": "synthetic", "split_ratio": 0.5}, ["split_ratio", "['voc']"]),
])
def test_unknown_format_and_arguments_the_format_ignores_are_named(kwargs, names):
    with pytest.raises(ValueError) as info:
        DetectionDataModule(**kwargs)
    for name in names:
        assert name in str(info.value)
