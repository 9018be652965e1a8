"""Evaluate a checkpoint: ``python tools/eval.py --config CFG --ckpt CKPT --out DIR``.

Prints the COCO table (AP, AR by size, proposal recall, per-class AP; VOC AP for VOC data) and
writes ``DIR/metrics.json`` and ``DIR/predictions.json`` (COCO results format). A checkpoint
whose architecture or classes differ from the command line and data is refused.
"""

import sys

from detkit.engine.cli import evaluate
from detkit.engine.errors import run_tool

if __name__ == "__main__":
    sys.exit(run_tool(evaluate))
