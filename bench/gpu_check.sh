#!/usr/bin/env bash
# The one script to run on a lent GPU machine (device tool): proves the CUDA path and records
# figures for docs/benchmarks.md. Test it on CPU first: DEVICE=cpu ARCH=... is too slow for
# full-size models; run `bash bench/gpu_check.sh --dry-run` to see the commands.
# Needs: torch with CUDA and nvidia-ml-py on the machine; the project's wheels carried along.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
run() { echo "+ $*"; [ "${1:-}" = "--dry-run" ] || "$@"; }
DRY=${1:-}
py=${PYTHON:-python3}
models=${MODELS:-/tmp/orchard-models}

# 1. NVML inventory and the runner's /hardware payloads
run $DRY $py -c "from core.gpus import probe; print(probe())"

# 2. SDXL-Turbo architecture, random weights, fp16: 512x512, 1 and 4 steps, direct vs runner
for steps in 1 4; do
  run $DRY $py -m app bench --pipeline text-to-image --arch sdxl-turbo --random-weights \
    --device cuda:0 --models-dir "$models" --runs 20 --steps $steps --width 512 --height 512 \
    --concurrency 1,4 --through direct,runner,node --json "$OUT/sdxl-turbo-$steps.json" \
    --chart "$OUT/sdxl-turbo-$steps.png"
done

# 3. SVD-XT architecture: 1024x576, 25 steps (frames from the model: 25)
run $DRY $py -m app bench --pipeline image-to-video --arch svd-xt --random-weights \
  --device cuda:0 --models-dir "$models" --runs 2 --steps 25 --width 1024 --height 576 \
  --through direct --json "$OUT/svd-xt.json"
