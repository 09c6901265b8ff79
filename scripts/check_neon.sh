#!/usr/bin/env bash
# Checks that the runtime's depthwise and stem kernels are NEON code on aarch64: counts the
# 4-lane fused multiply-adds (`fmla v*.4s`) in the functions of `kernels::depthwise` and
# `kernels::stem` of the aarch64 release build, and fails where either has fewer than a
# floor set far below what the NEON build has (2,915 and 30 with rustc 1.96) and far above
# what a scalar fallback has (0).
#
#   scripts/check_neon.sh [TARGET_DIR]   # default: $CARGO_TARGET_DIR or ./target
set -euo pipefail
dir=${1:-${CARGO_TARGET_DIR:-target}}/aarch64-unknown-linux-gnu/release/deps
rlib=$(ls -t "$dir"/librepghost_runtime-*.rlib 2>/dev/null | head -1 || true)
if [[ -z "$rlib" ]]; then
  echo "check_neon: no aarch64 release build of repghost-runtime under $dir" >&2
  exit 1
fi
read -r dw stem < <(aarch64-linux-gnu-objdump -d -C --no-show-raw-insn "$rlib" 2>/dev/null | awk '
  /^[0-9a-f]+ <.*>:$/ { fn = $0; next }
  /\tfmla\tv[0-9]+\.4s/ { if (fn ~ /kernels::depthwise/) d++; else if (fn ~ /kernels::stem/) s++ }
  END { print d + 0, s + 0 }')
echo "fmla v*.4s: depthwise $dw, stem $stem ($(basename "$rlib"))"
if (( dw < 500 || stem < 8 )); then
  echo "check_neon: the depthwise or stem kernel is not NEON code on aarch64" >&2
  exit 1
fi
