"""Evaluate a checkpoint: ``python tools/eval.py --config CFG --ckpt CKPT --out DIR``.

Prints the COCO table (AP, AR by size, proposal recall, per-class AP; VOC AP for VOC data) and
writes ``DIR/metrics.json`` and ``DIR/predictions.json`` (COCO results format).
"""

from detkit.engine.cli import evaluate

if __name__ == "__main__":
    evaluate()
