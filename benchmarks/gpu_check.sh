#!/usr/bin/env bash
# The checks that need a CUDA device, in one script, for a session that is lent one.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # figures and logs land in OUT_DIR (default $OUT or /tmp)
#
# 1. the GPU tests (tests/test_gpu.py: a CUDA harvest equals the CPU harvest, in
#    float32 and bfloat16; tests/test_batch.py's device checks);
# 2. benchmarks/harvest_accumulators.py on CUDA in bfloat16, at the size
#    and at a GPU-sized one (N=16384, V=50257, B=64, S=512);
# 3. benchmarks/harvest_end_to_end.py on CUDA (the demo model);
# 4. benchmarks/harvest_scale.py on CUDA: dense against bounded (heavy-hitter)
#    tables at N=16384, V=50257, ms per batch, state bytes, agreement (issue 11);
# 5. benchmarks/harvest_n_scale.py on CUDA: the six default accumulators, bounded,
#    against N = 4k / 16k / 65k at a fixed 48 active latents (issue 11's update
#    target: at most 1.5x from 4k to 65k), each accumulator's update timed alone.
# Copy the printed figures into docs/benchmarks.md with the device's name.
# Needs autointerp's dependencies importable (see the device tool's notes on
# carrying wheels); runs from the repository root with PYTHONPATH=src.
set -uo pipefail
out=${1:-${OUT:-/tmp}}
mkdir -p "$out"
log="$out/gpu_figures.txt"
export PYTHONPATH="src:tests${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$log"
echo "== GPU tests" | tee -a "$log"
$py -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_batch.py 2>&1 | tee -a "$log"
echo "== harvest accumulators, issue size, bfloat16" | tee -a "$log"
timeout 240 $py benchmarks/harvest_accumulators.py --device cuda --dtype bfloat16 --no-memory 2>&1 | tee -a "$log"
echo "== harvest accumulators, N=16384 V=50257 B=64 S=512, bfloat16" | tee -a "$log"
timeout 240 $py benchmarks/harvest_accumulators.py --device cuda --dtype bfloat16 --no-memory \
    --components 16384 --vocab 50257 --batch 64 --seq 512 --batches 5 --warmup 1 2>&1 | tee -a "$log"
echo "== harvest end to end (demo model) on CUDA" | tee -a "$log"
timeout 120 $py benchmarks/harvest_end_to_end.py --device cuda 2>&1 | tee -a "$log"
echo "== dense vs bounded tables on CUDA, N=16384 V=50257" | tee -a "$log"
timeout 240 $py benchmarks/harvest_scale.py --device cuda --components 16384 --vocab 50257 \
    --batch 16 --seq 512 --active 48 --batches 4 --warmup 1 2>&1 | tee -a "$log"
echo "== the six accumulators against N on CUDA, bounded, 16 batches (update only)" | tee -a "$log"
timeout 200 $py benchmarks/harvest_n_scale.py --device cuda --sizes 4096 16384 65536 --mode bounded \
    --budget 16GiB --batches 16 --per_acc --no_save 2>&1 | tee -a "$log"
