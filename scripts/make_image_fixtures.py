#!/usr/bin/env python3
"""Writes the image fixtures: pictures in every supported format and, for each, the 8-bit
crop that the reference evaluation transform produces (Pillow `open` → `exif_transpose` →
`convert("RGB")` → torchvision `Resize(scale, BICUBIC)` → `CenterCrop`), saved as PNG.
Also a tiny ImageFolder with the reference accuracy of the repghostnet_050 fixture model.

    python scripts/make_image_fixtures.py --out crates/repghost-data/tests/fixtures \
        --model-fixtures crates/repghost/tests/fixtures
"""
import argparse
import io
import json
import math
import os
import struct
import zlib

import numpy as np
import torch
import timm
from PIL import Image, ImageOps
from torchvision import transforms

SEED = 1129


def picture(w, h, seed, smooth=True):
    """A natural-ish picture: smooth gradients plus texture, so resampling matters."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        128 + 100 * np.sin(x / (7 + seed % 5)) * np.cos(y / 11),
        128 + 90 * np.cos((x + y) / 13),
        128 + 80 * np.sin(x * y / 900.0),
    ], -1)
    img += rs.normal(0, 25 if smooth else 60, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def png16(path, arr, color):
    """Writes a 16-bit PNG by hand (Pillow cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    ctype = 2 if color else 0
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)


def eval_transform(img_size, crop_pct=0.875):
    scale = math.floor(img_size / crop_pct)
    return transforms.Compose([
        transforms.Resize(scale, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(img_size),
    ])


def load_rgb(path):
    im = Image.open(path)
    im = ImageOps.exif_transpose(im)
    return im.convert("RGB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--model-fixtures", required=True)
    args = ap.parse_args()
    out = args.out
    img_dir = os.path.join(out, "images")
    exp_dir = os.path.join(out, "expected")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(exp_dir, exist_ok=True)
    files = []

    def save(name, im, **kw):
        im.save(os.path.join(img_dir, name), **kw)
        files.append(name)

    save("landscape.jpg", Image.fromarray(picture(500, 375, 1)), quality=90)
    save("portrait_progressive.jpg", Image.fromarray(picture(301, 419, 2)), quality=85, progressive=True)
    save("cmyk.jpg", Image.fromarray(picture(150, 97, 3)).convert("CMYK"), quality=92)
    save("grey.png", Image.fromarray(picture(67, 131, 4)[..., 0]))
    rgba = np.concatenate([picture(210, 160, 5), np.full((160, 210, 1), 77, np.uint8)], -1)
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("palette.png", Image.fromarray(picture(90, 120, 6)).quantize(64))
    save("bitmap.bmp", Image.fromarray(picture(33, 45, 7)))
    save("photo.tiff", Image.fromarray(picture(64, 48, 8)))
    save("anim.gif", Image.fromarray(picture(70, 50, 9)).quantize(128))
    save("lossless.webp", Image.fromarray(picture(81, 59, 10)), lossless=True)
    save("lossy.webp", Image.fromarray(picture(81, 59, 11)), quality=80)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    save("rotated.jpg", Image.fromarray(picture(120, 80, 12)), quality=95, exif=exif.tobytes())
    g16 = (np.arange(80 * 60).reshape(60, 80) * 7 % 400).astype(np.uint16)  # many values > 255
    png16(os.path.join(img_dir, "grey16.png"), g16, color=False)
    files.append("grey16.png")
    rgb16 = (picture(77, 53, 13).astype(np.uint16) * 257 + np.random.RandomState(3).randint(0, 256, (53, 77, 3))).astype(np.uint16)
    png16(os.path.join(img_dir, "rgb16.png"), rgb16, color=True)
    files.append("rgb16.png")

    summary = {"img_size": 64, "crop_pct": 0.875, "files": {}}
    t64 = eval_transform(64)
    for name in files:
        im = load_rgb(os.path.join(img_dir, name))
        t64(im).save(os.path.join(exp_dir, name + ".64.png"))
        summary["files"][name] = {"size": list(im.size)}
    # The full 224 pipeline on a 500x375 landscape.
    eval_transform(224)(load_rgb(os.path.join(img_dir, "landscape.jpg"))).save(os.path.join(exp_dir, "landscape.jpg.224.png"))

    # Reference predictions of the repghostnet_050 fixture model (10 classes) at 224.
    ckpt = torch.load(os.path.join(args.model_fixtures, "repghostnet_050.pth.tar"), map_location="cpu", weights_only=False)
    model = timm.create_model("repghostnet_050", num_classes=10)
    model.load_state_dict({k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()})
    model.eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    tf = timm.data.create_transform(**cfg)
    preds = {}
    for name in ["landscape.jpg", "portrait_progressive.jpg", "grey.png", "rgba.png"]:
        x = tf(load_rgb(os.path.join(img_dir, name))).unsqueeze(0)
        with torch.no_grad():
            logits = model(x)[0]
        top = torch.topk(logits, 5)
        preds[name] = {"top5": top.indices.tolist(), "logits": logits.tolist()}
    summary["predictions_224"] = preds

    # A tiny ImageFolder: 3 classes, images of assorted sizes, and its reference metrics.
    folder = os.path.join(out, "folder")
    for c, cls in enumerate(["cat", "dog", "zebra"]):
        os.makedirs(os.path.join(folder, cls), exist_ok=True)
        for i in range(3):
            Image.fromarray(picture(40 + 7 * i, 30 + 5 * c, 100 + 10 * c + i)).save(os.path.join(folder, cls, f"{i}.png"))
    ds = __import__("torchvision").datasets.ImageFolder(folder, transform=tf)
    correct1 = correct5 = 0
    ce = 0.0
    for x, y in ds:
        with torch.no_grad():
            logits = model(x.unsqueeze(0))[0]
        top5 = torch.topk(logits, 5).indices.tolist()
        correct1 += top5[0] == y
        correct5 += y in top5
        ce += float(torch.nn.functional.cross_entropy(logits.unsqueeze(0), torch.tensor([y])))
    summary["folder"] = {"n": len(ds), "top1": correct1 / len(ds), "top5": correct5 / len(ds), "loss": ce / len(ds), "classes": ds.classes}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "predictions_224"}, indent=1))


if __name__ == "__main__":
    main()
