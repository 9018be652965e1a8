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
import json
import sys

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
    for field in dataclasses.fields(OpsBenchConfig):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(field.default), default=field.default)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = vars(parser.parse_args(argv))
    out_json = args.pop("json")
    cfg = OpsBenchConfig(**args)
    results = run_ops_benchmark(cfg)
    print(format_results(cfg, results))
    if out_json:
        with open(out_json, "w") as f:
            json.dump({"config": dataclasses.asdict(cfg), "results": results_as_dicts(results)},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
