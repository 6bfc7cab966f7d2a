#!/usr/bin/env python3
"""Data-parallel scaling of pneumo's training step, on paper (nothing multi-GPU was measured).

Each of N GPUs runs the measured single-GPU step on its share of the batch, then the fp32
gradients are summed by a ring all-reduce (NCCL, one process per GPU):

    allreduce(bytes, N) = 2 (N-1)/N * bytes / (link bandwidth * NCCL_EFFICIENCY)
                          + BASE_LATENCY + 2 (N-1) * HOP_LATENCY[link]     (per call)

    no overlap:  step = compute(b) + allreduce(all gradients, one call)
    overlap:     step = compute(b) - backward(b) + max(backward(b), all buckets - tail) + tail

In the overlapped step the gradients go in buckets of about BUCKET_BYTES, each all-reduced as soon
as the backward pass has produced it; the last bucket (the first layers' gradients, produced last)
must wait for the backward pass to end: that is the tail. Each bucket pays the latency term once.
The first buckets (fc2, fc1, conv5: 90% of the bytes) come out early in the backward pass, whose
time is mostly the large early layers, so they are taken as free to overlap.
Weak scaling keeps the per-GPU batch b and grows the global batch to N b; efficiency =
compute(b) / step. Strong scaling splits a fixed global batch B over N GPUs (b = B / N);
efficiency = compute(B) / (N step). The step "stops scaling" at the first N whose efficiency < 80%.

Limits: nominal link bandwidths times one efficiency factor; no contention, no congestion, no
stragglers; a flat ring over one kind of link (a real cluster is NVLink inside a node and
InfiniBand between nodes, and NCCL switches to trees, whose latency grows as log N, so the ring's
latency term is pessimistic at 64-128 GPUs); compute at batch sizes other than 32 and 256 is a
straight line through those two measurements (below 32 an extrapolation, see compute_ms); bf16
is not implemented in pneumo, its step time is an assumption.
Usage: python3 profiling/scaling_model.py [--markdown]   (CSV of every row, or the page's tables)
"""
import sys

# --- Inputs -------------------------------------------------------------------------------
# Architecture of src/train/model.cpp (default flatten head; /work/shared/DESIGN.md §2):
# one input channel, five 3x3 conv + batch-norm blocks, 150 px pooled to 5x5, Dense 128, Dense 1.
CONV_CHANNELS = [32, 64, 64, 128, 256]
FINAL_SPATIAL = 5
HIDDEN = 128
PARAMETER_ALIGNMENT = 32        # floats; model.cpp's kParameterAlignment pads each tensor's offset
GRADIENT_BYTES = 4              # fp32 gradients, also under tf32/bf16 compute (assumption)

# Measured single-GPU steps: NVIDIA H100 80GB HBM3, one `scripts/gpu_check.sh` call at commit
# d93b576, `pneumo bench train`, 200 steps, augmentation off, deterministic algorithms
# (profiling/results/2026-11-26-h100-choices/throughput_a.jsonl, "step_ms_mean" and
# "phases_ms.backward"). precision -> {batch: (whole step ms, backward ms)}
MEASURED = {
    "fp32": {32: (3.861, 2.574), 256: (29.257, 21.743)},
    "tf32": {32: (3.024, 2.019), 256: (19.529, 12.853)},  # --precision tf32
}
# ASSUMPTION, not measured on an H100 (written before pneumo had a bf16 path): H100's dense bf16
# tensor-core peak is twice its tf32 peak, but tf32 gained only 1.28x / 1.50x over fp32 here, so
# assume bf16 = tf32 / 1.5. An H200 measured 2.61 / 16.62 ms (2026-12-04): this is optimistic.
BF16_SPEEDUP_OVER_TF32 = 1.5

# Nominal per-direction link bandwidth per GPU, GB/s (vendor figures).
LINK_GBPS = {
    "NVLink4": 450.0,   # H100 SXM NVLink 4: 900 GB/s total bidirectional
    "PCIe5x16": 64.0,   # PCIe Gen5 x16: ~64 GB/s per direction
    "IB-NDR": 50.0,     # InfiniBand NDR 400 Gb/s, one port per GPU
    "IB-HDR": 25.0,     # InfiniBand HDR 200 Gb/s, one port per GPU
}
NCCL_EFFICIENCY = 0.8   # NCCL reaches maybe 70-90% of the nominal bus bandwidth (assumption)
# Latency, microseconds: NCCL's own cost-model constants for ring all-reduce, Simple protocol
# (NVIDIA/nccl src/graph/tuning.cc: baseLat 8.4; hwLat NVLink 3.4, PCI 5.7, NET 9.6 per step).
BASE_LATENCY_US = 8.4
HOP_LATENCY_US = {"NVLink4": 3.4, "PCIe5x16": 5.7, "IB-NDR": 9.6, "IB-HDR": 9.6}
BUCKET_BYTES = 1 << 20  # close a bucket once it holds >= 1 MiB (PyTorch DDP's default, 25 MB,
                        # would put this whole model in one bucket: no overlap at all)

GPU_COUNTS = [1, 2, 4, 8, 16, 32, 64, 128]
WEAK_PER_GPU_BATCHES = [32, 256]
STRONG_GLOBAL_BATCH = 256
STOPS_BELOW = 0.8


def parameter_tensors():
    """(name, trainable elements) in registration order, as model.cpp registers them."""
    tensors, in_channels = [], 1
    for i, out in enumerate(CONV_CHANNELS, 1):
        tensors += [(f"conv{i}.weight", out * in_channels * 9), (f"conv{i}.bias", out),
                    (f"bn{i}.weight", out), (f"bn{i}.bias", out)]
        in_channels = out
    flat = in_channels * FINAL_SPATIAL * FINAL_SPATIAL
    tensors += [("fc1.weight", HIDDEN * flat), ("fc1.bias", HIDDEN),
                ("fc2.weight", HIDDEN), ("fc2.bias", 1)]
    return tensors


def flat_lengths(tensors):
    """Each tensor's stretch of the flat gradient buffer: padded to the next aligned offset."""
    up = [(n + PARAMETER_ALIGNMENT - 1) // PARAMETER_ALIGNMENT * PARAMETER_ALIGNMENT
          for _, n in tensors]
    return up[:-1] + [tensors[-1][1]]


def buckets_in_backward_order(tensors):
    """Bucket sizes, bytes, in the order the backward pass produces them (last layer first)."""
    sizes, current = [], 0
    for n in reversed(flat_lengths(tensors)):
        current += n * GRADIENT_BYTES
        if current >= BUCKET_BYTES:
            sizes.append(current)
            current = 0
    if current:
        sizes.append(current)
    return sizes


def allreduce_ms(nbytes, n, link):
    """(bandwidth part, latency part) of one ring all-reduce call, milliseconds."""
    if n == 1:
        return 0.0, 0.0
    bandwidth = 2 * (n - 1) / n * nbytes / (LINK_GBPS[link] * 1e9 * NCCL_EFFICIENCY) * 1e3
    latency = (BASE_LATENCY_US + 2 * (n - 1) * HOP_LATENCY_US[link]) * 1e-3
    return bandwidth, latency


def compute_ms(precision, batch):
    """(whole step, backward) on one GPU: a line through the batch-32 and batch-256 measurements.

    Below batch 32 the line is extrapolated (its intercept acts as a fixed cost per step) and the
    backward pass keeps its measured batch-32 share of the step (its own line would go negative).
    """
    source = MEASURED["tf32" if precision == "bf16" else precision]
    scale = BF16_SPEEDUP_OVER_TF32 if precision == "bf16" else 1.0
    (b0, (s0, k0)), (b1, (s1, k1)) = sorted(source.items())
    step = s0 + (s1 - s0) * (batch - b0) / (b1 - b0)
    backward = k0 + (k1 - k0) * (batch - b0) / (b1 - b0) if batch >= b0 else step * k0 / s0
    return step / scale, backward / scale


def rows():
    tensors = parameter_tensors()
    total_bytes = sum(flat_lengths(tensors)) * GRADIENT_BYTES
    buckets = buckets_in_backward_order(tensors)
    scenarios = [("weak", b) for b in WEAK_PER_GPU_BATCHES] + [("strong", STRONG_GLOBAL_BATCH)]
    for kind, batch in scenarios:
        for precision in ["fp32", "tf32", "bf16"]:
            for link in LINK_GBPS:
                for n in GPU_COUNTS:
                    per_gpu = batch if kind == "weak" else batch // n
                    step, backward = compute_ms(precision, per_gpu)
                    bw, lat = allreduce_ms(total_bytes, n, link)
                    no_overlap = step + bw + lat
                    calls = [sum(allreduce_ms(b, n, link)) for b in buckets]
                    tail = calls[-1]
                    overlap = step - backward + max(backward, sum(calls) - tail) + tail
                    ideal = step if kind == "weak" else compute_ms(precision, batch)[0] / n
                    yield dict(scaling=kind, per_gpu_batch=per_gpu, global_batch=per_gpu * n,
                               precision=precision, link=link, gpus=n, compute_ms=step,
                               backward_ms=backward, allreduce_bandwidth_ms=bw,
                               allreduce_latency_ms=lat, step_no_overlap_ms=no_overlap,
                               step_overlap_ms=overlap, efficiency_compute_only=ideal / step,
                               efficiency_no_overlap=ideal / no_overlap,
                               efficiency_overlap=ideal / overlap)


def stops_at(group, key):
    below = [r["gpus"] for r in group if r[key] < STOPS_BELOW]
    return str(min(below)) if below else f">{GPU_COUNTS[-1]}"


def select(table, kind, batch, precision, link=None):
    size = "per_gpu_batch" if kind == "weak" else "global_batch"
    return [r for r in table if r["scaling"] == kind and r[size] == batch
            and r["precision"] == precision and link in (None, r["link"])]


def markdown(table):
    tensors = parameter_tensors()
    buckets = buckets_in_backward_order(tensors)
    sizes = ", ".join(f"{b / 1e6:.2f} MB" for b in buckets)
    print(f"Gradients: {sum(n for _, n in tensors):,} trainable parameters, {sum(buckets):,} bytes "
          f"in the flat buffer;\nbuckets in backward order: {sizes}.")
    print("\nOne all-reduce of all gradients, ms (bandwidth part + latency part):\n")
    print("| link | " + " | ".join(f"N={n}" for n in GPU_COUNTS[1:]) + " |")
    print("|---|" + "---:|" * (len(GPU_COUNTS) - 1))
    for link in LINK_GBPS:
        cells = [f"{r['allreduce_bandwidth_ms']:.3f} + {r['allreduce_latency_ms']:.3f}"
                 for r in select(table, "weak", 32, "fp32", link)[1:]]
        print(f"| {link} | " + " | ".join(cells) + " |")
    print("\nFirst N whose efficiency falls below 80%: with free communication (compute only),\n"
          "then per link without overlap / with overlap:\n")
    print("| scaling | batch | precision | 1-GPU step ms | compute only | "
          + " | ".join(LINK_GBPS) + " |")
    print("|---|---:|---|---:|---|" + "---|" * len(LINK_GBPS))
    scenarios = [("weak", b, "per GPU") for b in WEAK_PER_GPU_BATCHES]
    for kind, batch, label in scenarios + [("strong", STRONG_GLOBAL_BATCH, "global")]:
        for precision in ["fp32", "tf32", "bf16"]:
            groups = [select(table, kind, batch, precision, link) for link in LINK_GBPS]
            cells = [f"{stops_at(g, 'efficiency_no_overlap')} / {stops_at(g, 'efficiency_overlap')}"
                     for g in groups]
            tag = " (assumed)" if precision == "bf16" else ""
            first = groups[0]
            print(f"| {kind} | {batch} {label} | {precision}{tag} | {first[0]['compute_ms']:.2f} | "
                  f"{stops_at(first, 'efficiency_compute_only')} | " + " | ".join(cells) + " |")
    for kind, batch in [("weak", 32), ("strong", STRONG_GLOBAL_BATCH)]:
        print(f"\nParallel efficiency, {kind} scaling, batch {batch} "
              f"{'per GPU' if kind == 'weak' else 'global'} (no overlap / overlap):\n")
        print("| precision | link | " + " | ".join(f"N={n}" for n in GPU_COUNTS[1:]) + " |")
        print("|---|---|" + "---:|" * (len(GPU_COUNTS) - 1))
        for precision in ["fp32", "bf16"]:
            for link in LINK_GBPS:
                cells = [f"{r['efficiency_no_overlap']:.2f} / {r['efficiency_overlap']:.2f}"
                         for r in select(table, kind, batch, precision, link)[1:]]
                print(f"| {precision} | {link} | " + " | ".join(cells) + " |")


def main():
    table = list(rows())
    if "--markdown" in sys.argv[1:]:
        markdown(table)
        return
    print(",".join(table[0]))
    for r in table:
        print(",".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()))


if __name__ == "__main__":
    main()
