"""Benchmark loading a COCO train2017-sized training set: old CocoDetection against the new one.

    python tools/benchmark_data.py                 # full size: 118k images, 860k annotations
    python tools/benchmark_data.py --scale 0.05    # quick
    python tools/benchmark_data.py --reference-workers false   # skip the old path's epoch

Prints build seconds, resident memory after the build and its peak per loader (each built in
its own fresh process), and each of 4 DataLoader workers' USS/PSS over an epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from detkit.benchmarks.data import DataBenchConfig, format_data_benchmark, run_data_benchmark


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(DataBenchConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = _bool if isinstance(field.default, bool) else type(field.default)
        parser.add_argument(flag, type=kind, default=field.default)
    cfg = DataBenchConfig(**vars(parser.parse_args(argv)))
    print(format_data_benchmark(run_data_benchmark(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
