"""Generate the built-in synthetic set: ``python tools/make_dataset.py [--root data/synthetic]``.

Every :class:`~detkit.data.synthetic.SyntheticSpec` field, the scene's
(:class:`~detkit.data.synthetic.SceneSpec`) included, is a flag (``--seed 0``, ``--image-size
256``, ``--train-images 1200``, ``--max-objects 6``, ...). An existing set of the same spec is
reused; one of another spec is refused. Shows where it writes and a progress bar per split,
then the set's statistics.
"""

import logging
import sys

from detkit.data.datamodule import SYNTHETIC_ROOT
from detkit.data.synthetic import (
    SyntheticSpec,
    dataset_statistics,
    ensure_dataset,
    format_statistics,
    spec_fields,
)
from detkit.engine.errors import ToolArgumentParser, run_tool


def main(argv: list[str] | None = None) -> None:
    parser = ToolArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=SYNTHETIC_ROOT, help="where the set goes")
    for name, kind, default in spec_fields():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default,
                            help=f"default {default}")
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.pop("root")
    try:
        paths = ensure_dataset(root, SyntheticSpec.from_record(args))
    except ValueError as error:  # an invalid spec, or root holds something else
        parser.error(str(error))
    print(f"synthetic set at {root}")
    print(format_statistics(dataset_statistics(paths)))


if __name__ == "__main__":
    sys.exit(run_tool(main))
