#!/usr/bin/env python3
"""Checks `repghost export-onnx` output with three consumers: onnx.checker (full check, with
shape inference), ONNX Runtime and OpenCV's DNN module, whose logits must match the PyTorch
reference fixtures within 1e-4 relative (train and deploy form, RepGhostNet with SE and
GhostNet, batch 1 and a dynamic batch).

    pip install onnx onnxruntime opencv-python-headless numpy
    cargo build --release && python scripts/check_onnx.py
"""
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.path.join(ROOT, "target", "release", "repghost")
FIX = os.path.join(ROOT, "crates", "repghost", "tests", "fixtures")

CASES = [
    ("repghostnet_050.pth.tar", [], "repghostnet_050_logits.npy", "deploy", True),
    ("repghostnet_050.pth.tar", ["--opset", "17"], "repghostnet_050_logits.npy", "train", False),
    ("repghostnet_0_2x_fused.pth", ["--model", "repghostnet_0_2x"], "repghostnet_0_2x_logits.npy", "deploy", True),
    ("ghostnet_050.safetensors", [], "ghostnet_050_logits.npy", "deploy", True),
]


def rel(y, want):
    return float(np.abs(y - want).max() / np.abs(want).max())


def main():
    x = np.load(os.path.join(FIX, "input.npy"))
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        for weights, extra, ref, form, dynamic in CASES:
            out = os.path.join(d, "m.onnx")
            cmd = [BIN, "export-onnx", "--weights", os.path.join(FIX, weights), "--out", out, "--form", form,
                   "--size", str(x.shape[2])] + extra + (["--dynamic-batch"] if dynamic else [])
            subprocess.run(cmd, check=True, capture_output=True)
            m = onnx.load(out)
            onnx.checker.check_model(m, full_check=True)
            ops = sorted({n.op_type for n in m.graph.node})
            s = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
            xx = x if dynamic else x[:1]
            y = s.run(None, {"input": xx})[0]
            want = np.load(os.path.join(FIX, ref))
            err = rel(y, want[: len(y)])
            try:
                net = cv2.dnn.readNetFromONNX(out)
                net.setInput(x[:1])
                cv_err = rel(net.forward(), want[:1])
            except cv2.error as e:
                cv_err = float("inf")
                print(f"    OpenCV DNN: {str(e).strip().splitlines()[-1]}")
            ok = err < 1e-4 and cv_err < 1e-4 and (("BatchNormalization" in ops) == (form == "train"))
            failed += not ok
            print(f"{'ok ' if ok else 'BAD'} {weights} {form}: ONNX Runtime batch {len(y)} relative error {err:.2e}, "
                  f"OpenCV DNN {cv_err:.2e}; ops {ops}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
