#!/usr/bin/env python3
"""Checks ONNX exports with three consumers: onnx.checker (full check, with shape inference),
ONNX Runtime and OpenCV's DNN module, whose logits must match within 1e-4 relative.

Without arguments: `repghost export-onnx` of the PyTorch fixtures (train and deploy form,
RepGhostNet with SE and GhostNet, batch 1 and a dynamic batch) against PyTorch's logits.
With `--exports DIR`: the graphs `crates/repghost/tests/onnx.rs` writes there when run with
REPGHOST_ONNX_DIR=DIR (random weights of several widths, an ablation and GhostNet, with
burn's logits), each as NAME.onnx, NAME.input.npy and NAME.logits.npy.

    pip install onnx onnxruntime opencv-python-headless numpy
    cargo build --release --workspace && python scripts/check_onnx.py
    REPGHOST_ONNX_DIR=/tmp/onnx cargo test --release --workspace --test onnx
    python scripts/check_onnx.py --exports /tmp/onnx
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# cargo's output directory: CARGO_TARGET_DIR where it is set (CI keeps it under the cache).
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "repghost")
FIX = os.path.join(ROOT, "crates", "repghost", "tests", "fixtures")

CASES = [
    ("repghostnet_050.pth.tar", [], "repghostnet_050_logits.npy", "deploy", True),
    ("repghostnet_050.pth.tar", ["--opset", "17"], "repghostnet_050_logits.npy", "train", False),
    ("repghostnet_0_2x_fused.pth", ["--model", "repghostnet_0_2x"], "repghostnet_0_2x_logits.npy", "deploy", True),
    ("ghostnet_050.safetensors", [], "ghostnet_050_logits.npy", "deploy", True),
]


# Largest logit difference between the INT8 runtime and ONNX Runtime's reference execution of
# the QDQ export, relative to the largest logit: float sums in a different order flip single
# rounding decisions, which later layers carry.
INT8_TOL = 0.05


def rel(y, want):
    return float(np.abs(y - want).max() / np.abs(want).max())


def check_int8(path, x, want):
    """A QDQ export of an INT8 file: ONNX Runtime with its graph optimizations off runs each
    QDQ operator as the specification defines it, which the INT8 runtime's logits (`want`)
    must match to within a few quantization steps and in every top-1 class. (Its optimized
    integer kernels and OpenCV are not compared: on x86-64 without VNNI, ORT's u8*s8 pair sums
    can saturate; scripts/check_qdq.py measures both on Fashion-MNIST.)"""
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    y = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    err = rel(y, want)
    same = bool((y.argmax(1) == want.argmax(1)).all())
    ok = err < INT8_TOL and same
    print(f"{'ok ' if ok else 'BAD'} {os.path.basename(path)}: ONNX Runtime (reference QDQ semantics) batch "
          f"{len(y)} relative error {err:.2e}, top-1 {'equal' if same else 'DIFFERENT'}")
    return ok


def check(path, x, want, form=None):
    """Runs one ONNX file in both engines; prints a line and returns whether it passed."""
    m = onnx.load(path)
    if any(n.op_type == "QuantizeLinear" for n in m.graph.node):
        return check_int8(path, x, want)
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({n.op_type for n in m.graph.node})
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    batch = m.graph.input[0].type.tensor_type.shape.dim[0]
    xx = x if batch.dim_param else x[: batch.dim_value]
    y = s.run(None, {"input": xx})[0]
    err = rel(y, want[: len(y)])
    try:
        net = cv2.dnn.readNetFromONNX(path)
        net.setInput(x[:1])
        cv_err = rel(net.forward(), want[:1])
    except cv2.error as e:
        cv_err = float("inf")
        print(f"    OpenCV DNN: {str(e).strip().splitlines()[-1]}")
    ok = err < 1e-4 and cv_err < 1e-4
    if form is not None:
        ok = ok and (("BatchNormalization" in ops) == (form == "train"))
    print(f"{'ok ' if ok else 'BAD'} {os.path.basename(path)}: ONNX Runtime batch {len(y)} relative error {err:.2e}, "
          f"OpenCV DNN {cv_err:.2e}; ops {ops}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exports", help="a folder of NAME.onnx, NAME.input.npy, NAME.logits.npy")
    args = ap.parse_args()
    failed = 0
    if args.exports:
        files = sorted(glob.glob(os.path.join(args.exports, "*.onnx")))
        if not files:
            sys.exit(f"{args.exports}: no .onnx files")
        for path in files:
            stem = path[: -len(".onnx")]
            x = np.load(stem + ".input.npy")
            want = np.load(stem + ".logits.npy")
            failed += not check(path, x, want)
        sys.exit(1 if failed else 0)
    x = np.load(os.path.join(FIX, "input.npy"))
    with tempfile.TemporaryDirectory() as d:
        for weights, extra, ref, form, dynamic in CASES:
            out = os.path.join(d, f"{weights}.{form}.onnx")
            cmd = [BIN, "export-onnx", "--weights", os.path.join(FIX, weights), "--out", out, "--form", form,
                   "--size", str(x.shape[2])] + extra + (["--dynamic-batch"] if dynamic else [])
            subprocess.run(cmd, check=True, capture_output=True)
            failed += not check(out, x, np.load(os.path.join(FIX, ref)), form)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
