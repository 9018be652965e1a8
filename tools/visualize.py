"""Draw predictions and learned offsets on validation images.

    python tools/visualize.py --config CFG --ckpt CKPT --out DIR [--num_images 8]
        [--score_thresh 0.5] [data overrides]

Writes DIR/image<ID>.png (ground truth green, predictions red) and, for extractors that move
their bins (the deformable ones: RoIExtractor.moves_bins), DIR/image<ID>_offsets.png: each top
detection's pooling bins, grey dots at the regular grid joined to the moved bins (enlarged to at
least 512 px so that the bins stay legible). Images with no detection at --score_thresh are
counted in the output (and get no offsets figure).
"""

import sys

from detkit.engine.cli import visualize
from detkit.engine.errors import run_tool

if __name__ == "__main__":
    sys.exit(run_tool(visualize))
