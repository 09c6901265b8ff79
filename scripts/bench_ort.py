#!/usr/bin/env python3
"""Our deploy runtime against ONNX Runtime on the same weights, in rounds, in one run.

For each model: a timm model with random weights (fixed seed) is written as a train-form
safetensors checkpoint and converted with `repghost convert`; the same PyTorch model,
re-parameterized by timm, is exported to ONNX. Then, per (batch, threads) configuration, the
two engines take turns for `--rounds` rounds (ORT first in even rounds, ours first in odd
ones); in each round each engine times `--runs` inferences after warm-up and reports their
median. The figure of merit is the median over rounds of the per-round ratio
ours / ORT, printed with its spread (lowest and highest round), so that the machine's drift
between rounds hits both engines alike. The CPU model and the SIMD level our runtime chose are
printed first (`REPGHOST_SIMD=avx2` measures the AVX2 kernels on an AVX-512 CPU).

    pip install torch timm onnx onnxruntime safetensors numpy
    cargo build --release
    python scripts/bench_ort.py --models repghostnet_050 repghostnet_100 repghostnet_200 \\
        --threads 1 2 --batch 1 32 --rounds 10
"""
import argparse
import json
import os
import platform
import subprocess
import tempfile
import time

import numpy as np
import onnxruntime as ort
import timm
import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# cargo's output directory: CARGO_TARGET_DIR where it is set (CI keeps it under the cache).
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "repghost")


def cpu_name():
    """The model name and widest SIMD extension of this CPU, from /proc/cpuinfo."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {isa}, {os.cpu_count()} logical CPUs"


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_round(s, x, runs):
    """Median milliseconds of `runs` inferences after a short warm-up."""
    for _ in range(max(2, runs // 5)):
        s.run(None, {"input": x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {"input": x})
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts))


def ours_round(deploy, batch, threads, size, runs):
    """Median milliseconds and SIMD level of `repghost bench` on the deploy weights."""
    out = subprocess.run([BIN, "bench", "--weights", deploy, "--engine", "runtime", "--threads", str(threads),
                          "--batch", str(batch), "--size", str(size), "--runs", str(runs), "--format", "json"],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.splitlines()[0])
    return r["median_ms"], r["simd"]


def prepare(name, size, d):
    """A timm model with random weights (seed 0), as our deploy safetensors (`repghost convert`)
    and as an ONNX file of timm's re-parameterized form, both in directory `d`."""
    torch.manual_seed(0)
    m = timm.create_model(name).eval()
    train = os.path.join(d, f"{name}.safetensors")
    save_file({k: v.contiguous() for k, v in m.state_dict().items() if "num_batches" not in k}, train)
    deploy = os.path.join(d, f"{name}.deploy.safetensors")
    # A bare state dict of 0.5x fits the "wo" ablation too: name the model.
    subprocess.run([BIN, "convert", "--weights", train, "--model", name, "--out", deploy], check=True,
                   capture_output=True)
    if hasattr(m, "convert_to_deploy"):
        m.convert_to_deploy()
    onnx_path = os.path.join(d, f"{name}.onnx")
    torch.onnx.export(m, torch.randn(1, 3, size, size), onnx_path, input_names=["input"],
                      output_names=["logits"], opset_version=13, dynamic_axes={"input": {0: "n"}}, dynamo=False)
    return deploy, onnx_path


def measure(name, deploy, onnx_path, batch, threads, args):
    s = ort_session(onnx_path, threads)
    x = np.random.RandomState(0).randn(batch, 3, args.size, args.size).astype(np.float32)
    runs = args.runs if batch == 1 else max(3, args.runs // 8)
    ours, theirs, simd = [], [], None
    for r in range(args.rounds):
        if r % 2 == 0:
            theirs.append(ort_round(s, x, runs))
            o, simd = ours_round(deploy, batch, threads, args.size, runs)
            ours.append(o)
        else:
            o, simd = ours_round(deploy, batch, threads, args.size, runs)
            ours.append(o)
            theirs.append(ort_round(s, x, runs))
    ratios = np.array(ours) / np.array(theirs)
    return {"model": name, "batch": batch, "threads": threads, "size": args.size, "rounds": args.rounds,
            "runs_per_round": runs, "simd": simd, "ort": ort.__version__,
            "ours_ms": float(np.median(ours)), "ort_ms": float(np.median(theirs)),
            "ratio_median": float(np.median(ratios)), "ratio_low": float(ratios.min()),
            "ratio_high": float(ratios.max()), "ratios": [round(float(v), 4) for v in ratios]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["repghostnet_100"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--batch", nargs="+", type=int, default=[1])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=10, help="rounds per configuration (at least 2)")
    ap.add_argument("--runs", type=int, default=30,
                    help="timed inferences per engine and round at batch 1 (an eighth of it, at least 3, above)")
    ap.add_argument("--json", help="also write one JSON object per configuration here")
    args = ap.parse_args()
    if args.rounds < 2 or args.runs < 1:
        ap.error("--rounds must be at least 2 and --runs positive")
    print(f"CPU: {cpu_name()}; ONNX Runtime {ort.__version__}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            deploy, onnx_path = prepare(name, args.size, d)
            for batch in args.batch:
                for threads in args.threads:
                    r = measure(name, deploy, onnx_path, batch, threads, args)
                    rows.append(r)
                    print(f"{name:<16} batch {batch:<3} threads {threads}  ours {r['ours_ms']:8.2f} ms  "
                          f"ORT {r['ort_ms']:8.2f} ms  ours/ORT {r['ratio_median']:.2f} "
                          f"({r['ratio_low']:.2f}-{r['ratio_high']:.2f}, {args.rounds} rounds, {r['simd']})",
                          flush=True)
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
