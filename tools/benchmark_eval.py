"""Benchmark detkit's COCO evaluation against pycocotools on generated data of COCO's shape.

    python tools/benchmark_eval.py                          # 5,000 images; old path on 500 / 100
    python tools/benchmark_eval.py --num-images 500         # quicker
    python tools/benchmark_eval.py --reference-images 5000  # old detection path on everything
"""

from __future__ import annotations

import sys

from detkit.benchmarks.arguments import config_from_arguments, config_parser
from detkit.benchmarks.eval import EvalBenchConfig, format_eval_benchmark, run_eval_benchmark
from detkit.engine.errors import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(__doc__, EvalBenchConfig)
    cfg = config_from_arguments(EvalBenchConfig, vars(parser.parse_args(argv)))
    print(format_eval_benchmark(run_eval_benchmark(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
