"""A detector's named parts: copy them from another detector's weights, and keep them fixed.

The parts of :class:`~detkit.models.faster_rcnn.FasterRCNN`, by the names users type:

* ``backbone``: the feature extractor (ResNet / MobileNetV3 stages);
* ``fpn``: the feature pyramid on top of it;
* ``rpn``: the region proposal network's head (its anchors have no weights);
* ``roi_heads``: the RoI extractor's own weights (offset branches, gates), the box head and the
  predictor.

Starting the backbone, FPN and RPN from a trained detector and freezing them trains only the RoI
extractor and box head on fixed features and fixed proposals: the RoI-extractor study's
controlled protocol (README, "The study on the learnable set"), and the usual head-only
fine-tuning of a pretrained detector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from detkit._validation import choice_problem

# part name -> its module's attribute path inside FasterRCNN
PART_MODULES: dict[str, str] = {
    "backbone": "backbone.body.body",
    "fpn": "backbone.body.fpn",
    "rpn": "rpn",
    "roi_heads": "roi_heads",
}
PARTS = tuple(PART_MODULES)


def check_parts(name: str, parts: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every entry of ``parts`` is a name in :data:`PARTS` (once)."""
    problems = [p for p in (choice_problem(f"{name} entry", part, PARTS) for part in parts) if p]
    if len(set(parts)) < len(parts):
        problems.append(f"{name} names a part twice: {list(parts)}")
    if problems:
        raise ValueError("; ".join(problems))


def part_module(model: nn.Module, part: str) -> nn.Module:
    """The submodule of a FasterRCNN that ``part`` names."""
    module = model
    for attribute in PART_MODULES[part].split("."):
        module = getattr(module, attribute)
    return module


def load_parts(model: nn.Module, state: Mapping[str, Tensor], parts: Sequence[str], *,
               source: str) -> None:
    """Copy ``parts`` of ``model`` (a FasterRCNN) from ``state``, a FasterRCNN state dict (keys as
    ``model.state_dict()`` names them, e.g. ``backbone.body.fpn.inner_blocks.0.0.weight``).

    Every tensor of each part must be in ``state`` with the part's shape; nothing is loaded
    otherwise. ``source`` names the weights in messages.

    Raises:
        ValueError: naming the missing and mis-shaped tensors of each part.
    """
    check_parts("parts", parts)
    updates: list[tuple[nn.Module, dict[str, Tensor]]] = []
    problems = []
    for part in parts:
        module, prefix = part_module(model, part), PART_MODULES[part] + "."
        own = {k: v for k, v in module.state_dict().items()
               if not k.endswith("num_batches_tracked")}
        theirs = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        missing = [k for k in own if k not in theirs]
        shapes = [f"{k} {tuple(theirs[k].shape)} (here {tuple(v.shape)})"
                  for k, v in own.items() if k in theirs and theirs[k].shape != v.shape]
        if missing:
            problems.append(f"{part}: {len(missing)} tensors missing (e.g. "
                            f"{', '.join(missing[:2])})")
        if shapes:
            problems.append(f"{part}: other shapes: {', '.join(shapes[:2])}")
        if not missing and not shapes:
            updates.append((module, {k: theirs[k] for k in own}))
    if problems:
        raise ValueError(f"{source} does not fit this model's {', '.join(parts)}: "
                         f"{'; '.join(problems)}. Build the model as the weights were trained "
                         "(backbone, backbone_width, norm, fpn_channels, rpn.anchor_sizes, ...)")
    for module, tensors in updates:
        module.load_state_dict(tensors, strict=False)


def freeze_parts(model: nn.Module, parts: Sequence[str]) -> None:
    """Keep ``parts`` of ``model`` fixed: their parameters stop requiring gradients, and their
    BatchNorm layers (if any) keep their statistics (see :func:`keep_frozen_statistics`, which
    ``FasterRCNN.train`` calls). Records the parts as ``model.frozen_parts``."""
    check_parts("freeze", parts)
    for part in parts:
        part_module(model, part).requires_grad_(False)
    model.frozen_parts = tuple(parts)


def keep_frozen_statistics(model: nn.Module) -> None:
    """Put the BatchNorm layers of ``model.frozen_parts`` in eval mode: a frozen part's running
    statistics must not follow the training batches (GroupNorm and FrozenBatchNorm keep none)."""
    for part in getattr(model, "frozen_parts", ()):
        for module in part_module(model, part).modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
