"""RoI feature extractors, chosen by name.

``EXTRACTORS`` is the one place where the names users type (``--model.roi_extractor NAME``) map
to classes; there is no registry and nothing registers itself on import.
"""

from __future__ import annotations

from typing import Any

from detkit.models.roi_extractors.base import RoIExtractor
from detkit.models.roi_extractors.deformable import (
    DeformPSRoIPoolExtractor,
    DeformRoIPoolExtractor,
    ModulatedDeformRoIPoolExtractor,
    PSRoIAlignExtractor,
)
from detkit.models.roi_extractors.pooling import (
    LevelMappedRoIAlign,
    LevelMappedRoIPool,
    PyramidFusion,
    SingleLevelRoIAlign,
    SpatialPyramidPool,
)

EXTRACTORS: dict[str, type[RoIExtractor]] = {
    "roi_align": LevelMappedRoIAlign,
    "roi_align_single": SingleLevelRoIAlign,
    "roi_pool": LevelMappedRoIPool,
    "pyramid_fusion": PyramidFusion,
    "spp": SpatialPyramidPool,
    "deform_roi_pool": DeformRoIPoolExtractor,
    "mdeform_roi_pool": ModulatedDeformRoIPoolExtractor,
    "psroi_align": PSRoIAlignExtractor,
    "deform_psroi_pool": DeformPSRoIPoolExtractor,
}


def build_roi_extractor(name: str, *, in_channels: int, **settings: Any) -> RoIExtractor:
    """Build the extractor called ``name`` with its own ``settings`` (keyword arguments of its
    class); an unknown name fails with the list of valid ones."""
    if name not in EXTRACTORS:
        raise ValueError(
            f"unknown roi_extractor {name!r}; valid names: {', '.join(EXTRACTORS)}"
        )
    return EXTRACTORS[name](in_channels=in_channels, **settings)


__all__ = [
    "EXTRACTORS",
    "DeformPSRoIPoolExtractor",
    "DeformRoIPoolExtractor",
    "LevelMappedRoIAlign",
    "LevelMappedRoIPool",
    "ModulatedDeformRoIPoolExtractor",
    "PSRoIAlignExtractor",
    "PyramidFusion",
    "RoIExtractor",
    "SingleLevelRoIAlign",
    "SpatialPyramidPool",
    "build_roi_extractor",
]
