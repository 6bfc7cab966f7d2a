#!/usr/bin/env python3
"""Compares the float32 tensors of two safetensors files (pneumo checkpoints) within a tolerance.

    compare_weights.py A.safetensors B.safetensors [--tolerance T] [--names-from A]

A tensor agrees when sum |a - b| <= T * sum |a| (its mean absolute difference relative to its
mean magnitude: a few weights whose gradient is near zero may move apart by a whole optimizer step
under RMSprop's or AdamW's normalisation, and must not decide alone). Prints one line per tensor
that does not, and a summary with the worst ratio seen; exits 1 when any tensor disagrees or the
files hold different tensors. Standard library only (CI needs no NumPy for it).
"""
import argparse
import array
import json
import struct
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, only F32 is compared")
        begin, end = info["data_offsets"]
        values = array.array("f")
        values.frombytes(data[begin:end])
        if sys.byteorder != "little":
            values.byteswap()
        tensors[name] = values
    return tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--tolerance", type=float, default=1e-2)
    args = parser.parse_args()
    a, b = read_safetensors(args.a), read_safetensors(args.b)
    if a.keys() != b.keys():
        print(f"different tensors: {sorted(a.keys() ^ b.keys())}")
        return 1
    worst, worst_name, failures, identical = 0.0, "", 0, 0
    for name in sorted(a):
        x, y = a[name], b[name]
        if len(x) != len(y):
            print(f"{name}: {len(x)} values against {len(y)}")
            failures += 1
            continue
        if x.tobytes() == y.tobytes():
            identical += 1
            continue
        scale = sum(abs(v) for v in x)
        diff = sum(abs(p - q) for p, q in zip(x, y))
        ratio = diff / scale if scale > 0 else float("inf")
        if ratio != ratio or ratio > args.tolerance:  # NaN counts as a failure
            print(f"{name}: sum |a - b| / sum |a| = {ratio:.3g} (> {args.tolerance:g})")
            failures += 1
        if ratio > worst or ratio != ratio:
            worst, worst_name = ratio, name
    print(f"compare_weights: {len(a)} tensors, {identical} bit-identical, worst relative difference "
          f"{worst:.3g}{' (' + worst_name + ')' if worst_name else ''}, tolerance {args.tolerance:g}: "
          f"{'DIFFER' if failures else 'agree'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
