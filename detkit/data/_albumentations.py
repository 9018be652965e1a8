"""albumentations, imported after disabling its network update check (DESIGN.md: offline).

Import albumentations through this module only, so the variable is set before its first import.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
from albumentations.core.composition import BaseCompose  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

__all__ = ["A", "BaseCompose", "ToTensorV2"]
