#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures that the Rust tests compare against.

Needs `pip install torch timm safetensors numpy` and a checkout of the official code
(github ChengpengChen/RepGhost) for the arbitrary-width model and `convert.py`'s form:

    python scripts/make_fixtures.py --official /path/to/RepGhost \
        --out crates/repghost/tests/fixtures

Random weights are useless for parity unless the BatchNorm statistics are realistic: with
arbitrary statistics the logits hardly depend on the input. So every model is calibrated
with a few train-mode passes, then its statistics and affine parameters are perturbed, and
the script asserts that two inputs give clearly different logits.
"""
import argparse
import collections
import json
import os
import sys

import numpy as np
import torch
import timm
from safetensors.torch import save_file

SEED = 20261129
H = W = 64  # small inputs keep the Rust tests fast; global pooling makes any size valid


def calibrate_and_perturb(model, in_chans=3):
    """Random affine parameters, statistics calibrated on random inputs, then perturbed."""
    g = torch.Generator().manual_seed(SEED)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.momentum = None  # cumulative average over the calibration passes
            bn.weight.copy_(0.5 + torch.rand(bn.num_features, generator=g))
            bn.bias.copy_(0.1 * torch.randn(bn.num_features, generator=g))
        model.train()
        for _ in range(4):
            model(torch.randn(8, in_chans, H, W, generator=g))
        for bn in bns:
            c = bn.num_features
            bn.running_mean += 0.05 * torch.randn(c, generator=g) * bn.running_var.sqrt()
            bn.running_var *= 0.8 + 0.45 * torch.rand(c, generator=g)
    model.eval()
    return model


def check_input_dependence(logits, name):
    a, b = logits[0], logits[1]
    rel = (a - b).abs().max() / a.abs().max()
    assert rel > 0.05, f"{name}: logits barely depend on the input (rel diff {rel:.2e})"
    return float(rel)


def deploy_counts(model, hw=224):
    """Params and MACs of conv and linear layers with every BN folded (each conv gains a bias)."""
    params = macs = 0
    hooks = []

    def conv_hook(m, inp, out):
        nonlocal params, macs
        params += m.weight.numel() + m.out_channels
        macs += m.weight.numel() * out.shape[2] * out.shape[3]

    def fc_hook(m, inp, out):
        nonlocal params, macs
        params += m.weight.numel() + m.out_features
        macs += m.weight.numel()

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(fc_hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, hw, hw))
    for h in hooks:
        h.remove()
    return params, macs


def save_npy(path, t):
    np.save(path, t.detach().numpy().astype(np.float32))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="checkout of github.com/ChengpengChen/RepGhost")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.official)
    from model.repghost import repghostnet, repghost_model_convert  # noqa: E402

    os.makedirs(args.out, exist_ok=True)
    out = lambda n: os.path.join(args.out, n)  # noqa: E731
    torch.manual_seed(SEED)
    summary = {"torch": torch.__version__, "timm": timm.__version__, "input": [2, 3, H, W]}

    x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(SEED + 1))
    save_npy(out("input.npy"), x)

    # 1. An official-style training checkpoint of timm's repghostnet_050 (10 classes):
    #    DDP 'module.' prefixes, an EMA state dict, optimizer and AMP state, and the run's
    #    argparse.Namespace, which PyTorch's weights-only loader refuses.
    m = calibrate_and_perturb(timm.create_model("repghostnet_050", num_classes=10))
    with torch.no_grad():
        logits = m(x)
    summary["repghostnet_050_input_dependence"] = check_input_dependence(logits, "repghostnet_050")
    save_npy(out("repghostnet_050_logits.npy"), logits)
    sd = m.state_dict()
    ema = collections.OrderedDict(sd)  # shares every tensor but the classifier: a small file
    g = torch.Generator().manual_seed(SEED + 2)
    ema["classifier.weight"] = sd["classifier.weight"] + 0.05 * torch.randn(sd["classifier.weight"].shape, generator=g)
    ema["classifier.bias"] = sd["classifier.bias"] + 0.05
    m_ema = timm.create_model("repghostnet_050", num_classes=10)
    m_ema.load_state_dict(ema)
    m_ema.eval()
    with torch.no_grad():
        save_npy(out("repghostnet_050_ema_logits.npy"), m_ema(x))
    opt = torch.optim.SGD(m.parameters(), lr=0.6, momentum=0.9, nesterov=True)
    ckpt = {
        "epoch": 3,
        "arch": "repghostnet_0_5x",
        "state_dict": collections.OrderedDict(("module." + k, v) for k, v in sd.items()),
        "optimizer": opt.state_dict(),
        "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 0},
        "metric": 12.5,
        "args": argparse.Namespace(model="repghostnet_0_5x", lr=0.6, epochs=300, smoothing=0.1, model_ema=True),
        "version": 2,
        "state_dict_ema": ema,
    }
    torch.save(ckpt, out("repghostnet_050.pth.tar"))
    # Its deploy logits, for the convert test: timm's own re-parameterization.
    m.convert_to_deploy()
    with torch.no_grad():
        dl = m(x)
    summary["repghostnet_050_deploy_vs_train_max_abs"] = float((dl - logits).abs().max())

    # 2. The official convert.py output of an arbitrary width (0.2x): cheap ops fused,
    #    every other BN kept, plain state dict.
    o = calibrate_and_perturb(repghostnet(width=0.2, num_classes=10))
    with torch.no_grad():
        ol = o(x)
    check_input_dependence(ol, "repghostnet_0_2x")
    save_npy(out("repghostnet_0_2x_logits.npy"), ol)
    fused = repghost_model_convert(o, save_path=out("repghostnet_0_2x_fused.pth"))
    with torch.no_grad():
        summary["repghostnet_0_2x_fused_vs_train_max_abs"] = float((fused(x) - ol).abs().max())

    # 3. timm's GhostNet 0.5x as timm safetensors (no metadata).
    gm = calibrate_and_perturb(timm.create_model("ghostnet_050", num_classes=10))
    with torch.no_grad():
        gl = gm(x)
    check_input_dependence(gl, "ghostnet_050")
    save_npy(out("ghostnet_050_logits.npy"), gl)
    save_file({k: v.contiguous() for k, v in gm.state_dict().items()}, out("ghostnet_050.safetensors"))

    # 4. Backbone feature maps of repghostnet_050 at stride 8/16/32: the outputs of
    #    timm's features_only model (out_indices 2, 3, 4), checked against the stage outputs.
    fm = timm.create_model("repghostnet_050", num_classes=10, features_only=True, out_indices=(2, 3, 4))
    fsd = fm.state_dict()
    remapped = {}
    for k in fsd:
        src = k.replace("blocks_", "blocks.", 1) if k.startswith("blocks_") else k
        remapped[k] = sd[src]
    fm.load_state_dict(remapped, strict=True)
    fm.eval()
    ref = timm.create_model("repghostnet_050", num_classes=10)
    ref.load_state_dict(sd)
    ref.eval()
    with torch.no_grad():
        feats = fm(x)
        y = ref.act1(ref.bn1(ref.conv_stem(x)))
        stage_out = []
        for i, stage in enumerate(ref.blocks):
            y = stage(y)
            stage_out.append(y)
    for f, i in zip(feats, (3, 5, 7)):
        assert torch.allclose(f, stage_out[i]), "features_only is not the output of blocks.3/5/7"
    summary["repghostnet_050_features"] = {
        "channels": fm.feature_info.channels(),
        "reduction": fm.feature_info.reduction(),
        "shapes": [list(f.shape) for f in feats],
        "values": [f.flatten().tolist() for f in feats],
    }

    # 5. Deploy counts at 3x224x224, 1000 classes, measured with hooks on the timm models.
    counts = {}
    for name in ["repghostnet_050", "repghostnet_058", "repghostnet_080", "repghostnet_100",
                 "repghostnet_111", "repghostnet_130", "repghostnet_150", "repghostnet_200",
                 "ghostnet_050", "ghostnet_100", "ghostnet_130"]:
        p, mac = deploy_counts(timm.create_model(name))
        counts[name] = {"params": p, "macs": mac}
    summary["deploy_counts_224"] = counts

    with open(out("reference.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "deploy_counts_224"}, indent=1))


if __name__ == "__main__":
    main()
