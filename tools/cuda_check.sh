#!/usr/bin/env bash
# The CUDA checks in one run, for a machine with a GPU: the cuda-marked tests, the op and
# extractor benchmarks on the GPU, and (with --train) the quickstart on the learnable preset.
#
#   tools/cuda_check.sh OUTDIR            # tests + benchmarks (a few minutes on one H100/H200)
#   tools/cuda_check.sh OUTDIR --train 3  # also train configs/quickstart.yaml on the GPU,
#                                         # seeds 0..2 at once (metrics.json of each in OUTDIR)
#
# Every step writes its log to OUTDIR and runs under its own time limit, so one failing or slow
# step does not hide the others; the summary at the end gives each step's exit status.
set -u
out="${1:?usage: tools/cuda_check.sh OUTDIR [--train]}"
train="${2:-}"
seeds="${3:-1}"
py="${PYTHON:-python3}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=()

step() {  # step NAME SECONDS COMMAND...
    local name="$1" limit="$2"; shift 2
    local start=$SECONDS
    echo "=== $name (limit ${limit}s)"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$out/$name.log"
    status+=("$name: exit $rc, $((SECONDS - start)) s")
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
"$py" -c "import torch, torchvision, lightning; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, 'lightning', lightning.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" \
    | tee -a "$out/gpu.txt"

step pytest_cuda 240 "$py" -m pytest -m cuda -q -p no:cacheprovider
if [ "${BENCH:-1}" != 0 ]; then  # BENCH=0: tests (and training) only
step bench_ops 120 "$py" tools/benchmark_ops.py --device cuda --repeats 20 --warmup 3 \
    --json "$out/bench_ops.json"
step bench_ops_1024 90 "$py" tools/benchmark_ops.py --device cuda --num-rois 1024 --repeats 20 \
    --warmup 3 --json "$out/bench_ops_1024.json"
step bench_extractors 150 "$py" tools/benchmark_extractors.py --device cuda --rois 512 \
    --repeats 20 --warmup 3 --json "$out/bench_extractors.json"
fi
if [ "$train" = "--train" ]; then
    step make_dataset 180 "$py" tools/make_dataset.py --preset default
    train_seeds() {
        local pids=() seed
        for seed in $(seq 0 $((seeds - 1))); do
            timeout 400 "$py" tools/train.py --config configs/quickstart.yaml --seed_everything "$seed" \
                --data.num_workers 4 >"$out/train_seed$seed.log" 2>&1 &
            pids+=($!)
        done
        local rc=0 pid
        for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
        for seed in $(seq 0 $((seeds - 1))); do tr '\r' '\n' <"$out/train_seed$seed.log" | tail -n 25; done
        find runs -name metrics.json | tar -cf "$out/metrics.tar" -T -
        return $rc
    }
    start=$SECONDS
    echo "=== train_quickstart ($seeds seeds at once, limit 400s each)"
    train_seeds
    status+=("train_quickstart: exit $?, $((SECONDS - start)) s")
fi

echo "=== summary"
printf '%s\n' "${status[@]}" | tee "$out/summary.txt"
