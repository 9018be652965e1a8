"""Benchmark loading a COCO train2017-sized training set: old CocoDetection against the new one.

    python tools/benchmark_data.py                 # full size: 118k images, 860k annotations
    python tools/benchmark_data.py --scale 0.05    # quick
    python tools/benchmark_data.py --reference-workers false   # skip the old path's epoch

Prints build seconds, resident memory after the build and its peak per loader (each built in
its own fresh process), and each of 4 DataLoader workers' USS/PSS over an epoch.
"""

from __future__ import annotations

import sys

from detkit.benchmarks.arguments import config_from_arguments, config_parser
from detkit.benchmarks.data import DataBenchConfig, format_data_benchmark, run_data_benchmark
from detkit.engine.errors import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(__doc__, DataBenchConfig)
    cfg = config_from_arguments(DataBenchConfig, vars(parser.parse_args(argv)))
    print(format_data_benchmark(run_data_benchmark(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
