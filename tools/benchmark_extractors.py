"""Training-step time of each RoI extractor + box head on fixed FPN features, vs roi_align.

    python tools/benchmark_extractors.py --threads 1
    python tools/benchmark_extractors.py --extractors prroi_pool,mixed_pool,attention_pool
    python tools/benchmark_extractors.py --device cuda --rois 512 --repeats 20

For a whole Faster R-CNN step per extractor (backbone included) see tools/benchmark_train.py.
"""

from __future__ import annotations

import dataclasses
import sys

from detkit.benchmarks.arguments import config_from_arguments, config_parser, write_json
from detkit.benchmarks.extractors import (
    ExtractorBenchConfig,
    format_extractor_report,
    time_extractor_heads,
)
from detkit.engine.errors import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(__doc__, ExtractorBenchConfig,
                           json_help="also write the numbers to this JSON file")
    args = vars(parser.parse_args(argv))
    cfg = config_from_arguments(ExtractorBenchConfig, args)
    results = time_extractor_heads(cfg)
    print(format_extractor_report(cfg, results))
    write_json(args["json"], {"config": dataclasses.asdict(cfg), "extractors": results})
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
