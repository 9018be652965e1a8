"""detkit.models: detectors in plain PyTorch (no Lightning, data or engine imports)."""

from detkit.models.backbone import BACKBONES, BackboneFPN, build_backbone
from detkit.models.faster_rcnn import (
    FasterRCNN,
    RoIHeadSettings,
    RPNSettings,
    batch_images,
    build_faster_rcnn,
)
from detkit.models.roi_extractors import (
    EXTRACTORS,
    BinLayout,
    RoIExtractor,
    build_roi_extractor,
    check_extractor_names,
)

__all__ = [
    "BACKBONES",
    "EXTRACTORS",
    "BackboneFPN",
    "BinLayout",
    "FasterRCNN",
    "RPNSettings",
    "RoIExtractor",
    "RoIHeadSettings",
    "batch_images",
    "build_backbone",
    "build_faster_rcnn",
    "build_roi_extractor",
    "check_extractor_names",
]
