"""Study sets: named factor settings that change one property of the set at a time, and presets.

Each factor maps its setting names to concrete :class:`~detkit.data.synthetic.spec.SceneSpec`
numbers in ONE table below, and each table sets its own fields only, so changing one factor
changes only that property:

* ``deformation`` (:data:`DEFORMATION`): the objects' aspect change, shear and elastic warp
  (``none``: the canonical shapes, only rotated). Distractors keep their own fixed deformation.
* ``scale_range`` (:data:`SCALE_RANGE`): the objects' sqrt(area) range (``medium``: 32..96 px
  only; ``coco``: COCO's three buckets, 10..180 px; ``extreme``: 6..220 px).
* ``clutter`` (:data:`CLUTTER`): distractors per image and the background's texture contrast
  (``none``: no distractors on a plain background).
* ``occlusion`` (:data:`OCCLUSION`): the least visible fraction an object keeps under later
  objects, distractors and the image border (``none``: every object fully visible).

What stays fixed between two settings of one factor (same seed): the background colours and
pattern, the number of distractors and objects, the objects' categories, size buckets and
sizes (and their deformation draws, rescaled); placement draws the same numbers until a
position is rejected (a placement that fits under one setting may not under another), after
which the two scenes' later draws differ.

A preset (:data:`PRESETS`) names one setting per factor, the split sizes and scene fields no
factor sets (objects per image): ``default`` is the learnable set (the quickstart's); ``hard`` is
the original set (the numbers of :class:`~detkit.data.synthetic.spec.SyntheticSpec`'s defaults,
byte-identical images).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from detkit._validation import choice_problem
from detkit.data.synthetic.spec import SceneSpec, SyntheticSpec

DEFORMATION: dict[str, dict[str, float]] = {
    "none": {"max_aspect": 1.0, "max_shear": 0.0, "elastic_strength": 0.0},
    "mild": {"max_aspect": 1.25, "max_shear": 0.15, "elastic_strength": 0.06},
    "strong": {"max_aspect": 1.6, "max_shear": 0.35, "elastic_strength": 0.15},
}
SCALE_RANGE: dict[str, dict[str, float]] = {
    "medium": {"min_object_size": 32.0, "max_object_size": 96.0},
    "coco": {"min_object_size": 10.0, "max_object_size": 180.0},
    "extreme": {"min_object_size": 6.0, "max_object_size": 220.0},
}
CLUTTER: dict[str, dict[str, float]] = {
    "none": {"max_distractors": 0, "background_contrast": 0.0},
    "low": {"max_distractors": 2, "background_contrast": 25.0},
    "high": {"max_distractors": 6, "background_contrast": 55.0},
}
OCCLUSION: dict[str, dict[str, float]] = {
    "none": {"min_visibility": 1.0},
    "low": {"min_visibility": 0.7},
    "high": {"min_visibility": 0.4},
}
FACTORS: dict[str, dict[str, dict[str, float]]] = {
    "deformation": DEFORMATION, "scale_range": SCALE_RANGE, "clutter": CLUTTER,
    "occlusion": OCCLUSION,
}
"""Every factor's table by its name."""

PRESETS: dict[str, dict[str, Any]] = {
    # Plain shapes, all three COCO buckets, no clutter or occlusion, up to 10 objects per image,
    # 2000 training images: learnable within a CPU quickstart (configs/quickstart.yaml; its
    # measured AP is in README's Data section).
    "default": {"factors": {"deformation": "none", "scale_range": "coco", "clutter": "none",
                            "occlusion": "none"},
                "scene": {"max_objects": 10},
                "train_images": 2000, "val_images": 200, "test_images": 200},
    # The original set: strong deformation and clutter; near AP 0 for every extractor at
    # the quickstart's budget.
    "hard": {"factors": {"deformation": "strong", "scale_range": "coco", "clutter": "high",
                         "occlusion": "high"},
             "train_images": 1200, "val_images": 200, "test_images": 200},
}

Preset = Literal["default", "hard"]
DeformationSetting = Literal["none", "mild", "strong"]
ScaleRangeSetting = Literal["medium", "coco", "extreme"]
LevelSetting = Literal["none", "low", "high"]


@dataclass(frozen=True)
class SyntheticFactors:
    """A study set by name: a preset, optionally with some factors set otherwise.

    Each factor left None takes the preset's setting. On the command line:
    ``--data.synthetic.preset hard --data.synthetic.deformation none``.

    Args:
        preset: a name in :data:`PRESETS`.
        deformation, scale_range, clutter, occlusion: a setting name in the factor's table
            (:data:`FACTORS`), or None for the preset's.
        seed: the set's seed (>= 0).
    """

    preset: Preset = "default"
    deformation: DeformationSetting | None = None
    scale_range: ScaleRangeSetting | None = None
    clutter: LevelSetting | None = None
    occlusion: LevelSetting | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [choice_problem("preset", self.preset, sorted(PRESETS)),
                    *(choice_problem(name, getattr(self, name), [*table, None])
                      for name, table in FACTORS.items())]
        problems = [p for p in problems if p is not None]
        if self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        if problems:
            raise ValueError("invalid SyntheticFactors: " + "; ".join(problems))

    def settings(self) -> dict[str, str]:
        """Every factor's setting name: the given ones, the preset's for the rest."""
        preset = PRESETS[self.preset]["factors"]
        return {name: getattr(self, name) or preset[name] for name in FACTORS}

    def spec(self) -> SyntheticSpec:
        """The generator spec: the preset's split sizes and the factors' numbers."""
        scene: dict[str, Any] = {}
        for name, setting in self.settings().items():
            scene.update(FACTORS[name][setting])
        preset = PRESETS[self.preset]
        scene.update(preset.get("scene", {}))  # fields no factor sets, e.g. objects per image
        sizes = {k: v for k, v in preset.items() if k not in ("factors", "scene")}
        return SyntheticSpec(seed=self.seed, scene=dataclasses.replace(SceneSpec(), **scene),
                             **sizes)

    def folder_name(self) -> str:
        """A folder name that differs whenever :meth:`spec` does: the preset, then each
        factor that differs from the preset's and a non-zero seed, e.g. ``default`` or
        ``hard_deformation-none_seed-3``."""
        preset = PRESETS[self.preset]["factors"]
        parts = [self.preset] + [f"{name}-{setting}" for name, setting in self.settings().items()
                                 if setting != preset[name]]
        if self.seed:
            parts.append(f"seed-{self.seed}")
        return "_".join(parts)


def factor_settings(scene: SceneSpec) -> dict[str, str]:
    """Each factor's setting name whose numbers ``scene`` has, or ``"custom"`` (recorded with
    every set, so reports can name its factors)."""
    found = {}
    for name, table in FACTORS.items():
        matches = [setting for setting, numbers in table.items()
                   if all(getattr(scene, field) == value for field, value in numbers.items())]
        found[name] = matches[0] if matches else "custom"
    return found
