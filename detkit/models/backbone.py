"""Backbones with FPN, built with torchvision's builders (never downloading weights).

Features come out as a dict keyed by pyramid level, ``"p2"`` (stride 4) ... ``"p6"`` (stride 64,
the max-pooled extra level the RPN uses), so a RoI extractor knows each level's stride from its
name instead of inferring it from tensor sizes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")
Norm = Literal["group", "frozen_bn", "bn"]


def norm_layer(norm: Norm) -> Callable[[int], nn.Module]:
    """The normalisation for backbone and FPN.

    ``"group"``: GroupNorm(32) — works from scratch at the small batch sizes detection trains
    with (Wu & He 2018), the default. ``"frozen_bn"``: BatchNorm with frozen statistics — for
    pre-trained weights (torchvision's default). ``"bn"``: trainable BatchNorm (large batches only).
    """
    if norm == "group":
        # 32 groups where the width allows (MobileNet has widths like 72: gcd gives 8 groups)
        return lambda channels: nn.GroupNorm(math.gcd(32, channels), channels)
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    raise ValueError(f"norm must be one of 'group', 'frozen_bn', 'bn', got {norm!r}")


def _mobilenet_norm(norm: Norm) -> Callable[..., nn.Module]:
    """torchvision's MobileNetV3 passes ``eps``/``momentum`` to its norm layer."""
    make = norm_layer(norm)
    return lambda channels, **_: make(channels)


class BackboneFPN(nn.Module):
    """A torchvision backbone-with-FPN whose outputs are renamed by pyramid level.

    Attributes:
        out_channels: channels of every output level.
        strides: ``{"p2": 4, ...}`` for the levels this backbone returns.
    """

    def __init__(self, body: nn.Module, strides: dict[str, int]) -> None:
        super().__init__()
        self.body = body
        self.out_channels: int = body.out_channels
        self.strides = strides

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[N, 3, H, W]`` (H, W multiples of the largest stride) -> ``{level:
        Tensor[N, out_channels, H / stride, W / stride]}`` ordered from the finest level."""
        outputs = self.body(images)
        return OrderedDict(zip(self.strides, outputs.values(), strict=True))


def build_backbone(
    name: str = "resnet18", *, norm: Norm = "group", weights_path: str | None = None,
    trainable_layers: int = 5, fpn_channels: int = 256,
) -> BackboneFPN:
    """Build ``name`` + FPN from scratch, or from a local torchvision state dict.

    Args:
        name: one of ``BACKBONES``.
        norm: see :func:`norm_layer`; FPN layers use GroupNorm too when ``norm="group"``.
        weights_path: a torchvision ImageNet state dict on disk (``resnet18-f37072fd.pth``...);
            nothing is ever downloaded.
        trainable_layers: backbone stages left trainable (5 = all), as torchvision counts them.
        fpn_channels: FPN width (the FPN paper's 256; the FPN and RPN convolutions on the
            stride-4 level dominate a CPU step and scale with its square). ResNets only.
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {name!r}")
    if name.startswith("resnet"):
        body = _resnet_fpn(name, norm, trainable_layers, fpn_channels)
        if weights_path:
            _load_backbone_weights(body.body, weights_path)
    else:
        if fpn_channels != 256:
            raise ValueError(f"fpn_channels is fixed at 256 for {name}, got {fpn_channels}")
        body = mobilenet_backbone(backbone_name=name, weights=None, fpn=True,
                                  norm_layer=_mobilenet_norm(norm),
                                  trainable_layers=min(trainable_layers, 6),
                                  # stages at strides 4, 8, 16, 32 (its last two share 32)
                                  returned_layers=[1, 2, 3, 4])
        if weights_path:
            _load_backbone_weights(body.body, weights_path, prefix="features.")
    return BackboneFPN(body, _level_strides(body))


def _resnet_fpn(name: str, norm: Norm, trainable_layers: int, fpn_channels: int) -> nn.Module:
    """torchvision's ``resnet_fpn_backbone`` with the FPN width and norm as arguments (it fixes
    256 channels and builds the FPN without normalisation)."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers}")
    net = resnet.__dict__[name](weights=None, norm_layer=norm_layer(norm))
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for param_name, param in net.named_parameters():
        if not any(param_name.startswith(layer) for layer in trainable):
            param.requires_grad_(False)
    widths = [net.inplanes // 8 * 2**i for i in range(4)]  # C2..C5 (inplanes = C5 width)
    return BackboneWithFPN(
        net, {f"layer{i}": str(i - 1) for i in range(1, 5)}, widths, fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=norm_layer(norm) if norm == "group" else None)


@torch.no_grad()
def _level_strides(body: nn.Module) -> dict[str, int]:
    """Name each output by its level, measured once on a dummy image (the builders do not say)."""
    was_training = body.training
    body.eval()
    size = 256
    outputs = body(torch.zeros(1, 3, size, size))
    body.train(was_training)
    strides = {}
    for feature in outputs.values():
        stride = size // feature.shape[-1]
        level = f"p{round(math.log2(stride))}"
        if level in strides:
            raise ValueError(f"backbone returns two feature maps at stride {stride}")
        strides[level] = stride
    return strides


def _load_backbone_weights(module: nn.Module, path: str, prefix: str = "") -> None:
    """Load a torchvision classification state dict into the feature extractor, strictly for the
    layers the extractor has (the classifier head is expected to be left over)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"backbone_weights {path} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
