"""RoI feature extractors, chosen by name.

``EXTRACTORS`` is the one place where the names users type (``--model.roi_extractor NAME``) map
to classes; there is no registry and nothing registers itself on import. Every other list of
extractor names (the comparison study's default, the benchmarks) is derived from it, in its
order: from the no-multi-scale baseline to the learned-sampling extractors.

Layout: ``base`` (the :class:`RoIExtractor` base class, FPN level mapping, :class:`BinLayout`),
``level_mapped`` (fixed bins, one level per RoI), ``gated`` (RoIAlign's fixed bins recombined by
learned sigmoid gates: mixed avg/max pooling, channel and spatial attention), ``all_level`` (every
level per RoI, fused), ``position_sensitive`` (per-bin channel groups of a thin map),
``deformable`` (learned sampling: the bins move).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detkit.models.roi_extractors.all_level import PyramidFusionExtractor
from detkit.models.roi_extractors.base import FPN_LEVELS, BinLayout, RoIExtractor
from detkit.models.roi_extractors.deformable import (
    DeformPSRoIPoolExtractor,
    DeformRoIPoolExtractor,
    ModulatedDeformRoIPoolExtractor,
)
from detkit.models.roi_extractors.gated import AttentionPoolExtractor, MixedPoolExtractor
from detkit.models.roi_extractors.level_mapped import (
    PrRoIPoolExtractor,
    RoIAlignExtractor,
    RoIPoolExtractor,
    SingleLevelRoIAlignExtractor,
    SpatialPyramidPoolExtractor,
)
from detkit.models.roi_extractors.position_sensitive import PSRoIAlignExtractor

EXTRACTORS: dict[str, type[RoIExtractor]] = {
    "roi_align_single": SingleLevelRoIAlignExtractor,
    "roi_pool": RoIPoolExtractor,
    "roi_align": RoIAlignExtractor,
    "prroi_pool": PrRoIPoolExtractor,
    "mixed_pool": MixedPoolExtractor,
    "attention_pool": AttentionPoolExtractor,
    "pyramid_fusion": PyramidFusionExtractor,
    "spp": SpatialPyramidPoolExtractor,
    "deform_roi_pool": DeformRoIPoolExtractor,
    "mdeform_roi_pool": ModulatedDeformRoIPoolExtractor,
    "psroi_align": PSRoIAlignExtractor,
    "deform_psroi_pool": DeformPSRoIPoolExtractor,
}


def check_extractor_names(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming every name not in :data:`EXTRACTORS`, and the valid ones
    (for lists of extractors the user typed: the study, the benchmarks)."""
    unknown = [name for name in names if name not in EXTRACTORS]
    if unknown:
        raise ValueError(f"unknown extractors {unknown}; valid names: {', '.join(EXTRACTORS)}")


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
    "FPN_LEVELS",
    "AttentionPoolExtractor",
    "BinLayout",
    "DeformPSRoIPoolExtractor",
    "DeformRoIPoolExtractor",
    "MixedPoolExtractor",
    "ModulatedDeformRoIPoolExtractor",
    "PSRoIAlignExtractor",
    "PrRoIPoolExtractor",
    "PyramidFusionExtractor",
    "RoIAlignExtractor",
    "RoIExtractor",
    "RoIPoolExtractor",
    "SingleLevelRoIAlignExtractor",
    "SpatialPyramidPoolExtractor",
    "build_roi_extractor",
]
