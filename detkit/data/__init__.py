"""detkit.data: COCO/VOC datasets, albumentations transforms, collate and the DataModule.

An item is ``(image, target)``: ``image: Tensor[3, H, W]`` float32 (resized and normalised by
the transform); ``target`` holds ``boxes_xyxy: Tensor[M, 4]`` float32 in the transformed image's
pixels, ``labels: Tensor[M]`` int64 in ``1..K`` (0 is background), ``image_id: int`` (the id in
the dataset's ``coco_gt``), ``orig_size`` and ``input_size`` as ``(h, w)``.
"""

from detkit.data.base import (
    DetectionDataset,
    ImageRecord,
    UnreadableImageError,
    clip_boxes_xyxy,
    collate,
    original_scale,
)
from detkit.data.coco import CocoDetection
from detkit.data.datamodule import DetectionDataModule
from detkit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResizeShortestSide,
    eval_transforms,
    resize_scale,
    seed_transforms,
    seed_worker,
    train_transforms,
)
from detkit.data.voc import VocDetection, parse_voc_xml, ratio_split

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CocoDetection",
    "DetectionDataModule",
    "DetectionDataset",
    "ImageRecord",
    "ResizeShortestSide",
    "UnreadableImageError",
    "VocDetection",
    "clip_boxes_xyxy",
    "original_scale",
    "collate",
    "eval_transforms",
    "parse_voc_xml",
    "ratio_split",
    "resize_scale",
    "seed_transforms",
    "seed_worker",
    "train_transforms",
]
