#!/usr/bin/env bash
# The GPU path on a machine with an NVIDIA GPU and no network, through the GPU's Vulkan driver
# and the wgpu build of repghost (a CUDA build needs an LLVM download that such a machine
# cannot make).
#
# On a machine with network, from the repository root:
#   cargo build --release --locked --features repghost-cli/wgpu   # target/release/repghost
#   scripts/gpu_check.sh --prepare     # gpu-check/: the Vulkan loader and Fashion-MNIST
# Carry target/release/repghost and gpu-check/ to the GPU machine, then run there:
#   OUT=some/dir scripts/gpu_check.sh
# It writes $OUT/gpu_check.txt: the GPU's name, wgpu against the CPU on the same weights, a
# one-epoch Fashion-MNIST run on the GPU, and the training step's images/s at batch 32 and 128.
# It changes no setting of the device. VK_DRIVER_FILES, if set, picks the Vulkan driver instead
# of NVIDIA's; LIMIT (training images), SIZE and BATCHES (of the benchmark) shrink the run,
# e.g. for a rehearsal on Mesa's software driver.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/release/repghost
kit=gpu-check

if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p "$kit/deb" "$kit/fashion-mnist"
  (cd "$kit/deb" && apt-get download libvulkan1)
  # Fashion-MNIST from Debian's package, the training images cut to 12,000 so that the kit and
  # the binary stay small: (16-byte header + 12,000 × 784) bytes, labels (8 + 12,000).
  src=/usr/share/datasets/fashion-mnist
  [[ -d $src ]] || { echo "install dataset-fashion-mnist first (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
  python3 - "$src" "$kit/fashion-mnist" <<'EOF'
import gzip, os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
def read(name):
    for cand in (name, name + ".gz"):
        p = os.path.join(src, cand)
        if os.path.exists(p):
            return (gzip.open if p.endswith(".gz") else open)(p, "rb").read()
    raise SystemExit(f"{name} not found in {src}")
for prefix, keep in (("train", 12000), ("t10k", 10000)):
    img, lab = read(f"{prefix}-images-idx3-ubyte"), read(f"{prefix}-labels-idx1-ubyte")
    open(os.path.join(dst, f"{prefix}-images-idx3-ubyte"), "wb").write(
        img[:4] + struct.pack(">I", keep) + img[8:16] + img[16:16 + keep * 784])
    open(os.path.join(dst, f"{prefix}-labels-idx1-ubyte"), "wb").write(
        lab[:4] + struct.pack(">I", keep) + lab[8:8 + keep])
EOF
  du -sh "$kit"
  exit 0
fi

out=${OUT:-$kit/out}
mkdir -p "$out"
log="$out/gpu_check.txt"
exec > >(tee "$log") 2>&1
[[ -x $bin ]] || { echo "$bin missing: build it with --features repghost-cli/wgpu and carry it" >&2; exit 1; }

# The Vulkan loader: the system's, or the one carried in the kit.
if ! ldconfig -p | grep 'libvulkan.so.1' >/dev/null; then
  mkdir -p "$kit/vulkan"
  for d in "$kit"/deb/*.deb; do dpkg -x "$d" "$kit/vulkan"; done
  export LD_LIBRARY_PATH="$PWD/$kit/vulkan/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi
# NVIDIA's Vulkan driver: its ICD file, or one written for the driver library it names.
icd=${VK_DRIVER_FILES:-$(ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json 2>/dev/null | head -1 || true)}
if [[ -z $icd ]]; then
  lib=$(ldconfig -p | awk '/libGLX_nvidia.so.0/ {p = $NF} END {print p}')
  [[ -n $lib ]] || { echo "no NVIDIA Vulkan driver found (neither nvidia_icd.json nor libGLX_nvidia.so.0)" >&2; exit 1; }
  icd="$out/nvidia_icd.json"
  printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3"}}\n' "$lib" > "$icd"
fi
export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd

echo "== $(date -u +%F) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not found')"
echo "== CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; Vulkan ICD $icd"

echo "== one epoch of Fashion-MNIST (${LIMIT:-12,000} training images) on the GPU"
run="$out/run"
"$bin" train --data "$kit/fashion-mnist" --out "$run" --device wgpu --epochs 1 --overwrite \
  ${LIMIT:+--limit "$LIMIT" --val-limit "$LIMIT"}
cat "$run/metrics.csv"

echo "== the same weights on the GPU and on the CPU (burn's forward, train form)"
for device in wgpu cpu; do
  "$bin" eval --weights "$run/best.safetensors" --data "$kit/fashion-mnist" --engine burn \
    --device "$device" --format json ${LIMIT:+--limit "$LIMIT"} > "$out/eval_$device.json"
done
python3 - "$out" <<'EOF'
import json, sys
g, c = (json.load(open(f"{sys.argv[1]}/eval_{d}.json")) for d in ("wgpu", "cpu"))
d = abs(g["loss"] - c["loss"]) / abs(c["loss"])
print(f"loss on the GPU {g['loss']:.6f}, on the CPU {c['loss']:.6f}: relative difference {d:.2e}; "
      f"top-1 {g['top1']:.4f} / {c['top1']:.4f}")
sys.exit(0 if d <= 1e-4 and g["top1"] == c["top1"] else 1)
EOF

echo "== training step, RepGhostNet 1.0x, ${SIZE:-224}x${SIZE:-224}, on the GPU (images/s)"
# shellcheck disable=SC2086
"$bin" bench --model repghostnet_100 --engine train-step --device wgpu --size "${SIZE:-224}" \
  --batch ${BATCHES:-32 128} --runs 20
