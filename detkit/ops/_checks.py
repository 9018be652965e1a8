"""Argument checks and conversions shared by the RoI operators.

Every check raises ``ValueError`` naming the offending argument, so a user who passes boxes in
the wrong format learns which argument and what shape was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

RoIs = Tensor | Sequence[Tensor]


def check_input(input: Tensor, name: str = "input") -> None:
    """``input`` must be a floating ``Tensor[N, C, H, W]``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} must be a Tensor[N, C, H, W], got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"{name} must be a Tensor[N, C, H, W], got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {input.dtype}")


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``7`` or ``(7, 7)`` -> ``(7, 7)``; both entries must be positive integers."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value}")
    return value  # type: ignore[return-value]


def boxes_to_rois(boxes_per_image: Sequence[Tensor]) -> Tensor:
    """``[Tensor[L_i, 4]]`` xyxy boxes, one per image -> ``Tensor[K, 5]`` ``(batch_index, x1, y1,
    x2, y2)`` with image ``i`` at batch index ``i`` (at least one entry).

    Raises:
        ValueError: an entry is not a ``Tensor[L, 4]`` (named by its index in ``rois``).
    """
    parts = []
    for i, boxes in enumerate(boxes_per_image):
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"rois[{i}] must be a Tensor[L, 4] of xyxy boxes, got {shape}")
        parts.append(torch.cat([torch.full_like(boxes[:, :1], i), boxes], dim=1))
    return torch.cat(parts, dim=0)


def as_roi_tensor(rois: RoIs, input: Tensor, keep_grad: bool = False) -> Tensor:
    """Return RoIs as ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.

    Args:
        rois: ``Tensor[K, 5]``, or a list with one ``Tensor[L_i, 4]`` of ``xyxy`` boxes per image
            (image ``i`` gets batch index ``i``), as torchvision's RoI ops accept.
        input: the feature map ``Tensor[N, C, H, W]`` the RoIs index into.
        keep_grad: return the RoIs still attached to their autograd graph (for an op that is
            differentiable in its RoI coordinates); by default they are detached.

    Raises:
        ValueError: wrong shape, wrong device, or a batch index that is not an integer in
            ``[0, N)``.
    """
    if isinstance(rois, (list, tuple)):
        rois = boxes_to_rois(rois) if rois else input.new_zeros((0, 5))
    elif not isinstance(rois, Tensor):
        raise TypeError(f"rois must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(rois)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(
            "rois must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2) or a list of "
            f"Tensor[L, 4], got shape {tuple(rois.shape)}"
        )
    if rois.device != input.device:
        raise ValueError(f"rois are on {rois.device} but input is on {input.device}")
    if not rois.is_floating_point():
        rois = rois.to(input.dtype)
    if rois.shape[0] > 0:
        batch = rois[:, 0].detach()
        bad = ~torch.isfinite(batch) | (batch < 0) | (batch >= input.shape[0])
        bad |= batch != batch.floor()
        if bool(bad.any()):
            first = batch[bad][0].item()
            raise ValueError(
                f"rois[:, 0] (batch index) must be an integer in [0, {input.shape[0]}) for an "
                f"input of batch size {input.shape[0]}; got {first}"
            )
    return rois if keep_grad else rois.detach()


def check_per_bin(
    tensor: Tensor | None, name: str, channels: int, num_rois: int, output_size: tuple[int, int]
) -> None:
    """``tensor`` (an offset or mask) must be ``Tensor[K, channels, PH, PW]`` or None."""
    if tensor is None:
        return
    expected = (num_rois, channels, *output_size)
    if not isinstance(tensor, Tensor) or tuple(tensor.shape) != expected:
        got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ValueError(
            f"{name} must have shape (K, {channels}, PH, PW) = {expected} for {num_rois} RoIs and "
            f"output size {output_size}, got {got}"
        )


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half and bfloat16 inputs are computed (accumulated) in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def finite_rois_call(op: Callable[..., Tensor], input: Tensor, rois: Tensor, *args) -> Tensor:
    """``op(input, rois, *args)`` for torchvision's RoI ops, with detkit's contract for bad RoIs:
    a RoI with a NaN or infinite coordinate pools to zeros and passes no gradient (torchvision's
    CUDA kernels return NaN for it, its CPU max-pool kernels undefined values)."""
    rois = rois.to(input.dtype)
    bad = ~torch.isfinite(rois).all(dim=1)
    out = op(input, rois.masked_fill(bad[:, None], 0.0), *args)
    return out.masked_fill(bad[:, None, None, None], 0.0)

