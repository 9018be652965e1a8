#!/usr/bin/env bash
# README's study ("What pooling does"), every command in order: the shared detector, then
# questions d, c, a and b, each one tools/compare.py command, seed by seed (SEEDS=3 by default,
# SEEDS=5 for more); "donors", which checks d against a second shared detector trained with
# roi_pool, runs only when asked for.
#   bash tools/study.sh [d c a b donors]      # the questions to run (default: d c a b)
# Seed by seed: every question gets seed 0, then every question seed 1, ... (each compare call
# with --seeds N reuses the N - 1 seeds it has and trains the next), so a seed's frozen fronts
# are computed once and read by every question that shares them, and a stopped study leaves
# whole seeds. Resumable: run it again and every finished run is reused, an interrupted one
# resumes from its last.ckpt; SEEDS=4 later adds a fourth seed to every question. Reports land
# in runs/study/<question>/report.md (a: report_vs_psroi_align.md and report_vs_roi_align.md).
# README's Budget gives the measured time on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# the clone's virtual environment (README's quickstart makes it), else python on PATH
if [ -x .venv/bin/python ]; then DEFAULT_PYTHON=.venv/bin/python; else DEFAULT_PYTHON=python; fi
PYTHON="${PYTHON:-$DEFAULT_PYTHON}"
SEEDS="${SEEDS:-3}"
LAYERS=(--config configs/quickstart.yaml --config configs/study.yaml)
DONOR=runs/study/donor/checkpoints/best.ckpt

if ! [[ "$SEEDS" =~ ^[1-9][0-9]*$ ]]; then
  echo "SEEDS must be a positive integer, got '$SEEDS'" >&2; exit 2
fi
QUESTIONS="${*:-d c a b}"
for q in $QUESTIONS; do  # refuse a misspelt question before anything runs
  case "$q" in d|c|a|b|donors) ;; *) echo "unknown question $q (d, c, a, b or donors)" >&2; exit 2 ;; esac
done

if [ ! -f "$DONOR" ]; then  # train (or resume) the shared detector once
  "$PYTHON" tools/train.py --config configs/quickstart.yaml --config configs/study_donor.yaml \
    --run_dir runs/study/donor
fi

# every question reuses the runs another one trained with the same settings (linked, e.g. d's
# roi_align runs are a's deformation=none ones and c's output_size=7 ones)
compare() {
  "$PYTHON" tools/compare.py "${LAYERS[@]}" --seeds "$seeds" --reuse-runs runs/study "$@"
}

for seeds in $(seq 1 "$SEEDS"); do
  for q in $QUESTIONS; do
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
    esac
  done
done
