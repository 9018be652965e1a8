"""Train a detector: ``python tools/train.py --config configs/NAME.yaml [--trainer.max_steps N]``.

Dotted overrides (``--model.roi_extractor deform_roi_pool``, ``--data.batch_size 4``) follow
LightningCLI; ``--ckpt_path last`` resumes an interrupted run. At the end the best checkpoint
is evaluated and the metrics table printed.
"""

import sys

from detkit.engine.cli import train
from detkit.engine.errors import run_tool

if __name__ == "__main__":
    sys.exit(run_tool(train))
