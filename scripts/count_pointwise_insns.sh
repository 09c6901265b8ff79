#!/usr/bin/env bash
# Instructions one run of a 1×1 convolution executes on aarch64, with the runtime's packed NEON
# kernel and with the gemm crate (plus its epilogue pass), counted under QEMU user-mode
# emulation in single-step mode (one `-d exec` trace line per instruction). Each call runs
# EXTRA more times than in a baseline run, and the difference is divided by EXTRA (the
# baseline itself varies by some ten thousand instructions between runs).
#
#   scripts/count_pointwise_insns.sh [MODEL] [EXTRA] [CALL...]   # CALL: 2 L for layer L
# Run in the cross-build environment of docs/platforms.md (Debian rustc, the aarch64 linker,
# CARGO_TARGET_DIR); each count of the 0.35× fixture takes a few minutes.
set -euo pipefail
model=${1:-crates/repghost-runtime/tests/fixtures/repghostnet_035.safetensors}
extra=${2:-5}
shift $(( $# < 2 ? $# : 2 ))
calls=("${@:-4 24 48 60 76}")
dir=${CARGO_TARGET_DIR:-target}
list=$(mktemp)
trap 'rm -f "$list"' EXIT
cargo build --release -p repghost-runtime --example pointwise_calls --target aarch64-unknown-linux-gnu >&2
bin=$dir/aarch64-unknown-linux-gnu/release/examples/pointwise_calls
count() {
  qemu-aarch64 -singlestep -d exec,nochain -D /dev/stderr "$bin" "$model" "$@" 2>&1 >/dev/null | grep -c '^Trace'
}
qemu-aarch64 "$bin" "$model" -1 0 > "$list"
base=$(count -2 0)
for c in ${calls[@]}; do
  packed=$(count "$c" "$extra")
  generic=$(count $((c + 1)) "$extra")
  echo "$(grep "^$c " "$list"): packed $(( (packed - base) / extra )) gemm crate $(( (generic - base) / extra ))"
done
