"""PNG output for drawn images."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch import Tensor


def save_png(image: Tensor, path: Path) -> Path:
    """Write a ``uint8 Tensor[3, H, W]`` as PNG."""
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path)
    return path
