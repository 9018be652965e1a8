"""Train and evaluate RoI extractors side by side under one budget; write a report.

    python tools/compare.py --config configs/quickstart.yaml --out runs/compare
    python tools/compare.py --config CFG --extractors roi_align,deform_roi_pool --seeds 3 \\
        --out DIR --trainer.max_steps 2000 --data.batch_size 4
    python tools/compare.py --config CFG --extractors roi_align,deform_roi_pool --seeds 3 \\
        --out DIR --vary model.roi_extractor_args.output_size=2,4,7,14 --reference-value 7

Unrecognised arguments are passed to every training run (data and trainer overrides). --vary
KEY=V1,V2,... crosses one more setting (any config key, values read as YAML) with the extractors
and seeds. Runs with the same seed share initial weights, data order and augmentation; the report
gives mean ± 95% CI over seeds and the paired difference against --baseline with its CI (* where
it excludes 0). With --vary it also gives each value against --reference-value (the first value
by default), paired by seed, and whether each extractor's gain over the baseline changes with
the value. Writes DIR/report.md, DIR/study.json (every number), plots (DIR/ap_ar_by_size.png
and DIR/ap_vs_iou.png; with --vary, DIR/factor_effect_vs_KEY.png, DIR/effect_vs_KEY.png and
DIR/ap_by_size_vs_KEY.png; with --baseline B, the report, study.json and effect plot are named
..._vs_B) and DIR/runs/ (TensorBoard); run again, it reuses finished runs whose
resolved config matches (so a grid grows by a seed or a value), resumes interrupted ones from
their last.ckpt, and refuses runs trained with other settings (naming them) unless --rerun.
--reuse-runs DIR also reuses another study's finished runs with the same settings (linked).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from detkit.engine.compare import DEFAULT_EXTRACTORS, compare, parse_sweep
from detkit.engine.errors import ToolArgumentParser, run_tool


def main(argv: list[str] | None = None) -> int:
    parser = ToolArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append",
                        help="training config (YAML); give it twice to layer a second file "
                        "over the first (e.g. configs/study.yaml over configs/quickstart.yaml)")
    parser.add_argument("--extractors", default=",".join(DEFAULT_EXTRACTORS))
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--vary", metavar="KEY=V1,V2,...",
                        help="sweep one setting, e.g. data.synthetic.deformation=none,mild,strong")
    parser.add_argument("--baseline", help="extractor the differences are taken against "
                        "(default: roi_align if among --extractors, else the first); given, "
                        "it names the outputs it changes (DIR/report_vs_BASELINE.md, "
                        "DIR/study_vs_BASELINE.json, DIR/effect_vs_KEY_vs_BASELINE.png)")
    parser.add_argument("--reference-value", metavar="V",
                        help="with --vary: the value the factor's effect is measured against "
                        "(default: the first)")
    parser.add_argument("--rerun", action="store_true",
                        help="retrain runs in --out whose settings differ (else refused)")
    parser.add_argument("--reuse-runs", action="append", default=[], metavar="DIR",
                        help="reuse finished runs under DIR (another study's) whose settings "
                        "are a run's of this study: its folder becomes a link to them")
    parser.add_argument("--extractor-args", default="{}",
                        help='JSON: per-extractor settings, e.g. {"spp": {"grids": [1, 2]}}')
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = compare(args.config, [e for e in args.extractors.split(",") if e], args.out,
                     seeds=args.seeds, overrides=overrides,
                     extractor_args=json.loads(args.extractor_args), rerun=args.rerun,
                     sweep=parse_sweep(args.vary) if args.vary else None,
                     baseline=args.baseline, reference=args.reference_value,
                     reuse_runs=args.reuse_runs)
    print(report.read_text())
    print(f"\nreport: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
