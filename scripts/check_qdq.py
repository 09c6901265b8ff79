#!/usr/bin/env python3
"""Our INT8 runtime against ONNX Runtime running the QDQ export of the same INT8 file, on the
Fashion-MNIST test set.

`repghost export-onnx` writes the INT8 file as a QDQ graph (dynamic batch); the test images
are preprocessed here as the file's metadata says (Pillow resize, centre crop, mean/std),
saved as one .npy batch, and classified by `repghost predict --input` (our INT8 kernels) and
by ONNX Runtime twice: with its graph optimizations off, so that each QDQ operator runs as
the ONNX specification defines it (the graph's own meaning), and with all of them on (its
default: QDQ groups fused into its integer kernels, which on x86-64 without VNNI multiply u8
by s8 with 16-bit pair sums that can saturate). Printed for each: top-1, how many images it
classifies as ours does, and the largest logit difference relative to ours' largest logit.

    pip install onnx onnxruntime numpy pillow
    cargo build --release
    python scripts/check_qdq.py --int8 model.int8.safetensors [--data DIR] [--limit N]
"""
import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "repghost")
FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def idx(path):
    """An IDX file (gzipped or not) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(data, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(data, name)):
            return os.path.join(data, name)
    sys.exit(f"error: {data} holds no {stem}[.gz]")


def preprocess(images, pre):
    """Grayscale uint8 images as the model's normalized NCHW float32 batch."""
    size, crop = pre["img_size"], pre["crop_pct"]
    scaled = int(size / crop)
    out = np.empty((len(images), 1, size, size), np.float32)
    for i, img in enumerate(images):
        im = Image.fromarray(img).resize((scaled, scaled), FILTERS[pre["interpolation"]])
        top = (scaled - size) // 2
        a = np.asarray(im.crop((top, top, top + size, top + size)), np.float32) / 255.0
        out[i, 0] = (a - pre["mean"][0]) / pre["std"][0]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--int8", required=True, help="an INT8 file written by `repghost quantize`")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="folder of the Fashion-MNIST IDX files (t10k-*)")
    ap.add_argument("--limit", type=int, help="the first N test images only")
    ap.add_argument("--json", help="also write the result as one JSON object here")
    args = ap.parse_args()
    images = idx(find(args.data, "t10k-images-idx3-ubyte"))
    labels = idx(find(args.data, "t10k-labels-idx1-ubyte")).astype(np.int64)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    with tempfile.TemporaryDirectory() as d:
        onnx_path = os.path.join(d, "qdq.onnx")
        subprocess.run([BIN, "export-onnx", "--weights", args.int8, "--out", onnx_path, "--dynamic-batch"],
                       check=True, capture_output=True)
        m = onnx.load(onnx_path)
        onnx.checker.check_model(m, full_check=True)
        meta = {p.key: p.value for p in m.metadata_props}
        x = preprocess(images, json.loads(meta["preprocess"]))
        x_path, ours_path = os.path.join(d, "x.npy"), os.path.join(d, "ours.npy")
        np.save(x_path, x)
        subprocess.run([BIN, "predict", "--weights", args.int8, "--input", x_path, "--logits", ours_path,
                        "--format", "json"], check=True, capture_output=True)
        ours = np.load(ours_path)
        runs = {}
        for name, level in [("reference", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                            ("optimized", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)]:
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            s = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
            runs[name] = np.concatenate([s.run(None, {"input": x[i:i + 256]})[0] for i in range(0, len(x), 256)])
    ops = {n.op_type for n in m.graph.node}
    r = {
        "images": len(labels),
        "ort": ort.__version__,
        "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node),
        "ours_top1": float((ours.argmax(1) == labels).mean() * 100),
    }
    print(f"{r['images']} test images, QDQ graph of {len(m.graph.node)} nodes ({r['qdq_nodes']} Q/DQ; "
          f"{', '.join(sorted(ops))}), ONNX Runtime {r['ort']}")
    print(f"ours INT8: top-1 {r['ours_top1']:.2f}%")
    for name, theirs in runs.items():
        r[name] = {
            "top1": float((theirs.argmax(1) == labels).mean() * 100),
            "same_class": int((ours.argmax(1) == theirs.argmax(1)).sum()),
            "max_rel_logit_diff": float(np.abs(ours - theirs).max() / np.abs(ours).max()),
        }
        v = r[name]
        print(f"ORT {name:<9}: top-1 {v['top1']:.2f}%, same class as ours on {v['same_class']} of {r['images']}, "
              f"largest logit difference {v['max_rel_logit_diff']:.2e} of ours' largest logit")
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
