"""Benchmark detkit.ops against torchvision: forward and forward+backward time, peak memory.

    python tools/benchmark_ops.py                 # the default shape on CPU
    python tools/benchmark_ops.py --device cuda   # on a GPU
    python tools/benchmark_ops.py --num-rois 1024 --json out.json
    python tools/benchmark_ops.py --only roi_align,prroi_pool   # a subset of the ops
    python tools/benchmark_ops.py --only roi_align_huge --huge-roi 2000 --repeats 3  # memory bound
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from detkit.benchmarks.arguments import add_config_arguments, config_from_arguments, write_json
from detkit.benchmarks.ops import (
    OpsBenchConfig,
    format_results,
    results_as_dicts,
    run_ops_benchmark,
)
from detkit.engine.errors import ToolArgumentParser, run_tool


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, OpsBenchConfig)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = vars(parser.parse_args(argv))
    cfg = config_from_arguments(OpsBenchConfig, args)
    results = run_ops_benchmark(cfg)
    print(format_results(cfg, results))
    write_json(args["json"], {"config": dataclasses.asdict(cfg),
                              "results": results_as_dicts(results)})
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
