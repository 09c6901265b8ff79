#!/usr/bin/env python3
"""Training-step throughput of repghost (burn, CPU) next to PyTorch, in one run.

A step is the train form's forward (BatchNorm on batch statistics), label-smoothed
cross-entropy, backward and an SGD-Nesterov update, on random 224² images at batch 32, for
each thread count. PyTorch runs timm's RepGhostNet of the same width (identical structure);
repghost runs `repghost bench --engine train-step`, once per `--workers` count (threads that
each compute a part of the batch, as `repghost train --workers`). Prints images/s and
ours / PyTorch.

    pip install torch timm
    cargo build --release
    python scripts/bench_train.py --models repghostnet_100 --threads 1 2 --workers 1 4
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np
import timm
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# cargo's output directory: CARGO_TARGET_DIR where it is set (CI keeps it under the cache).
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "repghost")


def torch_step(name, batch, size, threads, runs):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = timm.create_model(name, num_classes=1000).train()
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-5)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % 1000
    ts = []
    for i in range(runs + 2):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(m(x), y).backward()
        opt.step()
        if i >= 2:
            ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts))


def ours(name, batch, size, threads, workers, runs):
    out = subprocess.run(
        [BIN, "bench", "--model", name, "--engine", "train-step", "--threads", str(threads), "--workers",
         str(workers), "--batch", str(batch), "--size", str(size), "--runs", str(runs), "--format", "json"],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["repghostnet_100"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--workers", nargs="+", type=int, default=[1])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    print(f"{'model':<18} {'threads':>7} {'workers':>7} {'PyTorch img/s':>14} {'repghost img/s':>15} "
          f"{'ours/PyTorch':>13}")
    for name in args.models:
        for t in args.threads:
            for w in args.workers:
                # Alternate the two so that drift on a shared machine hits both alike.
                pt = torch_step(name, args.batch, args.size, t, args.runs)
                us = ours(name, args.batch, args.size, t, w, args.runs)
                a, b = args.batch * 1e3 / pt, args.batch * 1e3 / us
                print(f"{name:<18} {t:>7} {w:>7} {a:>14.1f} {b:>15.1f} {b / a:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
