"""The built-in synthetic detection set: shapes on (optionally) cluttered backgrounds, COCO format.

Study sets are named by a preset and factor settings (:class:`SyntheticFactors`, see
:mod:`~detkit.data.synthetic.factors`): ``deformation``, ``scale_range``, ``clutter`` and
``occlusion`` each change one property while the rest is held. Preset ``default`` (plain shapes,
COCO's three buckets, no clutter or occlusion, up to 10 objects per image, 2000 training images)
is learnable in a CPU quickstart; preset ``hard`` is the original set described below (strong
deformation, high clutter and occlusion: the numbers of :class:`SyntheticSpec`'s defaults).

The hard set is made to separate RoI feature extractors:

* **Sizes** span COCO's three buckets in about equal numbers: the bucket (small ``area < 32²``,
  medium ``32² <= area < 96²``, large ``area >= 96²``) is drawn first, then the object's
  square-root area uniformly inside it (``min_object_size..32``, ``32..96``,
  ``96..max_object_size`` px), and the final *visible* area is checked to stay in that bucket.
  Single-level pooling has to serve 10 px and 180 px objects alike; FPN level mapping need not.
* **Non-rigid deformation**: every instance gets its own aspect change, shear, rotation and a
  smooth elastic warp (a random displacement field on a coarse grid, cubic-upsampled), so the
  discriminative detail (a hole, a bite, a point) sits somewhere else in every box: a fixed
  pooling grid is at a disadvantage against deformable pooling.
* **Classes differ in shape detail, not colour** (colours are random per object):
  ``disk``, ``ring`` (a disk with a hole), ``crescent`` (a disk with a bite), ``triangle``,
  ``star`` (five points) and ``cross`` (a plus sign, at any rotation). Category ids are 1..6 in
  :data:`CATEGORY_NAMES` order.
* **Clutter**: textured backgrounds (noise, gradients, stripes, checks, blurred colour noise),
  distractors of no class (irregular blobs, lines, thin partial arcs) under and over the
  objects, and partial occlusion of objects by later objects and distractors (objects are
  drawn largest first). An occluder is only kept where every object it covers stays at least
  ``min_visibility`` visible and in its size bucket, so no object needs to be dropped.

Annotations come from the rendered masks (a pixel belongs to an object where its coverage is
>= 0.5): ``bbox`` is the tight ``[x, y, w, h]`` box of the *visible* pixels in image pixels
(pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``), ``area`` is the visible pixel count
(COCO semantics: the segmentation area, which COCO's size buckets use - not the box area),
``iscrowd`` is 0, and ``visibility`` (extra key) is the visible fraction of the full mask.
Image ids are unique across splits (``split_index * 1_000_000 + index + 1``).

Everything is deterministic by ``spec.seed``: each image draws from its own
``numpy.random.Generator`` seeded by ``(seed, split, index)``, so an image does not depend on the
order of generation nor on the other splits' sizes.

The hard set (the default spec: seed 0; 1200/200/200 images of 256 px) gives 5525 objects (3.5
per image, no image without objects): small 34%, medium 34%, large 32% overall and in every split
(train 1431/1399/1329), 640..735 objects per class in train; about 30 s on one CPU core, 34 MB of
JPEGs. The ``default`` preset gives 6817 training objects (3.4 per image of the 1..10 drawn: with no
occlusion allowed, many find no free place): small 53%, medium 25%, large 21%, 951..1363 per class;
38 MB for its 2400 images
(``python tools/make_dataset.py`` prints these statistics).

Modules, each one concern:

* :mod:`~detkit.data.synthetic.factors`: the factor tables, presets and
  :class:`SyntheticFactors` (a study set by name, and the folder it lives in).
* :mod:`~detkit.data.synthetic.spec`: categories, splits, size buckets, :class:`SceneSpec`
  (what an image contains) and :class:`SyntheticSpec` (the set around it).
* :mod:`~detkit.data.synthetic.shapes`: the category polygons and per-instance deformation.
* :mod:`~detkit.data.synthetic.rendering`: a deformed shape -> an anti-aliased coverage mask.
* :mod:`~detkit.data.synthetic.painting`: textured backgrounds and compositing colour layers.
* :mod:`~detkit.data.synthetic.scenes`: placing objects and distractors (occlusion rules) and
  the annotations of what stays visible: :func:`render_image`.
* :mod:`~detkit.data.synthetic.files`: splits on disk, reuse by ``spec.json``, statistics.
"""

from detkit.data.synthetic.factors import (
    FACTORS,
    PRESETS,
    SyntheticFactors,
    factor_settings,
)
from detkit.data.synthetic.files import (
    FORMAT_VERSION,
    SPEC_FILE,
    dataset_paths,
    dataset_statistics,
    ensure_dataset,
    format_statistics,
    generate_split,
)
from detkit.data.synthetic.scenes import render_image
from detkit.data.synthetic.spec import (
    BUCKET_EDGES,
    CATEGORY_NAMES,
    SIZE_BUCKETS,
    SPLITS,
    SceneSpec,
    SyntheticSpec,
    image_id,
    size_bucket,
    spec_fields,
)

__all__ = [
    "BUCKET_EDGES",
    "CATEGORY_NAMES",
    "FACTORS",
    "FORMAT_VERSION",
    "PRESETS",
    "SIZE_BUCKETS",
    "SPEC_FILE",
    "SPLITS",
    "SceneSpec",
    "SyntheticFactors",
    "SyntheticSpec",
    "dataset_paths",
    "dataset_statistics",
    "ensure_dataset",
    "factor_settings",
    "format_statistics",
    "generate_split",
    "image_id",
    "render_image",
    "size_bucket",
    "spec_fields",
]
