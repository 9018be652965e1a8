"""Detect objects on your own images with a trained checkpoint (no config needed).

    python tools/predict.py --ckpt CKPT --images DIR|GLOB|FILE --out OUT [--score_thresh 0.3]
        [--batch_size 1] [--device cpu|cuda] [--min_size N --max_size N] [--offsets]

Writes OUT/detections.json (COCO results plus "file_name" and "category_name"; "bbox" is xywh
in the original image's pixels; "category_id" is the model's label 1..K) and OUT/<image>.png
with the labelled boxes; with --offsets (deformable extractors) also OUT/<image>_offsets.png,
the learned sampling bins of the top detections. Images are resized as validation did in
training (the checkpoint records min_size/max_size; --min_size/--max_size override).
Unreadable files are skipped and listed at the end. The Python API behind it: detkit.Detector.
"""

import argparse
import sys

from detkit.engine.errors import ToolArgumentParser, run_tool  # light: no Lightning, no models


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(
        prog="tools/predict.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by tools/train.py")
    parser.add_argument("--images", required=True,
                        help="a folder, a glob pattern (quote it; ** recurses) or one file")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--score_thresh", type=float, default=0.3,
                        help="keep and draw detections scoring at least this (0.3)")
    parser.add_argument("--batch_size", type=int, default=1, help="images per forward pass (1)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument("--min_size", type=int, default=None,
                        help="resize the shorter side to this (default: the checkpoint's)")
    parser.add_argument("--max_size", type=int, default=None,
                        help="cap on the longer side (default: the checkpoint's)")
    parser.add_argument("--offsets", action="store_true",
                        help="also draw the learned sampling bins (deformable extractors)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from detkit.engine.predict import run_prediction  # after parsing: --help stays instant

    run = run_prediction(args.ckpt, args.images, args.out, score_thresh=args.score_thresh,
                         batch_size=args.batch_size, device=args.device, min_size=args.min_size,
                         max_size=args.max_size, offsets=args.offsets,
                         progress=not args.no_progress)
    return 0 if run.images else 1


if __name__ == "__main__":
    sys.exit(run_tool(main))
