#!/usr/bin/env bash
# README's study ("What pooling does"), every command in order: the shared detector, then
# questions d, c, a and b, each one tools/compare.py command over 3 seeds (SEEDS=5 for more),
# and "donors", which checks d against a second shared detector trained with roi_pool.
#   bash tools/study.sh [d donors c a b]      # the questions to run (default: all)
# Resumable: run it again and every finished run is reused, an interrupted one resumes from its
# last.ckpt, so it can stop at any point and grow a seed at a time. Reports land in
# runs/study/<question>/report.md (a: report_vs_psroi_align.md and report_vs_roi_align.md).
# README's Budget gives the measured time on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# the clone's virtual environment (README's quickstart makes it), else python on PATH
if [ -x .venv/bin/python ]; then DEFAULT_PYTHON=.venv/bin/python; else DEFAULT_PYTHON=python; fi
PYTHON="${PYTHON:-$DEFAULT_PYTHON}"
SEEDS="${SEEDS:-3}"
LAYERS=(--config configs/quickstart.yaml --config configs/study.yaml)
DONOR=runs/study/donor/checkpoints/best.ckpt

if [ ! -f "$DONOR" ]; then  # train (or resume) the shared detector once
  "$PYTHON" tools/train.py --config configs/quickstart.yaml --config configs/study_donor.yaml \
    --run_dir runs/study/donor
fi

# every question reuses the runs another one trained with the same settings (linked, e.g. d's
# roi_align runs are a's deformation=none ones and c's output_size=7 ones)
compare() { "$PYTHON" tools/compare.py "${LAYERS[@]}" --seeds "$SEEDS" --reuse-runs runs/study "$@"; }

for question in "${@:-d donors c a b}"; do
  for q in $question; do
    case "$q" in
      d)  # quantization and the other single-level samplers against roi_align
        compare --out runs/study/extractors \
          --extractors roi_align,roi_pool,prroi_pool,mixed_pool,attention_pool ;;
      donors)  # does d's answer depend on the extractor the shared detector was trained with?
        if [ ! -f runs/study/donor_roi_pool/checkpoints/best.ckpt ]; then
          "$PYTHON" tools/train.py --config configs/quickstart.yaml \
            --config configs/study_donor.yaml --model.roi_extractor roi_pool \
            --run_dir runs/study/donor_roi_pool
        fi
        compare --out runs/study/donors --extractors roi_align,roi_pool \
          --vary "model.init.checkpoint=$DONOR,runs/study/donor_roi_pool/checkpoints/best.ckpt" ;;
      c)  # pooled resolution
        compare --out runs/study/resolution --extractors roi_align \
          --vary model.roi_extractor_args.output_size=2,4,7,14 --reference-value 7 ;;
      a)  # deformable pooling against deformation strength; deform_psroi_pool's own plain
          # counterpart is psroi_align: the same runs with that baseline first, then roi_align's
        # (each baseline's report, numbers and effect plot are named after it: report_vs_B.md)
        for baseline in psroi_align roi_align; do
          compare --out runs/study/deformation --baseline "$baseline" \
            --extractors roi_align,deform_roi_pool,mdeform_roi_pool,psroi_align,deform_psroi_pool \
            --vary data.synthetic.deformation=none,mild,strong > /dev/null
        done ;;
      b)  # multi-scale pooling against scale range
        compare --out runs/study/scale --extractors roi_align,roi_align_single,pyramid_fusion,spp \
          --vary data.synthetic.scale_range=medium,coco,extreme --reference-value coco ;;
      *) echo "unknown question $q (d, donors, c, a or b)" >&2; exit 2 ;;
    esac
  done
done
