"""Benchmark detkit.ops against torchvision: forward and forward+backward time, peak memory.

    python tools/benchmark_ops.py                 # the default shape on CPU
    python tools/benchmark_ops.py --device cuda   # on a GPU
    python tools/benchmark_ops.py --num-rois 1024 --json out.json
    python tools/benchmark_ops.py --only roi_align,prroi_pool   # a subset of the ops
    python tools/benchmark_ops.py --only roi_align_huge --huge-roi 2000 --repeats 3  # memory bound
"""

from __future__ import annotations

import dataclasses
import sys

from detkit.benchmarks.arguments import config_from_arguments, config_parser, write_json
from detkit.benchmarks.ops import (
    OpsBenchConfig,
    format_results,
    results_as_dicts,
    run_ops_benchmark,
)
from detkit.engine.errors import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(__doc__, OpsBenchConfig,
                           json_help="also write the results to this JSON file")
    args = vars(parser.parse_args(argv))
    cfg = config_from_arguments(OpsBenchConfig, args)
    results = run_ops_benchmark(cfg)
    print(format_results(cfg, results))
    write_json(args["json"], {"config": dataclasses.asdict(cfg),
                              "results": results_as_dicts(results)})
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
