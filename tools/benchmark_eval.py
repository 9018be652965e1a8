"""Benchmark detkit's COCO evaluation against pycocotools on generated data of COCO's shape.

    python tools/benchmark_eval.py                          # 5,000 images; old path on 500 / 100
    python tools/benchmark_eval.py --num-images 500         # quicker
    python tools/benchmark_eval.py --reference-images 5000  # old detection path on everything
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from detkit.benchmarks.eval import EvalBenchConfig, format_eval_benchmark, run_eval_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(EvalBenchConfig):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(field.default), default=field.default)
    cfg = EvalBenchConfig(**vars(parser.parse_args(argv)))
    print(format_eval_benchmark(run_eval_benchmark(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
