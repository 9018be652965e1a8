"""Generate a built-in synthetic set: ``python tools/make_dataset.py [--preset default]
[--deformation none|mild|strong] [--scale-range medium|coco|extreme] [--clutter none|low|high]
[--occlusion none|low|high] [--seed 0] [--root DIR]``.

The preset and factors (:class:`~detkit.data.synthetic.SyntheticFactors`) choose the set, as
``--data.synthetic.*`` does for training; it goes where training looks for it,
``data/synthetic/<preset>[_<factor>-<setting>...]``, unless ``--root`` is given. Every other
:class:`~detkit.data.synthetic.SyntheticSpec` field, the scene's included, can be overridden by a
flag of its own (``--image-size 128``, ``--train-images 100``, ``--max-objects 3``, ...); such a
custom set needs ``--root`` (use it with ``--data.root``). An existing set of the same spec is
reused; one of another spec is refused. Shows where it writes and a progress bar per split, then
the set's statistics (factor settings first).
"""

import logging
import sys
from pathlib import Path

from detkit.data.datamodule import SYNTHETIC_ROOT
from detkit.data.synthetic import (
    FACTORS,
    PRESETS,
    SyntheticFactors,
    SyntheticSpec,
    dataset_statistics,
    ensure_dataset,
    format_statistics,
    spec_fields,
)
from detkit.engine.errors import ToolArgumentParser, run_tool


def main(argv: list[str] | None = None) -> None:
    parser = ToolArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None,
                        help=f"where the set goes (default {SYNTHETIC_ROOT}/<preset and factors>)")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    for name, table in FACTORS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", choices=list(table), default=None,
                            help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    for name, kind, _ in spec_fields():
        if name != "seed":
            parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                                help="override (default: from the preset and factors)")
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.pop("root")
    try:
        factors = SyntheticFactors(**{name: args.pop(name) for name in
                                      ("preset", *FACTORS, "seed")})
        overrides = {name: value for name, value in args.items() if value is not None}
        spec = SyntheticSpec.from_record({**factors.spec().record(), **overrides})
        if overrides and root is None:
            raise ValueError(f"--root is needed with {sorted(overrides)}: a custom set has no "
                             f"folder under {SYNTHETIC_ROOT}")
        root = root if root is not None else str(Path(SYNTHETIC_ROOT) / factors.folder_name())
        paths = ensure_dataset(root, spec)
    except ValueError as error:  # an invalid spec, or root holds something else
        parser.error(str(error))
    print(f"synthetic set at {root}")
    print(format_statistics(dataset_statistics(paths)))


if __name__ == "__main__":
    sys.exit(run_tool(main))
