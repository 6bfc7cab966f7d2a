#!/usr/bin/env python3
"""The seed network in PyTorch, for side-by-side speed comparisons with `pneumo` on one GPU.

Same architecture (PyTorch names and layouts, as pneumo's checkpoints), same input size, batch,
loss and optimizer: conv3x3 'same' + ReLU, dropout, batch-norm (momentum 0.01 in PyTorch terms,
eps 1e-3), 2x2 max-pool with pneumo's 'same' rule (the padding row/column on the top/left of odd
sizes), Dense 128 + ReLU, dropout 0.2, Dense 1; BCE on logits; RMSprop(lr 1e-3, alpha 0.9,
eps 1e-7). fp32 with TF32 off unless --tf32. Inputs are random images resident on the GPU (no
augmentation): this times the training step itself.

Prints one JSON object per configuration: {"impl", "device", "batch", "images_per_second",
"step_ms_median", ...}.
Usage: profiling/torch_reference.py [--batch 32 256] [--steps 100] [--compile] [--tf32]
"""
import argparse
import json
import statistics
import time

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
    x = torch.rand(batch, 1, 150, 150, device=device)
    y = (torch.rand(batch, 1, device=device) > 0.5).float()
    for _ in range(warmup):
        step_fn(x, y)
    torch.cuda.synchronize()
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(steps):
        start.record()
        step_fn(x, y)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    median = statistics.median(times)
    return {"step_ms_median": round(median, 4), "step_ms_min": round(min(times), 4),
            "images_per_second": round(batch / median * 1e3, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--tf32", action="store_true")
    args = parser.parse_args()
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
