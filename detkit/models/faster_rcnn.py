"""Faster R-CNN with FPN and a pluggable RoI feature extractor, in plain PyTorch.

Reused from torchvision (battle-tested, and the parity reference for the benchmarks): the anchor
generator, RPN head and ``RegionProposalNetwork`` (assign -> sample -> loss -> NMS), and
``RoIHeads`` (proposal matching, balanced sampling, Fast R-CNN loss, class-specific box decoding,
NMS). ``RoIHeads`` calls its ``box_roi_pool`` as ``pool(features, proposals, image_sizes)``, which
is exactly the :class:`RoIExtractor` interface, so any extractor plugs in without torchvision's
``FasterRCNN`` class (whose constructor insists on ``MultiScaleRoIAlign``). What detkit writes
itself: the extractors, the batching (images arrive resized and normalised from detkit.data), and
the input/output dict keys (``boxes_xyxy``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from detkit.models.backbone import BackboneFPN, Norm, build_backbone
from detkit.models.parts import keep_frozen_statistics
from detkit.models.roi_extractors import RoIExtractor, build_roi_extractor


@dataclass
class RPNSettings:
    """Region proposal network settings (torchvision's Faster R-CNN defaults).

    ``anchor_sizes`` has one size per feature level p2..p6; 32 px on the stride-4 level is the
    FPN paper's choice. Lower them for datasets of small objects.
    """

    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    pre_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_train: int = 2000
    post_nms_top_n_test: int = 1000
    nms_thresh: float = 0.7


@dataclass
class RoIHeadSettings:
    """Box head settings (torchvision's Faster R-CNN defaults)."""

    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    representation_size: int = 1024  # width of the 2-fc head


# The frozen front of a step: (features: dict[str, Tensor[N, C, H_l, W_l]], proposals:
# list[Tensor[P_i, 4]] xyxy in input pixels, rpn_losses: dict[str, Tensor[]]).
Front = tuple[dict[str, Tensor], list[Tensor], dict[str, Tensor]]
# (image_list, targets, compute) -> what compute() returns, computed or read; see forward
FrontProvider = Callable[[ImageList, list[dict[str, Tensor]] | None, Callable[[], Front]], Front]


def batch_images(images: list[Tensor], size_divisible: int) -> ImageList:
    """Pad ``Tensor[3, H_i, W_i]`` images to one ``Tensor[N, 3, H, W]``, H and W multiples of
    ``size_divisible``, zeros at the bottom/right (input coordinates are unchanged)."""
    if not images:
        raise ValueError("images must hold at least one Tensor[3, H, W]")
    for i, image in enumerate(images):
        if image.dim() != 3:
            raise ValueError(f"images[{i}] must be a Tensor[3, H, W], got {tuple(image.shape)}")
    height = max(int(im.shape[1]) for im in images)
    width = max(int(im.shape[2]) for im in images)
    height = -(-height // size_divisible) * size_divisible
    width = -(-width // size_divisible) * size_divisible
    batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    for image, slot in zip(images, batch, strict=True):
        slot[:, : image.shape[1], : image.shape[2]].copy_(image)
    return ImageList(batch, [(int(im.shape[1]), int(im.shape[2])) for im in images])


class FasterRCNN(nn.Module):
    """Faster R-CNN: backbone + FPN, RPN, and a box head fed by a pluggable RoI extractor.

    Call it with ``images: list[Tensor[3, H_i, W_i]]`` (resized and normalised) and, in training,
    ``targets: list[dict]`` with ``boxes_xyxy: Tensor[M_i, 4]`` (input-image pixels) and
    ``labels: Tensor[M_i]`` int64 in ``1..num_classes``.

    Training mode returns the losses ``{"loss_objectness", "loss_rpn_box_reg", "loss_classifier",
    "loss_box_reg"}``. Eval mode returns one dict per image: ``boxes_xyxy: Tensor[D, 4]``,
    ``scores: Tensor[D]``, ``labels: Tensor[D]`` int64, and ``proposals_xyxy: Tensor[P, 4]`` (RPN
    proposals by decreasing objectness), all in input-image pixels.
    """

    def __init__(
        self, *, backbone: BackboneFPN, rpn: RegionProposalNetwork, roi_heads: RoIHeads,
        size_divisible: int = 32,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.size_divisible = size_divisible
        self.frozen_parts: tuple[str, ...] = ()  # see detkit.models.parts.freeze_parts

    def train(self, mode: bool = True) -> FasterRCNN:
        """As ``nn.Module.train``, but the BatchNorm layers of frozen parts stay in eval mode."""
        super().train(mode)
        keep_frozen_statistics(self)
        return self

    @property
    def roi_extractor(self) -> RoIExtractor:
        return self.roi_heads.box_roi_pool

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None, *,
        front: FrontProvider | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Args:
            images, targets: as in the class docstring.
            front: where the backbone + RPN outputs (the :data:`Front`) come from, when not
                computed here: called as ``front(image_list, targets, compute)`` with the
                padded batch and its sizes, the targets (torchvision keys ``boxes``,
                ``labels``) and ``compute()``, which computes them; it returns what
                ``compute()`` would. Used to share a frozen front between runs
                (:mod:`detkit.engine.frozen_front`)."""
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        image_list = batch_images(images, self.size_divisible)
        tv_targets = None
        if targets is not None:
            tv_targets = [{"boxes": t["boxes_xyxy"], "labels": t["labels"]} for t in targets]

        def compute() -> Front:
            features = self.backbone(image_list.tensors)
            return (features, *self.rpn(image_list, features, tv_targets))

        features, proposals, rpn_losses = (compute() if front is None else
                                           front(image_list, tv_targets, compute))
        detections, head_losses = self.roi_heads(features, proposals, image_list.image_sizes,
                                                 tv_targets)
        if self.training:
            return {**rpn_losses, **head_losses}
        return [
            {"boxes_xyxy": d["boxes"], "scores": d["scores"], "labels": d["labels"],
             "proposals_xyxy": p}
            for d, p in zip(detections, proposals, strict=True)
        ]


def build_rpn(settings: RPNSettings, in_channels: int, num_levels: int) -> RegionProposalNetwork:
    if len(settings.anchor_sizes) != num_levels:
        raise ValueError(
            f"rpn.anchor_sizes needs one size per feature level ({num_levels}), got "
            f"{settings.anchor_sizes}"
        )
    anchors = AnchorGenerator(tuple((s,) for s in settings.anchor_sizes),
                              (tuple(settings.aspect_ratios),) * num_levels)
    return RegionProposalNetwork(
        anchors, RPNHead(in_channels, anchors.num_anchors_per_location()[0]),
        settings.fg_iou_thresh, settings.bg_iou_thresh, settings.batch_size_per_image,
        settings.positive_fraction,
        {"training": settings.pre_nms_top_n_train, "testing": settings.pre_nms_top_n_test},
        {"training": settings.post_nms_top_n_train, "testing": settings.post_nms_top_n_test},
        settings.nms_thresh,
    )


def build_roi_heads(
    extractor: RoIExtractor, num_classes: int, settings: RoIHeadSettings
) -> RoIHeads:
    head = TwoMLPHead(extractor.out_features, settings.representation_size)
    predictor = FastRCNNPredictor(settings.representation_size, num_classes + 1)
    return RoIHeads(
        extractor, head, predictor, settings.fg_iou_thresh, settings.bg_iou_thresh,
        settings.batch_size_per_image, settings.positive_fraction, settings.bbox_reg_weights,
        settings.score_thresh, settings.nms_thresh, settings.detections_per_img,
    )


def build_faster_rcnn(
    num_classes: int, *, backbone: str = "resnet18", norm: Norm | None = None,
    backbone_weights: str | None = None, trainable_layers: int | None = None,
    fpn_channels: int = 256, backbone_width: int = 64,
    roi_extractor: str = "roi_align", roi_extractor_args: dict[str, Any] | None = None,
    rpn: RPNSettings | None = None, roi_head: RoIHeadSettings | None = None,
) -> FasterRCNN:
    """Build a Faster R-CNN for ``num_classes`` object classes (background excluded).

    Args:
        num_classes: object classes; labels are ``1..num_classes``.
        backbone: ``resnet18|34|50|101`` or ``mobilenet_v3_large`` (with FPN, p2-p6).
        norm: backbone/FPN normalisation, see :func:`detkit.models.backbone.norm_layer`;
            None = ``"frozen_bn"`` with ``backbone_weights``, ``"group"`` without.
        backbone_weights: None = from scratch; ``"imagenet"``, a torchvision weights name
            (``"ResNet50_Weights.IMAGENET1K_V2"``) or the path of a torchvision classification
            state dict, see :func:`detkit.models.backbone.build_backbone`.
        trainable_layers: backbone stages to train; None = 3 with weights, all without.
        fpn_channels: FPN width (256 in the FPN paper).
        backbone_width: a ResNet's first-stage width (64 = torchvision's; see
            :func:`detkit.models.backbone.build_backbone`).
        roi_extractor: a name in :data:`detkit.models.roi_extractors.EXTRACTORS`.
        roi_extractor_args: that extractor's own keyword arguments.
        rpn, roi_head: settings; None = defaults.

    Randomness: with torch's RNG seeded alike, every extractor gets the same backbone, FPN, RPN
    and box-head/predictor weights (the head's first layer where the extractors' ``out_features``
    agree): the extractor's own parameters come from a stream of their own.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    body = build_backbone(backbone, norm=norm, weights=backbone_weights,
                          trainable_layers=trainable_layers, fpn_channels=fpn_channels,
                          width=backbone_width)
    extractor = _build_extractor_aside(roi_extractor, body.out_channels, roi_extractor_args or {})
    return FasterRCNN(
        backbone=body,
        rpn=build_rpn(rpn or RPNSettings(), body.out_channels, len(body.strides)),
        roi_heads=build_roi_heads(extractor, num_classes, roi_head or RoIHeadSettings()),
    )


def _build_extractor_aside(name: str, in_channels: int, settings: dict[str, Any]) -> RoIExtractor:
    """Build the extractor from its own random stream, leaving torch's global CPU RNG where it
    was. Extractors own different numbers of parameters (none for ``roi_align``, millions for
    ``deform_roi_pool``); drawn from the global stream, they would shift the initial weights of
    everything built after them (RPN, box head, predictor), and runs with the same seed but
    different extractors would no longer start from the same shared weights. The stream is
    seeded by one number drawn from a copy of the global state, so it still follows the seed."""
    with torch.random.fork_rng(devices=[]):  # the extractor is built on the CPU
        torch.default_generator.manual_seed(int(torch.randint(0, 2**62, ())))
        return build_roi_extractor(name, in_channels=in_channels, **settings)
