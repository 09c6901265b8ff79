#!/usr/bin/env python3
"""Measures our runtime, burn and ONNX Runtime on the same weights, in one run.

For each model: a timm model with random weights (fixed seed) is written as a train-form
safetensors checkpoint, converted with `repghost convert`, benchmarked with `repghost bench`
(runtime and burn); the same PyTorch model, re-parameterized, is exported to ONNX and run by
onnxruntime with the same thread counts and batch sizes. Prints a table and the ratio
ours / ONNX Runtime (median latency), and writes it as JSON lines with --json.

    pip install torch timm onnx onnxruntime safetensors
    cargo build --release
    python scripts/bench_ort.py --models repghostnet_050 repghostnet_100 repghostnet_200
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import onnxruntime as ort
import timm
import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.path.join(ROOT, "target", "release", "repghost")


def ort_time(path, batch, size, threads, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.RandomState(0).randn(batch, 3, size, size).astype(np.float32)
    for _ in range(max(2, runs // 10)):
        s.run(None, {"input": x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {"input": x})
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts)), float(np.min(ts))


def prepare(name, size, d):
    """A timm model with random weights (seed 0), as our deploy safetensors (`repghost convert`)
    and as an ONNX file of timm's re-parameterized form, both in directory `d`."""
    torch.manual_seed(0)
    m = timm.create_model(name).eval()
    train = os.path.join(d, f"{name}.safetensors")
    save_file({k: v.contiguous() for k, v in m.state_dict().items() if "num_batches" not in k}, train)
    deploy = os.path.join(d, f"{name}.deploy.safetensors")
    subprocess.run([BIN, "convert", "--weights", train, "--out", deploy], check=True, capture_output=True)
    if hasattr(m, "convert_to_deploy"):
        m.convert_to_deploy()
    onnx_path = os.path.join(d, f"{name}.onnx")
    torch.onnx.export(m, torch.randn(1, 3, size, size), onnx_path, input_names=["input"],
                      output_names=["logits"], opset_version=13, dynamic_axes={"input": {0: "n"}}, dynamo=False)
    return deploy, onnx_path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["repghostnet_100"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--batch", nargs="+", type=int, default=[1])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--json", help="also write the rows here as JSON lines")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            deploy, onnx_path = prepare(name, args.size, d)
            for batch in args.batch:
                runs = args.runs if batch == 1 else max(10, args.runs // 4)
                for threads in args.threads:
                    # Interleave the engines so that machine noise hits both alike.
                    out = subprocess.run([BIN, "bench", "--weights", deploy, "--engine", "runtime", "burn", "--threads",
                                          str(threads), "--batch", str(batch), "--size", str(args.size), "--runs", str(runs),
                                          "--format", "json"], check=True, capture_output=True, text=True).stdout
                    ours = [json.loads(l) for l in out.splitlines() if l.strip()]
                    med, mn = ort_time(onnx_path, batch, args.size, threads, runs)
                    ours.append({"model": name, "engine": "onnxruntime " + ort.__version__, "threads": threads,
                                 "batch": batch, "median_ms": med, "min_ms": mn})
                    rt = next(r for r in ours if r["engine"] == "runtime")
                    for r in ours:
                        r["ratio_vs_ort"] = r["median_ms"] / med
                        rows.append(r)
                        print(f"{name:<16} {r['engine']:<20} threads {threads} batch {batch:<3} median {r['median_ms']:8.2f} ms"
                              f"  min {r['min_ms']:8.2f} ms  x{r['ratio_vs_ort']:.2f} of ORT", flush=True)
                    print(f"  => runtime / ORT = {rt['median_ms'] / med:.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
