"""Lean records: flat arrays that DataLoader workers share, and a training set without dicts."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from detkit.data import CocoDetection, ImageRecord
from detkit.data.base import RecordArrays
from tests.data.helpers import write_coco


def _records() -> list[ImageRecord]:
    boxes = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 1, 1]], np.float32)
    return [
        ImageRecord(7, Path("a/é.png"), 10, 20, boxes[:2],
                    np.array([1, 2], np.int64)),
        ImageRecord(3, Path("b.png"), 30, 40, boxes[:0],
                    np.empty(0, np.int64)),
        ImageRecord(9, Path("c.png"), 50, 60, boxes[2:],
                    np.array([3], np.int64)),
    ]


def test_record_arrays_give_back_the_records_and_hold_no_python_objects():
    records = _records()
    arrays = RecordArrays.from_records(records)
    assert len(arrays) == 3
    for got, want in zip(arrays, records, strict=True):
        assert (got.image_id, got.path, got.height, got.width) == (
            want.image_id, want.path, want.height, want.width)
        np.testing.assert_array_equal(got.boxes_xyxy, want.boxes_xyxy)
        np.testing.assert_array_equal(got.labels, want.labels)
    assert arrays[-1].image_id == 9
    np.testing.assert_array_equal(arrays.box_counts(), [2, 0, 1])
    # every attribute is a numeric array: nothing whose refcount a worker would write per record
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in vars(arrays).values())
    with pytest.raises(IndexError, match="record 3 out of range for 3 records"):
        arrays[3]


def test_record_arrays_refuse_inconsistent_lengths():
    with pytest.raises(ValueError, match="box_counts sum to 2 but there are 1 boxes"):
        RecordArrays(image_ids=np.array([1]), heights=np.array([1]), widths=np.array([1]),
                     box_counts=np.array([2]), boxes_xyxy=np.zeros((1, 4)),
                     labels=np.zeros(1), paths=["a"])
    with pytest.raises(ValueError, match="one entry per record, got 2, 1"):
        RecordArrays(image_ids=np.array([1, 2]), heights=np.array([1]), widths=np.array([1, 1]),
                     box_counts=np.array([0, 0]), boxes_xyxy=np.zeros((0, 4)),
                     labels=np.zeros(0), paths=["a", "b"])


def _interleaved_coco(tmp_path):
    """Annotations of three images interleaved in the file, with polygons, crowd and clipping."""
    images = [{"id": 30, "file_name": "a.png", "height": 20, "width": 30},
              {"id": 10, "file_name": "b.png", "height": 10, "width": 10},
              {"id": 20, "file_name": "c.png", "height": 16, "width": 16}]
    polygon = [[0, 0, 5, 0, 5, 5]]
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 2, "bbox": [1, 1, 2, 2], "segmentation": polygon},
        {"id": 2, "image_id": 30, "category_id": 1, "bbox": [25, 5, 10, 4]},  # clipped at x=30
        {"id": 3, "image_id": 10, "category_id": 1, "bbox": [4, 4, 3, 3], "iscrowd": 1,
         "segmentation": {"counts": [1, 2], "size": [10, 10]}},
        {"id": 4, "image_id": 30, "category_id": 2, "bbox": [0, 0, 5, 5]},
        {"id": 5, "image_id": 10, "category_id": 1, "bbox": [5, 5, 1, 2]},
    ]
    return write_coco(tmp_path, images, annotations,
                      [{"id": 1, "name": "p"}, {"id": 2, "name": "q"}])


def test_training_set_keeps_records_only_and_matches_the_evaluated_one(tmp_path):
    images_dir, ann_file = _interleaved_coco(tmp_path)
    train = CocoDetection(images_dir, ann_file, keep_coco_gt=False)
    val = CocoDetection(images_dir, ann_file)
    assert train._coco_gt_dataset is None
    with pytest.raises(RuntimeError, match="keep_coco_gt=False"):
        _ = train.coco_gt
    # image order of the file; each image's boxes in file order, crowd left out, clipped
    assert train.image_ids == val.image_ids == [30, 10, 20]
    expected = {30: ([[25, 5, 30, 9], [0, 0, 5, 5]], [1, 2]),
                10: ([[1, 1, 3, 3], [5, 5, 6, 7]], [2, 1]), 20: (np.zeros((0, 4)), [])}
    for ds in (train, val):
        for record in ds.records:
            boxes, labels = expected[record.image_id]
            np.testing.assert_array_equal(record.boxes_xyxy, np.reshape(boxes, (-1, 4)))
            np.testing.assert_array_equal(record.labels, labels)
        assert ds.stats["crowd_excluded"] == 1 and ds.stats["boxes_clipped"] == 1
        assert ds.stats["images_without_boxes"] == 1 and ds.stats["annotations"] == 5
    # evaluation ground truth: every annotation (crowd too), polygons and RLE dropped
    anns = val.coco_gt.dataset["annotations"]
    assert sorted(a["id"] for a in anns) == [1, 2, 3, 4, 5]
    assert not any("segmentation" in a for a in anns)
    assert json.loads(ann_file.read_text())["annotations"][0]["segmentation"]  # file untouched
    # a worker receives the dataset by pickling (spawn) or fork: the records survive both
    copy = pickle.loads(pickle.dumps(train))
    np.testing.assert_array_equal(copy.records.boxes_xyxy, train.records.boxes_xyxy)
