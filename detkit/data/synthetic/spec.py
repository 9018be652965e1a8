"""What the synthetic set is made of: categories, splits, size buckets and the generation spec.

:class:`SceneSpec` holds what one image contains (objects, their sizes and deformation,
clutter and occlusion); :class:`SyntheticSpec` adds the set around it (seed, image size, images
per split, JPEG quality). ``spec.json`` and the annotation files record the spec flat
(:meth:`SyntheticSpec.record`), one key per field, as command lines name them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

CATEGORY_NAMES = ("disk", "ring", "crescent", "triangle", "star", "cross")
SPLITS = ("train", "val", "test")
SIZE_BUCKETS = ("small", "medium", "large")
# COCO's size-bucket boundaries on sqrt(area), in pixels (pycocotools' areaRng: 32², 96²).
BUCKET_EDGES = (32.0, 96.0)


@dataclass(frozen=True)
class Deformation:
    """Ranges of an instance's random deformation (see :func:`~detkit.data.synthetic.shapes.
    random_shape`); all zero-effect values (1, 0, 0) leave the canonical shape, only rotated.

    Attributes:
        max_aspect: aspect change factor drawn log-uniformly from ``[1/max, max]``.
        max_shear: shear factor drawn uniformly from ``[-max, max]``.
        elastic_strength: largest elastic displacement at a grid node, as a fraction of the
            shape's radius.
    """

    max_aspect: float
    max_shear: float
    elastic_strength: float


@dataclass(frozen=True)
class SceneSpec:
    """What one image contains. Every field changes the images. The factor tables of
    :mod:`~detkit.data.synthetic.factors` set these fields by name, one group per factor.

    Args:
        max_objects: objects per image are drawn uniformly from ``1..max_objects`` (fewer remain
            when a placement fails; an image without objects is a negative).
        min_object_size, max_object_size: sqrt(area) range in pixels. The bucket is drawn
            uniformly among COCO's buckets that overlap it, then the side uniformly in the
            overlap (10..180 gives small 10..32, medium 32..96, large 96..180; 32..96 gives
            medium objects only).
        max_distractors: distractors (blobs, lines, arcs) per image, uniform in ``0..max``.
        background_contrast: std of the second background colour around the first (RGB
            levels): 0 gives plain single-colour backgrounds, the texture pattern unseen.
        max_aspect: aspect change factor drawn log-uniformly from ``[1/max, max]``.
        max_shear: shear factor drawn uniformly from ``[-max, max]``.
        elastic_strength: largest elastic displacement at a grid node, as a fraction of the
            shape's radius (0 turns the warp off).
        min_visibility: an occluder is kept only where every object stays this visible.
    """

    # objects and their sizes
    max_objects: int = 6
    min_object_size: float = 10.0
    max_object_size: float = 180.0
    # clutter
    max_distractors: int = 6
    background_contrast: float = 55.0
    # deformation
    max_aspect: float = 1.6
    max_shear: float = 0.35
    elastic_strength: float = 0.15
    # occlusion
    min_visibility: float = 0.4

    def __post_init__(self) -> None:
        problems = []
        if self.max_objects < 1 or self.max_distractors < 0:
            problems.append("need max_objects >= 1 and max_distractors >= 0")
        if not 1 <= self.min_object_size < self.max_object_size:
            problems.append(f"need 1 <= min_object_size < max_object_size, got "
                            f"{self.min_object_size}, {self.max_object_size}")
        if self.background_contrast < 0:
            problems.append(f"need background_contrast >= 0, got {self.background_contrast}")
        if self.max_aspect < 1 or self.max_shear < 0 or self.elastic_strength < 0:
            problems.append("need max_aspect >= 1, max_shear >= 0 and elastic_strength >= 0")
        if not 0 < self.min_visibility <= 1:
            problems.append("need 0 < min_visibility <= 1")
        if problems:
            raise ValueError("invalid SceneSpec: " + "; ".join(problems))

    @property
    def deformation(self) -> Deformation:
        """The objects' deformation ranges."""
        return Deformation(self.max_aspect, self.max_shear, self.elastic_strength)

    def size_bounds(self) -> dict[str, tuple[float, float]]:
        """The sqrt(area) range drawn from in each COCO bucket that ``min_object_size..
        max_object_size`` overlaps, in :data:`SIZE_BUCKETS` order."""
        edges = (0.0, *BUCKET_EDGES, np.inf)
        bounds = {}
        for i, bucket in enumerate(SIZE_BUCKETS):
            low = max(edges[i], self.min_object_size)
            high = min(edges[i + 1], self.max_object_size)
            if low < high:
                bounds[bucket] = (low, high)
        return bounds


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Every field changes the images; ``spec.json`` records them all.
    The defaults are the ``hard`` preset's numbers (:mod:`~detkit.data.synthetic.factors`
    names study sets; :meth:`SyntheticFactors.spec` builds theirs).

    COCO's size buckets are absolute pixel areas: the even balance holds at ``image_size`` 256
    and above; in much smaller images large objects stop fitting and small ones dominate.

    Args:
        seed: base seed (>= 0) of every image's generator.
        image_size: side of the square images in pixels.
        train_images, val_images, test_images: images per split.
        scene: what each image contains.
        jpeg_quality: JPEG quality of the written images (1..95).
    """

    seed: int = 0
    image_size: int = 256
    train_images: int = 1200
    val_images: int = 200
    test_images: int = 200
    scene: SceneSpec = field(default_factory=SceneSpec)
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        problems = []
        if self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        if not 64 <= self.image_size <= 4096:
            problems.append(f"image_size must be in 64..4096, got {self.image_size}")
        counts = (self.train_images, self.val_images, self.test_images)
        if min(counts) < 0 or max(counts) >= 1_000_000:
            problems.append(f"images per split must be in 0..999999, got {counts}")
        if not isinstance(self.scene, SceneSpec):
            problems.append(f"scene must be a SceneSpec, got {type(self.scene).__name__}")
        if not 1 <= self.jpeg_quality <= 95:
            problems.append(f"need 1 <= jpeg_quality <= 95, got {self.jpeg_quality}")
        if problems:
            raise ValueError("invalid SyntheticSpec: " + "; ".join(problems))

    def num_images(self, split: str) -> int:
        return {"train": self.train_images, "val": self.val_images,
                "test": self.test_images}[split]

    def record(self) -> dict[str, Any]:
        """Every field, the scene's in its place, flat: ``{"seed": 0, ..., "max_objects": 6,
        ..., "jpeg_quality": 92}`` (how ``spec.json`` and the annotation files store it)."""
        flat: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            flat.update(asdict(value) if f.name == "scene" else {f.name: value})
        return flat

    @classmethod
    def from_record(cls, flat: dict[str, Any]) -> SyntheticSpec:
        """The spec whose :meth:`record` is ``flat`` (e.g. parsed command-line flags).

        Raises:
            ValueError: naming keys that are no field.
        """
        scene_names = {f.name for f in fields(SceneSpec)}
        own_names = {f.name for f in fields(cls)} - {"scene"}
        unknown = sorted(set(flat) - scene_names - own_names)
        if unknown:
            raise ValueError(f"not SyntheticSpec/SceneSpec fields: {unknown}")
        scene = SceneSpec(**{k: v for k, v in flat.items() if k in scene_names})
        return cls(**{k: v for k, v in flat.items() if k in own_names}, scene=scene)


def spec_fields() -> list[tuple[str, type, Any]]:
    """``(name, type, default)`` of every field of :meth:`SyntheticSpec.record` (for command
    lines; :meth:`SyntheticSpec.from_record` builds the spec back)."""
    return [(name, type(value), value) for name, value in SyntheticSpec().record().items()]


def size_bucket(area: float) -> str:
    """COCO's size bucket (``"small"``, ``"medium"``, ``"large"``) of an annotation area."""
    side = float(np.sqrt(area))
    return SIZE_BUCKETS[int(side >= BUCKET_EDGES[0]) + int(side >= BUCKET_EDGES[1])]


def image_id(split: str, index: int) -> int:
    """The COCO image id of image ``index`` of ``split``: unique across splits."""
    return SPLITS.index(split) * 1_000_000 + index + 1
