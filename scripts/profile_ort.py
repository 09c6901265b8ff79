#!/usr/bin/env python3
"""Where the time goes, per kind of layer, in ONNX Runtime and in our runtime, on the same
weights in one run: the diagnostic behind the ORT comparison of docs/performance.md.

The model of scripts/bench_ort.py (timm, random weights, fixed seed) is converted with
`repghost convert` and profiled with `repghost bench --profile`; the same model,
re-parameterized by timm, is exported to ONNX and run by onnxruntime with its node
profiler. ORT's Conv nodes are told
apart by their weight shape (1×1, depthwise, other). ORT's profiler slows it by 15–25%, so
compare the shares, and take whole-model latencies from scripts/bench_ort.py.

    pip install torch timm onnx onnxruntime safetensors
    cargo build --release
    python scripts/profile_ort.py --model repghostnet_100 --threads 1
"""
import argparse
import collections
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import onnxruntime as ort

from bench_ort import BIN, prepare


def kind(args):
    """Our name for an ORT node, from its op and (for Conv) its weight shape."""
    op = args["op_name"]
    if op != "Conv":
        return op
    w = args["input_type_shape"][1]["float"]
    if w[2:] == [1, 1]:
        return "conv 1x1"
    return "conv depthwise" if w[1] == 1 else "conv other (stem)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="repghostnet_100")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        deploy, path = prepare(args.model, args.size, d)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "ort")
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        x = np.random.RandomState(0).randn(1, 3, args.size, args.size).astype(np.float32)
        ts = []
        for _ in range(args.runs):
            t = time.perf_counter()
            s.run(None, {"input": x})
            ts.append((time.perf_counter() - t) * 1e3)
        events = json.load(open(s.end_profiling()))
        total = collections.defaultdict(float)
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                total[kind(e["args"])] += e["dur"] / 1e3 / args.runs
        ours = subprocess.run([BIN, "bench", "--weights", deploy, "--engine", "runtime", "--threads", str(args.threads),
                               "--size", str(args.size), "--runs", str(args.runs), "--profile"],
                              check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    all_ms = sum(total.values())
    print(f"onnxruntime {ort.__version__}, {args.model}, batch 1, {args.threads} thread(s), profiled: "
          f"median {np.median(ts):.2f} ms, kernels {all_ms:.2f} ms")
    for k, v in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<18} {v:7.3f} ms  {100 * v / all_ms:5.1f}%")
    print("repghost runtime, the same weights:")
    print(ours.rstrip())


if __name__ == "__main__":
    main()
