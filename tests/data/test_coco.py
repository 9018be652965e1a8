import json
import logging
import math

import numpy as np
import pytest
import torch

from detkit.data import CocoDetection, UnreadableImageError, eval_transforms
from tests.data.helpers import small_coco, write_coco


def _by_id(ds: CocoDetection) -> dict[int, dict]:
    return {target["image_id"]: target for _, target in (ds[i] for i in range(len(ds)))}


def test_non_contiguous_category_ids_map_both_ways(tmp_path):
    ds = CocoDetection(*small_coco(tmp_path))
    assert ds.category_names == ["three", "seven", "eleven"]  # sorted by id 3 < 7 < 11
    assert ds.label_to_category_id == [-1, 3, 7, 11]
    targets = _by_id(ds)
    assert targets[1]["labels"].tolist() == [3]  # category 11 -> label 3
    assert targets[2]["labels"].tolist() == [2]  # category 7 -> label 2
    assert targets[4]["labels"].tolist() == [1]  # category 3 -> label 1
    # and back: every training label names the category of its annotation in coco_gt
    for image_id, target in targets.items():
        gt = ds.coco_gt.loadAnns(ds.coco_gt.getAnnIds(imgIds=[image_id], iscrowd=False))
        gt_ids = {a["category_id"] for a in gt}
        assert {ds.label_to_category_id[int(label)] for label in target["labels"]} <= gt_ids
    assert sorted(ds.coco_gt.getCatIds()) == [3, 7, 11]


def test_crowd_left_out_of_targets_but_kept_in_coco_gt(tmp_path):
    ds = CocoDetection(*small_coco(tmp_path))
    target = _by_id(ds)[1]
    assert target["boxes_xyxy"].tolist() == [[5.0, 6.0, 25.0, 16.0]]
    gt = ds.coco_gt.loadAnns(ds.coco_gt.getAnnIds(imgIds=[1]))
    assert sorted((a["id"], a["iscrowd"]) for a in gt) == [(101, 0), (102, 1)]
    assert ds.stats["crowd_excluded"] == 1


def test_boxes_clipped_and_empty_ones_dropped(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="detkit.data"):
        ds = CocoDetection(*small_coco(tmp_path))
    target = _by_id(ds)[2]
    # [-5, 10, 20, 20] xywh -> [-5, 10, 15, 30] xyxy -> x clipped at 0 (image is 40 wide, 30 high)
    assert target["boxes_xyxy"].tolist() == [[0.0, 10.0, 15.0, 30.0]]
    assert target["labels"].tolist() == [2]
    assert ds.stats["boxes_clipped"] == 1
    assert ds.stats["boxes_dropped_empty"] == 2  # outside the image, and zero width
    assert ds.stats["annotations"] == 6
    # logged once, naming the counts
    messages = [r.getMessage() for r in caplog.records if "boxes_dropped_empty=2" in r.getMessage()]
    assert len(messages) == 1
    # coco_gt keeps the original boxes and areas (file area when given, else w * h)
    anns = {a["id"]: a for a in ds.coco_gt.dataset["annotations"]}
    assert anns[201]["bbox"] == [-5, 10, 20, 20] and anns[201]["area"] == 400
    assert anns[202]["bbox"] == [50, 5, 10, 10]
    assert anns[401]["area"] == 123.5


def test_image_without_objects_is_kept(tmp_path):
    ds = CocoDetection(*small_coco(tmp_path))
    assert ds.image_ids == [1, 2, 3, 4]
    image, target = ds[2]
    assert target["image_id"] == 3
    assert target["boxes_xyxy"].shape == (0, 4) and target["boxes_xyxy"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert ds.stats["images_without_boxes"] == 1  # image 3 (image 2 keeps one box)
    assert ds.coco_gt.getImgIds() == [1, 2, 3, 4]


def test_item_without_transforms_is_the_file_in_0_1(tmp_path):
    images_dir, ann_file = small_coco(tmp_path)
    ds = CocoDetection(images_dir, ann_file)
    image, target = ds[0]
    assert image.shape == (3, 40, 60) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["orig_size"] == (40, 60) and target["input_size"] == (40, 60)


def test_missing_image_files_raise_naming_paths(tmp_path):
    images_dir, ann_file = small_coco(tmp_path)
    (images_dir / "b.png").unlink()
    (images_dir / "d.png").unlink()
    with pytest.raises(ValueError) as info:
        CocoDetection(images_dir, ann_file)
    message = str(info.value)
    assert str(images_dir / "b.png") in message and str(images_dir / "d.png") in message
    assert "2 of 4" in message


def test_missing_image_files_skipped_and_counted(tmp_path):
    images_dir, ann_file = small_coco(tmp_path)
    (images_dir / "b.png").unlink()
    ds = CocoDetection(images_dir, ann_file, skip_bad_images=True)
    assert ds.image_ids == [1, 3, 4]
    assert ds.stats["missing_images_skipped"] == 1
    assert ds.coco_gt.getImgIds() == [1, 3, 4]
    assert sorted(a["image_id"] for a in ds.coco_gt.dataset["annotations"]) == [1, 1, 4]


def test_undecodable_image_raises_or_is_replaced(tmp_path):
    images_dir, ann_file = small_coco(tmp_path)
    (images_dir / "b.png").write_bytes(b"this is not a png")
    ds = CocoDetection(images_dir, ann_file)
    with pytest.raises(UnreadableImageError, match="b.png"):
        ds[1]
    ds = CocoDetection(images_dir, ann_file, skip_bad_images=True)
    _, target = ds[1]
    assert target["image_id"] == 3  # the next index, deterministically
    assert ds[1][1]["image_id"] == 3
    assert ds.stats["undecodable_images_skipped"] == 1  # counted once per process
    (images_dir / "d.png").write_bytes(b"")
    assert ds[3][1]["image_id"] == 1  # wraps around


def test_image_size_disagreeing_with_annotation_is_an_error(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 10, "width": 12}]
    images_dir, ann_file = write_coco(tmp_path, images, [], [{"id": 1, "name": "x"}])
    data = json.loads(ann_file.read_text())
    data["images"][0]["height"] = 11
    ann_file.write_text(json.dumps(data))
    with pytest.raises(UnreadableImageError, match="a.png"):
        CocoDetection(images_dir, ann_file)[0]


def _valid() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 12}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 2, "bbox": [1, 1, 3, 3]},
            {"id": 57, "image_id": 1, "category_id": 2, "bbox": [2, 2, 3, 3]},
        ],
        "categories": [{"id": 2, "name": "x"}],
    }


def _break_bbox(data, value):
    data["annotations"][1]["bbox"] = value


MALFORMED = {
    "bbox_three_numbers": (lambda d: _break_bbox(d, [1, 2, 3]), "annotations[1] (id 57)"),
    "bbox_nan": (lambda d: _break_bbox(d, [1, 2, math.nan, 3]), "annotations[1] (id 57)"),
    "bbox_string": (lambda d: _break_bbox(d, [1, 2, "3", 3]), "annotations[1] (id 57)"),
    "bbox_missing": (lambda d: d["annotations"][1].pop("bbox"), "annotations[1] (id 57)"),
    "unknown_image": (lambda d: d["annotations"][1].update(image_id=9), "annotations[1] (id 57)"),
    "unknown_category": (
        lambda d: d["annotations"][1].update(category_id=4), "annotations[1] (id 57)"),
    "annotation_without_id": (
        lambda d: d["annotations"][1].pop("id") and d["annotations"][1].update(category_id=4),
        "annotations[1]"),
    "no_images": (lambda d: d.pop("images"), "images"),
    "no_annotations": (lambda d: d.pop("annotations"), "annotations"),
    "no_categories": (lambda d: d.pop("categories"), "categories"),
    "image_without_file_name": (lambda d: d["images"][0].pop("file_name"), "images[0] (id 1)"),
    "repeated_annotation_id": (lambda d: d["annotations"][1].update(id=5),
                               "annotations[1] (id 5) repeats an annotation id"),
    "annotation_id_zero": (lambda d: d["annotations"][1].update(id=0), "annotations[1] (id 0)"),
    # each rule once more, as the column-wise check (the fast path) has to catch it too
    "bbox_bool": (lambda d: _break_bbox(d, [1, 2, True, 3]), "annotations[1] (id 57)"),
    "bbox_not_a_list": (lambda d: _break_bbox(d, {"x": 1}), "annotations[1] (id 57)"),
    "bbox_inf": (lambda d: _break_bbox(d, [1, 2, math.inf, 3]), "annotations[1] (id 57)"),
    "area_string": (lambda d: d["annotations"][1].update(area="9"), "annotations[1] (id 57)"),
    "area_nan": (lambda d: d["annotations"][1].update(area=math.nan), "annotations[1] (id 57)"),
    "image_id_float": (lambda d: d["annotations"][1].update(image_id=1.0),
                       "annotations[1] (id 57)"),
    "category_id_bool": (lambda d: d["annotations"][1].update(category_id=True),
                         "annotations[1] (id 57)"),
    "annotation_id_string": (lambda d: d["annotations"][1].update(id="57"),
                             "annotations[1] (id '57')"),
    "annotation_not_an_object": (lambda d: d["annotations"].__setitem__(1, [1, 2]),
                                 "annotations[1]"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_annotation_file_names_file_and_entry(tmp_path, case):
    data = _valid()
    breaker, entry = MALFORMED[case]
    breaker(data)
    ann_file = tmp_path / "broken.json"
    ann_file.write_text(json.dumps(data))  # json writes NaN as a literal that json reads back
    with pytest.raises(ValueError) as info:
        CocoDetection(tmp_path, ann_file)
    assert str(ann_file) in str(info.value)
    assert entry in str(info.value)


def test_not_json_names_file(tmp_path):
    ann_file = tmp_path / "broken.json"
    ann_file.write_text("{'images': []")
    with pytest.raises(ValueError, match="not a JSON") as info:
        CocoDetection(tmp_path, ann_file)
    assert str(ann_file) in str(info.value)


@pytest.mark.parametrize("hw, min_size, max_size", [((40, 60), 80, 1000), ((30, 47), 64, 90)])
def test_eval_transform_scales_boxes_with_the_image(tmp_path, hw, min_size, max_size):
    h, w = hw
    images = [{"id": 7, "file_name": "a.png", "height": h, "width": w}]
    anns = [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [3.0, 4.5, 20.0, 11.25]}]
    images_dir, ann_file = write_coco(tmp_path, images, anns, [{"id": 1, "name": "x"}])
    ds = CocoDetection(images_dir, ann_file, eval_transforms(min_size, max_size))
    image, target = ds[0]
    in_h, in_w = target["input_size"]
    assert image.shape == (3, in_h, in_w)
    assert target["orig_size"] == (h, w)
    scale = min(min_size / min(h, w), max_size / max(h, w))
    assert (in_h, in_w) == (round(h * scale), round(w * scale))
    expected = np.array([3.0, 4.5, 23.0, 15.75]) * [in_w / w, in_h / h, in_w / w, in_h / h]
    torch.testing.assert_close(target["boxes_xyxy"][0].double(), torch.tensor(expected),
                               atol=1e-4, rtol=0)
    # normalised with ImageNet statistics: far outside [0, 1]
    assert image.min() < -1.0 and image.max() > 1.5


def _drop_all_segmentation(entry: dict) -> dict:
    entry.pop("segmentation", None)
    return entry


SEGMENTATION_LAYOUTS = {
    "polygons_middle": '{"id": 1, "segmentation": [[1.5, 2, 3e2, 4], [5, 6]], "bbox": [1, 2]}',
    "polygons_last": '{"id": 1, "bbox": [1, 2, 3, 4], "segmentation" : [ [1,2,3,4,5,6] ]}',
    "polygons_first_pretty": '{\n  "segmentation": [\n    [\n      1,\n      2\n    ]\n  ],\n'
                             '  "id": 1\n}',
    "only_key": '{"segmentation": []}',
    "rle_string": '{"id": 1, "segmentation": {"counts": "0Ql\\\\3", "size": [4, 5]}, "iscrowd": 1}',
    "rle_list": '{"segmentation": {"size": [4, 5], "counts": [1, 19]}, "iscrowd": 1}',
    # not COCO's shapes: left to the object hook
    "null": '{"id": 1, "segmentation": null}',
    "nested_deeper": '{"id": 1, "segmentation": [[[1, 2]]], "bbox": [1, 2, 3, 4]}',
    # an RLE string with a brace: the stripped text no longer parses, the file is parsed as is
    "rle_with_brace": '{"id": 1, "segmentation": {"counts": "a}b", "size": [1, 2]}, "x": 2}',
    # the word as a value and inside strings is data, not a member to drop
    "word_in_strings": '{"name": "segmentation", "note": "\\"segmentation\\": [[1]]", '
                       '"segmentation": [[1, 2]], "x": ["segmentation", 1]}',
}


@pytest.mark.parametrize("layout", sorted(SEGMENTATION_LAYOUTS))
def test_segmentation_stripped_before_parsing_gives_the_plain_parse(layout):
    """The fast parse (segmentation values cut from the raw bytes) equals json's own parse with
    segmentation dropped, in every layout, and keeps everything else."""
    from detkit.data.coco import _parse

    entry = SEGMENTATION_LAYOUTS[layout]
    text = '{"annotations": [' + ", ".join([entry] * 3) + '], "images": []}'
    expected = json.loads(text, object_hook=_drop_all_segmentation)
    assert _parse(text.encode()) == expected
    assert not any("segmentation" in a for a in expected["annotations"])
    if layout == "word_in_strings":
        kept = expected["annotations"][0]
        assert kept["name"] == "segmentation" and kept["x"] == ["segmentation", 1]
        assert kept["note"] == '"segmentation": [[1]]'
