"""Benchmark detkit's COCO evaluation against pycocotools on generated data of COCO's shape.

    python tools/benchmark_eval.py                          # 5,000 images; old path on 500 / 100
    python tools/benchmark_eval.py --num-images 500         # quicker
    python tools/benchmark_eval.py --reference-images 5000  # old detection path on everything
"""

from __future__ import annotations

import argparse
import sys

from detkit.benchmarks.arguments import add_config_arguments, config_from_arguments
from detkit.benchmarks.eval import EvalBenchConfig, format_eval_benchmark, run_eval_benchmark
from detkit.engine.errors import ToolArgumentParser, run_tool


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, EvalBenchConfig)
    cfg = config_from_arguments(EvalBenchConfig, vars(parser.parse_args(argv)))
    print(format_eval_benchmark(run_eval_benchmark(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
