#!/usr/bin/env bash
# The committed Fashion-MNIST models on the full test set (10,000 images): each deploy file
# must give at least its minimum top-1 below (a few images may flip between SIMD levels), and
# its INT8 form, quantized with the defaults (per-channel weights, percentile:99.99, 512
# calibration images), must stay within 0.1 points of it (docs/weights.md).
# Needs the Debian package dataset-fashion-mnist and a release build of the CLI.
#
#     scripts/check_fashion_mnist.sh [path/to/repghost]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/repghost}
# deploy file, minimum f32 top-1 (%): RepGhostNet 0.5× at 28² measured 92.24%, 1.0× at 40²
# (stored as f16) 94.96%.
models=(
  "docs/fashion-mnist/repghostnet_050_e8_ft2/deploy.safetensors 92.20"
  "docs/fashion-mnist/repghostnet_100_s40_e40/deploy.safetensors 94.90"
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

top1() { "$bin" eval --weights "$1" --data fashion-mnist --split test --format json 2>/dev/null |
  python3 -c 'import json, sys; print(100 * json.load(sys.stdin)["top1"])'; }

for entry in "${models[@]}"; do
  read -r weights min <<<"$entry"
  "$bin" quantize --weights "$weights" --calib fashion-mnist --out "$tmp/int8.safetensors" >/dev/null
  f32=$(top1 "$weights")
  int8=$(top1 "$tmp/int8.safetensors")
  printf "%s: f32 top-1 %.2f%%, INT8 top-1 %.2f%%\n" "$weights" "$f32" "$int8"
  python3 - "$weights" "$min" "$f32" "$int8" <<'PY'
import sys
name = sys.argv[1]
low, f32, int8 = map(float, sys.argv[2:])
if f32 < low:
    sys.exit(f"{name}: f32 top-1 {f32:.2f}% is below {low:.2f}%")
if int8 < f32 - 0.1:
    sys.exit(f"{name}: INT8 top-1 {int8:.2f}% is more than 0.1 points below f32 ({f32:.2f}%)")
PY
done
