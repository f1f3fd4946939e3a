#!/usr/bin/env bash
# The one script to run on a lent GPU machine (device tool): proves the CUDA path and records
# the plain-vs-optimised figures for docs/benchmarks.md. Every run compares the optimised
# variant with the plain diffusers path in the same process and checks the outputs match.
# Rehearse on CPU first: `bash bench/gpu_check.sh --dry-run` prints the commands;
# `DEVICE=cpu ARCH_SCALE=tiny bash bench/gpu_check.sh` runs the same steps on the tiny models.
# Needs: torch with CUDA and nvidia-ml-py on the machine; the project's wheels carried along.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
DRY=${1:-}
run() { echo "+ $*" | tee -a "$OUT/commands.txt"; [ "$DRY" = "--dry-run" ] || "$@"; }
py=${PYTHON:-python3}
models=${MODELS:-/tmp/orchard-models}
device=${DEVICE:-cuda:0}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT/compile-cache}

if [ "${ARCH_SCALE:-full}" = tiny ]; then  # CPU rehearsal
  img=(--model orchard-tiny/sdxl --models-dir .tiny-models --width 64 --height 64)
  vid=(--model orchard-tiny/svd --models-dir .tiny-models --width 64 --height 64)
else
  img=(--arch sdxl-turbo --random-weights --models-dir "$models" --width 512 --height 512)
  vid=(--arch svd-xt --random-weights --models-dir "$models" --width 1024 --height 576)
fi
fast="CHANNELS_LAST,COMPILE,VAE_FP16,PINNED_LOAD,FUSE_QKV,PNG_LEVEL=0"

# 1. NVML inventory, as the node sees it
run $py -c "from core.gpus import probe; print(probe())"

# 2. SDXL-Turbo architecture, fp16, 512x512, 1 step: plain vs optimised, direct/runner/node
run $py -m app bench --pipeline text-to-image "${img[@]}" --device "$device" --runs 30 \
  --steps 1 --through direct,runner,node --flags "$fast" --compare --no-record \
  --json "$OUT/sdxl-turbo-1.json" --chart "$OUT/sdxl-turbo-1.png"

# 3. Throughput with batching through the whole node (concurrent requests)
run $py -m app bench --pipeline text-to-image "${img[@]}" --device "$device" --runs 10 \
  --steps 1 --concurrency 1,8,32 --through node --flags "$fast,BATCH=8" --compare \
  --no-record --json "$OUT/sdxl-turbo-batch.json"

# 4. SVD-XT architecture: 1024x576, 14 frames, 25 steps, plain vs optimised (direct)
run $py -m app bench --pipeline image-to-video "${vid[@]}" --device "$device" --runs 2 \
  --steps 25 --frames 14 --through direct --flags "CHANNELS_LAST,COMPILE=unet,VAE_FP16" \
  --compare --no-record --json "$OUT/svd-xt.json"
