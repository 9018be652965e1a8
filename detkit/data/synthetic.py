"""The built-in synthetic detection set (placeholder: implemented by a separate issue)."""

from __future__ import annotations

from pathlib import Path


def ensure_dataset(root: str | Path) -> dict[str, str]:
    """Generate the synthetic COCO-format set under ``root`` unless it is already there.

    Returns:
        COCO paths ``{"train_images", "train_ann", "val_images", "val_ann"}``.

    Raises:
        NotImplementedError: always, for now.
    """
    raise NotImplementedError(
        "the built-in synthetic dataset is not implemented yet; use --data.format coco or voc"
    )
