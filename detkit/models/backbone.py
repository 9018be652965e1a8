"""Backbones with FPN, built with torchvision's builders, from scratch or from torchvision's
ImageNet weights (read from the torch hub cache; downloaded only when asked for by name).

Features come out as a dict keyed by pyramid level, ``"p2"`` (stride 4) ... ``"p6"`` (stride 64,
the max-pooled extra level the RPN uses), so a RoI extractor knows each level's stride from its
name instead of inferring it from tensor sizes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum, get_model, get_model_weights, resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from detkit._validation import check_choice, weights_file

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")
Norm = Literal["group", "frozen_bn", "bn"]


def norm_layer(norm: Norm) -> Callable[[int], nn.Module]:
    """The normalisation for backbone and FPN.

    ``"group"``: GroupNorm(32) — works from scratch at the small batch sizes detection trains
    with (Wu & He 2018), the default. ``"frozen_bn"``: BatchNorm with frozen statistics — for
    pre-trained weights (torchvision's default). ``"bn"``: trainable BatchNorm (large batches only).
    """
    check_choice("norm", norm, ("group", "frozen_bn", "bn"))
    if norm == "group":
        # 32 groups where the width allows (MobileNet has widths like 72: gcd gives 8 groups)
        return lambda channels: nn.GroupNorm(math.gcd(32, channels), channels)
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    return nn.BatchNorm2d


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


IMAGENET = "imagenet"
# classifier heads of torchvision's classification models, which a backbone leaves out
_HEAD_PREFIXES = ("fc.", "classifier.")


def _all_stages(name: str) -> int:
    """Stages torchvision counts in ``trainable_layers``: 5 for ResNets, 6 for MobileNetV3."""
    return 5 if name.startswith("resnet") else 6


def backbone_settings(
    name: str, weights: str | None, norm: Norm | None, trainable_layers: int | None,
) -> tuple[Norm, int]:
    """The normalisation and trainable stages a backbone gets: what the caller set, else
    torchvision's detection recipe (``fasterrcnn_resnet50_fpn``): with pre-trained ``weights``,
    BatchNorm with frozen statistics and 3 trainable stages; from scratch, GroupNorm (see
    :func:`norm_layer`) and every stage trainable."""
    if norm is None:
        norm = "frozen_bn" if weights else "group"
    if trainable_layers is None:
        trainable_layers = 3 if weights else _all_stages(name)
    return norm, trainable_layers


def build_backbone(
    name: str = "resnet18", *, norm: Norm | None = None, weights: str | None = None,
    trainable_layers: int | None = None, fpn_channels: int = 256, width: int = 64,
) -> BackboneFPN:
    """Build ``name`` + FPN from scratch or from torchvision's ImageNet weights.

    Args:
        name: one of ``BACKBONES``.
        norm: see :func:`norm_layer`; FPN layers use GroupNorm too when ``norm="group"``.
            None: ``"frozen_bn"`` with ``weights``, ``"group"`` without.
        weights: None (from scratch); ``"imagenet"`` (torchvision's default ImageNet weights for
            ``name``) or a torchvision weights name such as ``"ResNet50_Weights.IMAGENET1K_V2"``,
            read from the torch hub cache (``$TORCH_HOME/hub/checkpoints``) and downloaded there
            once when missing; or the path of a torchvision classification state dict, or of
            a detkit training checkpoint (its backbone, without the FPN, is loaded).
        trainable_layers: backbone stages left trainable, as torchvision counts them (ResNets
            0-5, MobileNetV3 0-6). None: 3 with ``weights``, all without.
        fpn_channels: FPN width (the FPN paper's 256; the FPN and RPN convolutions on the
            stride-4 level dominate a CPU step and scale with its square). ResNets only.
        width: a ResNet's stem and first-stage channels (torchvision's 64; each later stage
            doubles it). 32 costs about a quarter of the convolutions; from scratch or from a
            local state dict of the same width (e.g. a narrow backbone saved from a run).

    Raises:
        ValueError: a bad name, norm or range, or weights that do not fit (another
            architecture, BatchNorm statistics for GroupNorm, ...); the message says what to set.
        FileNotFoundError: named weights neither in the cache nor downloadable; the message
            names the cache file to put them in.
    """
    check_choice("backbone", name, tuple(BACKBONES))
    norm, trainable_layers = backbone_settings(name, weights, norm, trainable_layers)
    local = weights_file(weights) is not None
    if width != 64 and not (name.startswith("resnet") and (weights is None or local)):
        raise ValueError(f"backbone width {width} needs a ResNet from scratch or from a local "
                         f"state dict of that width (torchvision's weights are 64 wide), got "
                         f"{name} with weights {weights!r}")
    if width < 1:
        raise ValueError(f"backbone width must be >= 1, got {width}")
    if not 0 <= trainable_layers <= _all_stages(name):
        raise ValueError(f"trainable_layers must be in [0, {_all_stages(name)}] for {name}, got "
                         f"{trainable_layers}")
    # read the weights before building: a missing file fails before minutes of model setup
    state, source = load_backbone_state(name, weights) if weights else ({}, "")
    _check_norm(state, source, norm)
    if name.startswith("resnet"):
        body = _resnet_fpn(name, norm, trainable_layers, fpn_channels, width)
    else:
        if fpn_channels != 256:
            raise ValueError(f"fpn_channels is fixed at 256 for {name}, got {fpn_channels}")
        body = mobilenet_backbone(backbone_name=name, weights=None, fpn=True,
                                  norm_layer=_mobilenet_norm(norm),
                                  trainable_layers=trainable_layers,
                                  # stages at strides 4, 8, 16, 32 (its last two share 32)
                                  returned_layers=[1, 2, 3, 4])
    if weights:
        # the feature extractor is `features` of torchvision's MobileNetV3, all of a ResNet's
        prefix = "" if name.startswith("resnet") else "features."
        _load_state(body.body, state, source=source, name=name, norm=norm, prefix=prefix)
    return BackboneFPN(body, _level_strides(body))

_RESNET_BLOCKS = {"resnet18": (resnet.BasicBlock, [2, 2, 2, 2]),
                  "resnet34": (resnet.BasicBlock, [3, 4, 6, 3]),
                  "resnet50": (resnet.Bottleneck, [3, 4, 6, 3]),
                  "resnet101": (resnet.Bottleneck, [3, 4, 23, 3])}


class _NarrowResNet(resnet.ResNet):
    """torchvision's ResNet with ``width`` channels in the stem and first stage (64 there), each
    later stage doubling it. Its convolutions cost about ``(width / 64)²`` of the standard net's;
    from scratch or a local state dict of its width (no ImageNet weights fit it)."""

    def __init__(self, name: str, width: int, norm: Callable[[int], nn.Module]) -> None:
        nn.Module.__init__(self)
        block, layers = _RESNET_BLOCKS[name]
        self._norm_layer, self.dilation, self.groups, self.base_width = norm, 1, 1, 64
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def _resnet_fpn(name: str, norm: Norm, trainable_layers: int, fpn_channels: int,
                width: int = 64) -> nn.Module:
    """torchvision's ``resnet_fpn_backbone`` with the FPN width, norm and backbone width as
    arguments (it fixes 256 channels and builds the FPN without normalisation)."""
    if width == 64:
        net = resnet.__dict__[name](weights=None, norm_layer=norm_layer(norm))
    else:
        net = _NarrowResNet(name, width, norm_layer(norm))
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


def load_backbone_state(name: str, weights: str) -> tuple[dict[str, Tensor], str]:
    """The ImageNet state dict ``weights`` names for backbone ``name`` (see
    :func:`build_backbone`), and where it came from, for messages."""
    path = weights_file(weights)
    if path is not None:
        return _read_state_dict(path, name), str(path)
    enum = _weights_enum(name, weights)
    cache = weights_cache_file(enum)
    return _cached_state_dict(enum, cache), f"{enum} ({cache})"


def weights_cache_file(weights: WeightsEnum) -> Path:
    """Where torchvision's ``weights.get_state_dict`` keeps the file: the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``) under the
    URL's file name."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _weights_enum(name: str, spec: str) -> WeightsEnum:
    family = get_model_weights(name)
    if spec == IMAGENET:
        return family.DEFAULT
    choices = ", ".join(str(w) for w in family)
    enum_name, _, value = spec.partition(".")
    if not enum_name.endswith("_Weights") or not value:
        raise ValueError(f"backbone_weights {spec!r} is neither an existing file, 'imagenet', "
                         f"nor a torchvision weights name ({choices} for {name})")
    if enum_name != family.__name__:
        owner = next((b for b in BACKBONES if get_model_weights(b).__name__ == enum_name), None)
        hint = f"set backbone={owner!r}, or " if owner else ""
        raise ValueError(f"backbone_weights {spec!r} are not {name} weights: {hint}pass one of "
                         f"{choices}, or 'imagenet'")
    if value not in family.__members__:
        raise ValueError(f"backbone_weights {spec!r}: torchvision has no such weights; {name} "
                         f"has {choices}")
    return family[value]


def _cached_state_dict(weights: WeightsEnum, cache: Path) -> dict[str, Tensor]:
    """torchvision's own loading (``get_state_dict`` -> ``load_state_dict_from_url``): reads the
    cache file, downloading it first when missing; its failures as clear errors."""
    cached = cache.is_file()
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as error:
        if cached:
            raise ValueError(f"{cache} (the cached {weights}) is unreadable ({error}); delete it "
                             "to download it again") from error
        if isinstance(error, OSError):  # urllib's URLError, socket errors: offline
            raise FileNotFoundError(
                f"{weights} is not in the torch hub cache and could not be downloaded from "
                f"{weights.url} ({error}). Offline, download it on another machine and put it "
                f"at {cache} (the cache follows $TORCH_HOME), or pass the file's path") from error
        raise ValueError(f"downloading {weights} from {weights.url} failed ({error})") from error


# where a detkit training checkpoint keeps the backbone's feature extractor (FPN excluded)
CHECKPOINT_BODY = "model.backbone.body.body."


def _read_state_dict(path: Path, name: str) -> dict[str, Tensor]:
    """A torchvision classification state dict for backbone ``name`` from ``path``: the file
    itself, or the backbone of a detkit training checkpoint (its ``state_dict``'s
    :data:`CHECKPOINT_BODY` tensors, renamed as torchvision names them; the FPN, RPN and heads
    stay behind)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises several types for a file it cannot parse
        raise ValueError(f"backbone_weights {path}: not a readable state dict ({error})") from error
    inner = state.get("state_dict") if isinstance(state, dict) else None
    if isinstance(inner, dict) and any(k.startswith(CHECKPOINT_BODY) for k in inner):
        prefix = "" if name.startswith("resnet") else "features."
        return {prefix + k.removeprefix(CHECKPOINT_BODY): v for k, v in inner.items()
                if k.startswith(CHECKPOINT_BODY) and isinstance(v, Tensor)}
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"backbone_weights {path} is not a state dict of tensors (found {keys}); "
                         "a training checkpoint holds one under a key such as 'state_dict'")
    return state


def _load_state(module: nn.Module, state: dict[str, Tensor], *, source: str, name: str,
                norm: Norm, prefix: str = "") -> None:
    """Load a torchvision classification state dict into the feature extractor ``module``
    (whose keys are the file's minus ``prefix``): every tensor the module has must be there with
    its shape, and nothing else but the classifier head; otherwise a ValueError says what to set
    (BatchNorm statistics for GroupNorm are refused before, by :func:`_check_norm`)."""
    stats = _bn_statistics(state)
    own = {prefix + k: v for k, v in module.state_dict().items()
           if not k.endswith("num_batches_tracked")}
    problems = _mismatches(own, state)
    if problems:
        missing = [k for k in own if k not in state]
        missing_stats = bool(missing) and all(k.endswith(("running_mean", "running_var"))
                                              for k in missing)
        guess = _guess_backbone(state)
        if norm != "group" and not stats and missing_stats:
            hint = "the file has no BatchNorm statistics: set norm='group' if it was trained so"
        elif guess is not None and guess != name:
            hint = f"they look like {guess} weights: set backbone={guess!r}"
        elif (stem := state.get("conv1.weight")) is not None and name.startswith("resnet") \
                and stem.shape != own["conv1.weight"].shape:
            hint = (f"the file is another width of {name}: set backbone_width to the file's "
                    f"(its conv1 has {stem.shape[0]} channels)")
        else:
            hint = f"pass a torchvision {name} classification state dict, or 'imagenet'"
        raise ValueError(f"backbone_weights {source} do not fit backbone {name!r}: "
                         f"{'; '.join(problems)}; {hint}")
    module.load_state_dict({k[len(prefix):]: state[k] for k in own}, strict=False)


def _bn_statistics(state: dict[str, Tensor]) -> list[str]:
    return [k for k in state if k.endswith((".running_mean", ".running_var"))]


def _check_norm(state: dict[str, Tensor], source: str, norm: Norm) -> None:
    """GroupNorm has a weight and a bias like BatchNorm, so BatchNorm weights would load into
    it, their statistics dropped, without this check."""
    stats = _bn_statistics(state)
    if norm == "group" and stats:
        raise ValueError(
            f"backbone_weights {source} were trained with BatchNorm (they hold its running "
            f"statistics, e.g. {stats[0]}), which GroupNorm (norm='group') would drop: set "
            "norm='frozen_bn' (--model.norm frozen_bn; torchvision's detection recipe and the "
            "default with weights), or norm='bn'")


def _mismatches(own: dict[str, Tensor], state: dict[str, Tensor]) -> list[str]:
    """What keeps ``state`` from loading into a module whose state dict is ``own``."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not k.startswith(_HEAD_PREFIXES)
                  and not k.endswith("num_batches_tracked")]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) of the model are not in the file, e.g. "
                        f"{', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) of the file are not in the model, e.g. "
                        f"{', '.join(unexpected[:3])}")
    if shapes:
        problems.append(f"{len(shapes)} shape(s) differ, e.g. {shapes[0]}")
    return problems


def _guess_backbone(state: dict[str, Tensor]) -> str | None:
    """The backbone whose torchvision classifier (with BatchNorm) has ``state``'s tensor names
    and shapes, head aside; built on the meta device, so nothing is allocated."""
    def signature(tensors: dict[str, Tensor]) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in tensors.items()
                if not k.startswith(_HEAD_PREFIXES) and not k.endswith("num_batches_tracked")}

    wanted = signature(state)
    for name in BACKBONES:
        with torch.device("meta"):
            net = get_model(name, weights=None)
        if signature(net.state_dict()) == wanted:
            return name
    return None
