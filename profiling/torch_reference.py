#!/usr/bin/env python3
"""The seed network in PyTorch, for side-by-side speed comparisons with `pneumo` on one GPU.

Same architecture (PyTorch names and layouts, as pneumo's checkpoints), same input size, batch,
loss and optimizer: conv3x3 'same' + ReLU, dropout, batch-norm (momentum 0.01 in PyTorch terms,
eps 1e-3), 2x2 max-pool with pneumo's 'same' rule (the padding row/column on the top/left of odd
sizes), Dense 128 + ReLU, dropout 0.2, Dense 1; BCE on logits; RMSprop(lr 1e-3, alpha 0.9,
eps 1e-7). fp32 with TF32 off unless --tf32. Inputs are random images resident on the GPU (no
augmentation): this times the training step itself.

Prints one JSON object per configuration and batch: {"impl", "device", "batch",
"images_per_second", "step_ms_mean", "step_ms_median", ...}; images_per_second comes from the mean
of back-to-back steps, as in `pneumo bench train`. --configs picks what a user would run, from the
weakest up: eager (fp32, NCHW), eager-bf16 (channels_last + bf16 autocast), compile (torch.compile,
fp32), compile-bf16, compile-graphs-bf16 (mode reduce-overhead: CUDA graphs), compile-max-bf16
(mode max-autotune: autotuned kernels and CUDA graphs); all of them with --configs all. --recipe-epochs N adds, per configuration, the recipe end to end as
`pneumo bench train --recipe-epochs` times it ({"measure": "recipe", "recipe_seconds", ...}: a new
model, its compilation, N epochs of 6,586 random images at the first --batch and a pass over 782;
a compiled configuration's line says whether TorchInductor's cache was "cold" or "warm" at its start,
"compile_cache", as pneumo's says of its tuning cache).
Usage: profiling/torch_reference.py [--batch 32 256] [--steps 100] [--configs all]
       [--recipe-epochs 12] [--tf32]

With --profile it instead records --steps steps of each batch size with torch.profiler and prints
where the device time goes, to set beside `pneumo bench train --layers`: one JSON object per
PyTorch op ({"profile": "op", ...}: the device time of the kernels each aten op launched itself)
and per kernel ({"profile": "kernel", ...}: which cuDNN and PyTorch kernels ran), in ms per step,
largest first. `--device cpu` runs it on the CPU (to check the script; CPU times say nothing of a
GPU).

With --check-model RUN/model.safetensors --cache CACHE it instead checks, on the CPU, that this
network loaded with a pneumo checkpoint's weights gives the logits `pneumo predict --logits` gives
for the same images (the first --count images of the cache's --split, written as PNG so both read
identical pixels). Prints one JSON object with the largest differences; exits 1 beyond --tolerance.
"""
import argparse
import contextlib
import csv
import io
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F


class SamePool(nn.Module):
    """2x2 stride-2 max-pool, output ceil(H/2): odd sizes padded with -inf on the top/left.

    max_pool2d's own padding of 1 on an odd side pads both ends with -inf, but with stride 2 the
    last window ends on the last real row, so only the top/left padding is ever read: the same
    outputs and gradients as padding the top/left first (checked bit for bit against F.pad on
    the recipe's sizes), without F.pad's copy of the whole tensor before each odd-size pool."""

    def forward(self, x):
        return F.max_pool2d(x, 2, 2, padding=(x.shape[2] % 2, x.shape[3] % 2))


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


class Clock:
    """Elapsed milliseconds between marks: CUDA events on the GPU, the host clock on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, start, end):
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end)
        return (end - start) * 1e3


def time_training(batch, steps, warmup, device, step_fn, memory_format):
    """Mean step time as `pneumo bench train` measures it (`steps` steps back to back between two
    synchronisations), then each step alone for the spread (median and min of synchronised steps,
    which also pay the launch latency the back-to-back run hides)."""
    x = torch.rand(batch, 1, 150, 150, device=device).to(memory_format=memory_format)
    y = (torch.rand(batch, 1, device=device) > 0.5).float()
    clock = Clock(device)
    # The first step alone, wall clock: a compiled configuration's compilation happens in it.
    clock.sync()
    first = time.perf_counter()
    step_fn(x, y)
    clock.sync()
    first_step_s = time.perf_counter() - first
    for _ in range(max(0, warmup - 1)):
        step_fn(x, y)
    clock.sync()
    start = clock.mark()
    for _ in range(steps):
        step_fn(x, y)
    end = clock.mark()
    clock.sync()
    mean = clock.ms(start, end) / steps
    times = []
    for _ in range(steps):
        start = clock.mark()
        step_fn(x, y)
        end = clock.mark()
        clock.sync()
        times.append(clock.ms(start, end))
    return {"step_ms_mean": round(mean, 4), "step_ms_median": round(statistics.median(times), 4),
            "step_ms_min": round(min(times), 4), "images_per_second": round(batch / mean * 1e3, 1),
            "first_step_s": round(first_step_s, 3)}


# The configurations a user who cares about speed would run, from the weakest up (issue #15's
# fair anchor). name -> (torch.compile mode or None, bf16 autocast + channels_last).
CONFIGS = {
    "eager": (None, False),            # fp32 (TF32 only with --tf32), NCHW
    "eager-bf16": (None, True),        # channels_last + bf16 autocast
    "compile": ("default", False),     # torch.compile, fp32
    "compile-bf16": ("default", True),  # torch.compile + channels_last + bf16 autocast
    # reduce-overhead: the same kernels as default, replayed as CUDA graphs (cudagraph trees),
    # without max-autotune's long autotuning: at batch 32 compiled PyTorch is bound by the host
    # (4.69 ms a step against 6.99 ms at 256 on the H200), which graphs remove
    "compile-graphs-bf16": ("reduce-overhead", True),
    # max-autotune: Triton/cuBLAS autotuning, and CUDA graphs (cudagraph trees) for the compiled
    # forward and backward (the loss, zero_grad and RMSprop's step run eagerly around them)
    "compile-max-bf16": ("max-autotune", True),
}

RECIPE_TRAIN_IMAGES, RECIPE_VAL_IMAGES = 6586, 782  # pneumo's recipe epoch (oversampled) and val


def make_training(config, device):
    """A new SeedNet, its RMSprop and one training step (and an inference pass) in `config`."""
    mode, bf16 = CONFIGS[config]
    memory_format = torch.channels_last if bf16 else torch.contiguous_format
    torch.manual_seed(0)
    model = SeedNet().to(device).to(memory_format=memory_format).train()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    if mode:
        # Dynamo's cache is per code object, so a model compiled earlier in this process (another
        # batch or configuration) would make this one compile for a dynamic batch, and every
        # compile counts against one recompile limit (past it: eager, silently). Each
        # configuration starts clean and compiles each batch shape it meets as a static graph.
        torch.compiler.reset()
    forward = torch.compile(model, mode=mode, dynamic=False) if mode else model
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else \
        contextlib.nullcontext

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = forward(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        loss.backward()
        optimizer.step()

    def infer(x):
        with torch.no_grad(), autocast():
            return forward(x).float()

    return model, step, infer, memory_format


# Compiled configurations whose recipe this process has timed: they fill the one cache folder.
_compiled_here = []


def compile_cache_state(config):
    """For a compiled configuration, whether TorchInductor's on-disk cache (compiled graphs, Triton
    kernels, autotuning results) held anything when the recipe began: "cold" (an empty or missing
    folder) or "warm" (entries of an earlier run: the GPU check runs the recipe twice on one
    folder); "unknown" where the folder cannot be found, or when another compiled configuration
    of this process filled it (its entries are not this configuration's graphs: a compile-bf16
    recipe after a compile one compiled from nothing and was called warm); None for eager
    configurations."""
    if CONFIGS[config][0] is None:
        return None
    if any(other != config for other in _compiled_here):
        return "unknown"
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        folder = cache_dir()
    except Exception:  # a private module: a release without it leaves only the variable
        folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not folder:
        return "unknown"
    with contextlib.suppress(OSError):
        with os.scandir(folder) as entries:
            return "warm" if any(True for _ in entries) else "cold"
    return "cold"  # not made yet


def time_recipe(config, batch, epochs, device, train_images=RECIPE_TRAIN_IMAGES):
    """The recipe end to end as pneumo's `bench train --recipe-epochs` times it: from a new model
    (and its compilation, which happens in the first steps) through `epochs` epochs of
    `train_images` random images at `batch` (the last batch partial, as pneumo's is), each
    followed by an inference pass over validation images in the recipe's proportion (782 for
    6,586); the images are on the device already."""
    val_images = max(1, round(train_images * RECIPE_VAL_IMAGES / RECIPE_TRAIN_IMAGES))
    cache_state = compile_cache_state(config)  # before this run's compilation fills it
    if cache_state is not None:
        _compiled_here.append(config)
    clock = Clock(device)
    # The clock starts before the first synchronisation, which makes the CUDA context in a new
    # process (--recipe-only): pneumo's recipe clock holds its backend's creation too.
    t0 = time.perf_counter()
    clock.sync()
    model, step, infer, memory_format = make_training(config, device)
    train_x = torch.rand(train_images, 1, 150, 150, device=device)
    train_y = (torch.rand(train_images, 1, device=device) > 0.5).float()
    val_x = torch.rand(val_images, 1, 150, 150, device=device)
    epoch_seconds = []
    for epoch in range(epochs):
        e0 = time.perf_counter()
        model.train()
        order = torch.randperm(train_images, device=device)
        for first in range(0, train_images, batch):
            index = order[first:first + batch]
            step(train_x[index].to(memory_format=memory_format), train_y[index])
        model.eval()
        whole = val_images - val_images % batch
        logits = [infer(val_x[first:first + batch].to(memory_format=memory_format))
                  for first in range(0, whole, batch)]
        if whole < val_images:
            # After whole batches the last, partial one runs padded to the full batch, as
            # pneumo's predict_logits runs it: the same work on both sides, and no fourth static
            # graph for a compiled configuration to compile (training's last partial batch, which
            # pneumo also runs at its own size, is the third). Alone, it runs at its own size.
            last = val_x[whole:]
            if whole:
                last = torch.cat([last, last.new_zeros(batch - last.shape[0], *last.shape[1:])])
            logits.append(infer(last.to(memory_format=memory_format))[:val_images - whole])
        torch.cat(logits).cpu()  # the pass ends with its scores on the host
        clock.sync()
        epoch_seconds.append(time.perf_counter() - e0)
        # On stderr as it goes: a run stopped by its time limit still says how far it got.
        print(f"torch_reference: {config} recipe epoch {epoch + 1}/{epochs}: "
              f"{epoch_seconds[-1]:.3f} s", file=sys.stderr, flush=True)
    later = sorted(epoch_seconds[1:])
    steady = statistics.median(later) if later else None
    result = {"recipe_epochs": epochs, "recipe_train_images": train_images,
              "recipe_val_images": val_images, "recipe_seconds": round(time.perf_counter() - t0, 3),
              "recipe_first_epoch_seconds": round(epoch_seconds[0], 3) if epoch_seconds else None,
              "recipe_steady_epoch_seconds": round(steady, 3) if steady else None}
    if cache_state:
        result["compile_cache"] = cache_state
    return result


def profile_training(batch, steps, warmup, device, step_fn, memory_format):
    """JSON rows of where a step's time goes, from torch.profiler over `steps` steps: per aten op
    its self device time (kernels it launched itself, so ops do not count their children's
    kernels twice) and per kernel its device time; both in ms per step, largest first. On the
    CPU the ops' self CPU time stands in, and there are no kernels."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = device.type == "cuda"
    # The layout the timed runs feed (channels_last for the bf16 configurations): another one
    # would add a conversion kernel, and for a compiled model another graph.
    x = torch.rand(batch, 1, 150, 150, device=device).to(memory_format=memory_format)
    y = (torch.rand(batch, 1, device=device) > 0.5).float()
    for _ in range(warmup):
        step_fn(x, y)
    if on_cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step_fn(x, y)
        if on_cuda:
            torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        # Not ops or kernels: record_function markers (the optimizer's "Optimizer.step#...", the
        # regions around compiled graphs) span kernels already counted, and profiler overhead
        # ("Command Buffer Full") is no op of the step. The op table keeps aten ops only.
        if getattr(event, "is_user_annotation", False):
            continue
        is_kernel = event.device_type == torch.autograd.DeviceType.CUDA
        if not is_kernel and not event.key.startswith("aten::"):
            continue
        if on_cuda:
            us = event.self_device_time_total
        else:
            us = 0 if is_kernel else event.self_cpu_time_total
        if us <= 0:
            continue
        rows.append({"profile": "kernel" if is_kernel else "op", "name": event.key,
                     "ms_per_step": round(us / 1e3 / steps, 4),
                     "calls_per_step": round(event.count / steps, 2)})
    rows.sort(key=lambda r: (r["profile"], -r["ms_per_step"]))
    return rows


def compile_counters(config):
    """For a compiled configuration, whether it got what it claims: Dynamo's graph breaks and
    graphs, and the CUDA graphs Inductor skipped (max-autotune falls back to no graph silently);
    {} for eager ones, or where this torch keeps no such counters."""
    if not CONFIGS[config][0]:
        return {}
    try:
        from torch._dynamo.utils import counters
        return {"graph_breaks": sum(counters["graph_break"].values()),
                "unique_graphs": counters["stats"]["unique_graphs"],
                "cudagraph_skips": counters["inductor"]["cudagraph_skips"]}
    except Exception as error:  # a private API: its absence must not cost the measurement
        return {"compile_counters": f"unavailable ({type(error).__name__})"}


def print_profile_tables(head, rows, out, top=20):
    """The largest `top` ops and kernels of one profile as Markdown tables."""
    own = "self CPU time" if head["device"] == "CPU" else "self device time"
    for kind, label in (("op", f"aten op ({own})"), ("kernel", "kernel")):
        chosen = [r for r in rows if r["profile"] == kind]
        if not chosen:
            continue
        total = sum(r["ms_per_step"] for r in chosen)
        print(f"\n### {head['impl']} {head['precision']} on {head['device']}, batch "
              f"{head['batch']}: each {kind}'s time per step ({total:.3f} ms in all)\n", file=out)
        print(f"| {label} | calls per step | ms per step | % |\n|---|---:|---:|---:|", file=out)
        for r in chosen[:top]:
            name = r["name"] if len(r["name"]) <= 90 else r["name"][:87] + "..."
            print(f"| `{name}` | {r['calls_per_step']:g} | {r['ms_per_step']:.3f} | "
                  f"{100 * r['ms_per_step'] / total:.1f} |", file=out)
        if len(chosen) > top:
            rest = sum(r["ms_per_step"] for r in chosen[top:])
            print(f"| ({len(chosen) - top} more) | | {rest:.3f} | {100 * rest / total:.1f} |",
                  file=out)


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
    parser.add_argument("--configs", default="eager",
                        help="comma-separated, from: " + ", ".join(CONFIGS) + "; or all")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (fp32)")
    parser.add_argument("--recipe-epochs", type=int, default=0,
                        help="also time the recipe end to end (this many epochs, at the first "
                             "--batch) for each configuration")
    parser.add_argument("--recipe-only", action="store_true",
                        help="with --recipe-epochs: time only the recipe (its compilation then "
                             "happens inside it, as pneumo's cold start does inside its own)")
    parser.add_argument("--recipe-images", type=int, default=RECIPE_TRAIN_IMAGES,
                        help="training images per recipe epoch (validation in proportion)")
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="print each op's and kernel's device time per step instead")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu checks the script on a machine without a GPU (its times say "
                             "nothing of a GPU)")
    parser.add_argument("--check-model", help="a pneumo checkpoint: compare logits on the CPU")
    parser.add_argument("--cache", help="with --check-model: a pneumo cache folder")
    # Any split's pixels serve a logits check: train by default, not the test split (read only for
    # final reports).
    parser.add_argument("--split", default="train",
                        help="with --check-model: the cache split whose images are compared")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--pneumo", default="build/pneumo", help="the pneumo binary")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest |difference| allowed, relative to max(1, largest |logit|)")
    args = parser.parse_args()
    if args.check_model:
        if not args.cache:
            raise SystemExit("torch_reference: --check-model needs --cache")
        raise SystemExit(check_model(args))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("torch_reference: no CUDA device")
    configs = list(CONFIGS) if args.configs == "all" else args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"torch_reference: unknown --configs {unknown}; known: {list(CONFIGS)}")
    if args.compile and "compile" not in configs:
        configs.append("compile")
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True  # like pneumo: algorithms chosen by timing, per shape
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    if args.recipe_only and args.recipe_epochs <= 0:
        raise SystemExit("torch_reference: --recipe-only needs --recipe-epochs N")
    if args.recipe_only and args.profile:
        raise SystemExit("torch_reference: --profile profiles steps; --recipe-only runs none")
    for config in configs:
        bf16 = CONFIGS[config][1]
        precision = "bf16 autocast" if bf16 else ("tf32" if args.tf32 else "fp32")
        for batch in ([] if args.recipe_only else args.batch):
            head = {"impl": f"torch-{config}", "device": name, "torch": torch.__version__,
                    "batch": batch, "precision": precision,
                    "memory_format": "channels_last" if bf16 else "nchw"}
            model, step, _, memory_format = make_training(config, device)
            params = sum(p.numel() for p in model.parameters())
            if args.profile:
                rows = profile_training(batch, args.steps, args.warmup, device, step,
                                        memory_format)
                for row in rows:
                    print(json.dumps({**head, **row}), flush=True)
                print_profile_tables(head, rows, sys.stderr)
                continue
            t0 = time.time()
            before = compile_counters(config)
            result = time_training(batch, args.steps, args.warmup, device, step, memory_format)
            after = compile_counters(config)
            # This measurement's own counts (the counters are the process's).
            counts = {k: v - before[k] if isinstance(v, int) else v for k, v in after.items()}
            print(json.dumps({**head, "trainable_parameters": params, **result, **counts,
                              "wall_s": round(time.time() - t0, 1)}), flush=True)
        if args.recipe_epochs > 0 and not args.profile:
            batch = args.batch[0]
            head = {"impl": f"torch-{config}", "device": name, "torch": torch.__version__,
                    "batch": batch, "precision": precision, "measure": "recipe"}
            print(json.dumps({**head, **time_recipe(config, batch, args.recipe_epochs, device,
                                                       args.recipe_images)}),
                  flush=True)


if __name__ == "__main__":
    main()
