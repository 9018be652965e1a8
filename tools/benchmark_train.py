"""Training images/s and inference ms/image: detkit vs torchvision's FasterRCNN, every extractor.

    python tools/benchmark_train.py
    python tools/benchmark_train.py --image-size 512 --extractors roi_align,deform_roi_pool
    python tools/benchmark_train.py --quality configs/quickstart.yaml   # quality per budget
"""

from __future__ import annotations

import dataclasses
import sys

from detkit.benchmarks.arguments import config_from_arguments, config_parser, write_json
from detkit.benchmarks.quality import format_quality, run_quality
from detkit.benchmarks.train import (
    TrainBenchConfig,
    compare_extractors,
    compare_with_torchvision,
    format_report,
    lightning_overhead,
)
from detkit.engine.errors import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(__doc__, TrainBenchConfig,
                           json_help="also write the numbers to this JSON file")
    parser.add_argument("--quality", metavar="CONFIG",
                        help="instead: train CONFIG, then torchvision's Faster R-CNN from "
                             "scratch (defaults, and tuned to CONFIG's anchors, proposals, RoIs, "
                             "head width, normalisation, FPN width and recipe) for the same "
                             "wall-clock budget; compare test-split AP")
    args = vars(parser.parse_args(argv))
    cfg = config_from_arguments(TrainBenchConfig, args)
    if args["quality"]:
        result = run_quality(args["quality"], seed=cfg.seed)
        print(format_quality(result))
        write_json(args["json"], result)
        return 0
    versus = compare_with_torchvision(cfg)
    extractors = compare_extractors(cfg)
    overhead = lightning_overhead(cfg)
    print(format_report(cfg, versus, extractors, overhead))
    write_json(args["json"], {"config": dataclasses.asdict(cfg), "versus_torchvision": versus,
                              "extractors": extractors, "lightning": overhead})
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
