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

With `--precision int8` four engines take turns (the order rotating by one each round): our
INT8 runtime (`repghost quantize` of the deploy weights, calibrated on `--calib-images`
random-noise images), our FP32 runtime, ONNX Runtime FP32, and ONNX Runtime INT8: the same
ONNX file quantized by `onnxruntime.quantization.quantize_static` (QDQ, per-channel s8
weights, u8 activations, calibrated on the same noise). The ratios printed are ours INT8 over
ORT FP32 and over ORT INT8, and our FP32 over ORT FP32.

    pip install torch timm onnx onnxruntime safetensors numpy pillow
    cargo build --release
    python scripts/bench_ort.py --models repghostnet_050 repghostnet_100 repghostnet_200 \\
        --threads 1 2 --batch 1 32 --rounds 10 [--precision int8]
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


def noise_folder(d, size, count):
    """An ImageFolder of `count` random-noise PNG images (one class), for calibration."""
    from PIL import Image
    root = os.path.join(d, "calib")
    os.makedirs(os.path.join(root, "noise"), exist_ok=True)
    rng = np.random.RandomState(1)
    for i in range(count):
        px = rng.randint(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(px).save(os.path.join(root, "noise", f"{i:04}.png"))
    return root


def quantize_ours(deploy, calib, count, d):
    """Our INT8 file of the deploy weights (`repghost quantize`, default options)."""
    out = os.path.join(d, os.path.basename(deploy).replace(".deploy.", ".int8."))
    subprocess.run([BIN, "quantize", "--weights", deploy, "--calib", calib, "--calib-images", str(count),
                    "--out", out], check=True, capture_output=True)
    return out


def quantize_ort(onnx_path, size, count):
    """ONNX Runtime's static QDQ quantization of `onnx_path`: per-channel s8 weights, u8
    activations, calibrated on `count` random-noise inputs."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Noise(CalibrationDataReader):
        def __init__(self):
            rng = np.random.RandomState(1)
            self.items = iter([{"input": rng.rand(1, 3, size, size).astype(np.float32)} for _ in range(count)])

        def get_next(self):
            return next(self.items, None)

    pre = onnx_path.replace(".onnx", ".pre.onnx")
    quant_pre_process(onnx_path, pre)
    out = onnx_path.replace(".onnx", ".qdq.onnx")
    quantize_static(pre, out, Noise(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


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


def rounds(engines, rounds):
    """Median ms per round of each engine, the engines taking turns in an order that rotates
    by one each round."""
    times = {k: [] for k in engines}
    names = list(engines)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(engines[k]())
    return {k: np.array(v) for k, v in times.items()}


def summary(num, den):
    ratios = num / den
    return {"median": float(np.median(ratios)), "low": float(ratios.min()), "high": float(ratios.max()),
            "ratios": [round(float(v), 4) for v in ratios]}


def measure(name, files, batch, threads, args):
    x = np.random.RandomState(0).randn(batch, 3, args.size, args.size).astype(np.float32)
    runs = args.runs if batch == 1 else max(3, args.runs // 8)
    simd = {}

    def ours(path, key):
        def run():
            ms, simd[key] = ours_round(path, batch, threads, args.size, runs)
            return ms
        return run

    def theirs(path):
        s = ort_session(path, threads)
        return lambda: ort_round(s, x, runs)

    engines = {"ours": ours(files["deploy"], "ours"), "ort": theirs(files["onnx"])}
    if args.precision == "int8":
        engines = {"ours_int8": ours(files["int8"], "ours_int8"), **engines, "ort_int8": theirs(files["qdq"])}
    t = rounds(engines, args.rounds)
    row = {"model": name, "batch": batch, "threads": threads, "size": args.size, "rounds": args.rounds,
           "runs_per_round": runs, "simd": simd["ours"], "ort": ort.__version__,
           **{f"{k}_ms": float(np.median(v)) for k, v in t.items()}}
    row["ours_vs_ort"] = summary(t["ours"], t["ort"])
    if args.precision == "int8":
        row["int8_vs_ort"] = summary(t["ours_int8"], t["ort"])
        row["int8_vs_ort_int8"] = summary(t["ours_int8"], t["ort_int8"])
    return row


def line(r, rounds):
    def ratio(key):
        v = r[key]
        return f"{v['median']:.2f} ({v['low']:.2f}-{v['high']:.2f})"
    head = f"{r['model']:<16} batch {r['batch']:<3} threads {r['threads']}  "
    tail = f"  [{rounds} rounds, {r['simd']}]"
    if "int8_vs_ort" not in r:
        return (head + f"ours {r['ours_ms']:8.2f} ms  ORT {r['ort_ms']:8.2f} ms  ours/ORT " + ratio("ours_vs_ort")
                + tail)
    return (head + f"ours int8 {r['ours_int8_ms']:7.2f} ms  f32 {r['ours_ms']:7.2f}  ORT f32 {r['ort_ms']:7.2f}  "
            f"ORT int8 {r['ort_int8_ms']:7.2f}  int8/ORT-f32 " + ratio("int8_vs_ort") + "  int8/ORT-int8 "
            + ratio("int8_vs_ort_int8") + "  f32/ORT-f32 " + ratio("ours_vs_ort") + tail)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["repghostnet_100"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--batch", nargs="+", type=int, default=[1])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=10, help="rounds per configuration (at least 2)")
    ap.add_argument("--runs", type=int, default=30,
                    help="timed inferences per engine and round at batch 1 (an eighth of it, at least 3, above)")
    ap.add_argument("--precision", choices=["f32", "int8"], default="f32",
                    help="int8: also time our INT8 runtime and ONNX Runtime's QDQ INT8 model")
    ap.add_argument("--calib-images", type=int, default=32,
                    help="random-noise calibration images for both INT8 models (timing only)")
    ap.add_argument("--json", help="also write one JSON object per configuration here")
    args = ap.parse_args()
    if args.rounds < 2 or args.runs < 1:
        ap.error("--rounds must be at least 2 and --runs positive")
    print(f"CPU: {cpu_name()}; ONNX Runtime {ort.__version__}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        calib = noise_folder(d, args.size, args.calib_images) if args.precision == "int8" else None
        for name in args.models:
            deploy, onnx_path = prepare(name, args.size, d)
            files = {"deploy": deploy, "onnx": onnx_path}
            if calib:
                files["int8"] = quantize_ours(deploy, calib, args.calib_images, d)
                files["qdq"] = quantize_ort(onnx_path, args.size, args.calib_images)
            for batch in args.batch:
                for threads in args.threads:
                    r = measure(name, files, batch, threads, args)
                    rows.append(r)
                    print(line(r, args.rounds), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
