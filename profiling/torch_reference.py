#!/usr/bin/env python3
"""The seed network in PyTorch, for side-by-side speed comparisons with `pneumo` on one GPU.

Same architecture (PyTorch names and layouts, as pneumo's checkpoints), same input size, batch,
loss and optimizer: conv3x3 'same' + ReLU, dropout, batch-norm (momentum 0.01 in PyTorch terms,
eps 1e-3), 2x2 max-pool with pneumo's 'same' rule (the padding row/column on the top/left of odd
sizes), Dense 128 + ReLU, dropout 0.2, Dense 1; BCE on logits; RMSprop(lr 1e-3, alpha 0.9,
eps 1e-7). fp32 with TF32 off unless --tf32. Inputs are random images resident on the GPU (no
augmentation): this times the training step itself.

Prints one JSON object per configuration: {"impl", "device", "batch", "images_per_second",
"step_ms_mean", "step_ms_median", ...}; images_per_second comes from the mean of back-to-back steps,
as in `pneumo bench train`.
Usage: profiling/torch_reference.py [--batch 32 256] [--steps 100] [--compile] [--tf32]

With --check-model RUN/model.safetensors --cache CACHE it instead checks, on the CPU, that this
network loaded with a pneumo checkpoint's weights gives the logits `pneumo predict --logits` gives
for the same images (the first --count images of the cache's --split, written as PNG so both read
identical pixels). Prints one JSON object with the largest differences; exits 1 beyond --tolerance.
"""
import argparse
import csv
import io
import json
import os
import statistics
import struct
import subprocess
import tempfile
import time
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F


class SamePool(nn.Module):
    """2x2 stride-2 max-pool, output ceil(H/2): odd sizes padded with -inf on the top/left."""

    def forward(self, x):
        pad_h, pad_w = x.shape[2] % 2, x.shape[3] % 2
        if pad_h or pad_w:
            x = F.pad(x, (pad_w, 0, pad_h, 0), value=float("-inf"))
        return F.max_pool2d(x, 2, 2)


class SeedNet(nn.Module):
    def __init__(self, size=150):
        super().__init__()
        channels, drops = [32, 64, 64, 128, 256], [0.0, 0.1, 0.0, 0.2, 0.2]
        layers, c_in, s = [], 1, size
        for i, (c, p) in enumerate(zip(channels, drops), start=1):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c, 3, padding=1))
            setattr(self, f"bn{i}", nn.BatchNorm2d(c, eps=1e-3, momentum=0.01))
            layers.append((i, p))
            c_in, s = c, (s + 1) // 2
        self.blocks = layers
        self.pool = SamePool()
        self.fc1 = nn.Linear(c_in * s * s, 128)
        self.fc2 = nn.Linear(128, 1)

    def forward(self, x):
        for i, p in self.blocks:
            x = F.relu(getattr(self, f"conv{i}")(x))
            if p > 0:
                x = F.dropout(x, p, self.training)
            x = self.pool(getattr(self, f"bn{i}")(x))
        x = F.dropout(F.relu(self.fc1(torch.flatten(x, 1))), 0.2, self.training)
        return self.fc2(x)


def time_training(model, batch, steps, warmup, device, step_fn):
    """Mean step time as `pneumo bench train` measures it (`steps` steps back to back between two
    synchronisations), then each step alone for the spread (median and min of synchronised steps,
    which also pay the launch latency the back-to-back run hides)."""
    x = torch.rand(batch, 1, 150, 150, device=device)
    y = (torch.rand(batch, 1, device=device) > 0.5).float()
    for _ in range(warmup):
        step_fn(x, y)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step_fn(x, y)
    end.record()
    end.synchronize()
    mean = start.elapsed_time(end) / steps
    times = []
    for _ in range(steps):
        start.record()
        step_fn(x, y)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"step_ms_mean": round(mean, 4), "step_ms_median": round(statistics.median(times), 4),
            "step_ms_min": round(min(times), 4), "images_per_second": round(batch / mean * 1e3, 1)}


def write_gray_png(path, pixels):
    """An 8-bit grayscale PNG of a 2-D uint8 array, with zlib only (no imaging library)."""
    height, width = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


def check_model(args):
    import numpy as np
    from safetensors.torch import load_file

    images = np.load(os.path.join(args.cache, f"{args.split}_images.npy"))[: args.count]
    size = images.shape[1]
    model = SeedNet(size).eval()
    state = {k: v for k, v in load_file(args.check_model).items()
             if not k.startswith("optimizer.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"torch_reference: checkpoint does not match: missing {missing}, "
                         f"unexpected {unexpected}")
    with torch.no_grad():
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        torch_logits = model(x).squeeze(1).double().numpy()
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, image in enumerate(images):
            paths.append(os.path.join(folder, f"image_{i:04d}.png"))
            write_gray_png(paths[-1], image)
        result = subprocess.run([args.pneumo, "predict", "--model", args.check_model, "--csv",
                                 "--logits", "--device", "cpu", *paths],
                                check=True, capture_output=True, text=True)
    rows = {os.path.basename(r["path"]): float(r["logit"])
            for r in csv.DictReader(io.StringIO(result.stdout))}
    pneumo_logits = np.array([rows[os.path.basename(p)] for p in paths])
    difference = np.abs(torch_logits - pneumo_logits)
    scale = max(1.0, float(np.abs(torch_logits).max()))
    report = {"check": "torch vs pneumo predict logits", "images": len(paths), "size": size,
              "torch": torch.__version__, "max_abs_difference": float(difference.max()),
              "max_logit_magnitude": float(np.abs(torch_logits).max()),
              "tolerance": args.tolerance, "ok": bool(difference.max() <= args.tolerance * scale),
              "same_predicted_class": bool(((torch_logits > 0) == (pneumo_logits > 0)).all())}
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--check-model", help="a pneumo checkpoint: compare logits on the CPU")
    parser.add_argument("--cache", help="with --check-model: a pneumo cache folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--pneumo", default="build/pneumo", help="the pneumo binary")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest |difference| allowed, relative to max(1, largest |logit|)")
    args = parser.parse_args()
    if args.check_model:
        if not args.cache:
            raise SystemExit("torch_reference: --check-model needs --cache")
        raise SystemExit(check_model(args))
    if not torch.cuda.is_available():
        raise SystemExit("torch_reference: no CUDA device")
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True  # like pneumo: algorithms chosen by timing, per shape
    device = torch.device("cuda")
    impls = ["eager"] + (["compile"] if args.compile else [])
    for impl in impls:
        for batch in args.batch:
            torch.manual_seed(0)
            model = SeedNet().to(device).train()
            params = sum(p.numel() for p in model.parameters())
            optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
            forward = torch.compile(model) if impl == "compile" else model

            def step(x, y):
                optimizer.zero_grad(set_to_none=True)
                loss = F.binary_cross_entropy_with_logits(forward(x), y)
                loss.backward()
                optimizer.step()

            t0 = time.time()
            result = time_training(model, batch, args.steps, args.warmup, device, step)
            print(json.dumps({"impl": f"torch-{impl}", "device": torch.cuda.get_device_name(),
                              "torch": torch.__version__, "batch": batch,
                              "precision": "tf32" if args.tf32 else "fp32",
                              "trainable_parameters": params, **result,
                              "wall_s": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
