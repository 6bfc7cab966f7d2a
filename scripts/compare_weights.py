#!/usr/bin/env python3
"""Compares the float32 tensors of two safetensors files (pneumo checkpoints) within a tolerance.

    compare_weights.py A.safetensors B.safetensors [--tolerance T]

A tensor agrees when its shapes are the same and sum |a - b| <= T * sum |a| (T finite, >= 0) (its mean absolute difference relative to its
mean magnitude: a few weights whose gradient is near zero may move apart by a whole optimizer step
under RMSprop's or AdamW's normalisation, and must not decide alone). Prints one line per tensor
that does not, and a summary with the worst ratio seen; exits 1 when any tensor disagrees or the
files hold different tensors, and 2 when a file cannot be read as safetensors (missing, empty,
truncated, a header that is not valid JSON, a tensor other than F32) or a flag is invalid.
Standard library only (CI needs no NumPy for it).
"""
import argparse
import array
import json
import math
import os
import struct
import sys


class Unreadable(Exception):
    """A file that is not a safetensors file of F32 tensors: why, in words."""


def read_safetensors(path):
    """The file's tensors by name; Unreadable says why it cannot be read."""
    try:
        with open(path, "rb") as f:
            size = f.read(8)
            if len(size) != 8:
                raise Unreadable(f"{len(size)} bytes, too short for a safetensors header")
            (length,) = struct.unpack("<Q", size)
            left = os.fstat(f.fileno()).st_size - 8
            if length > left:  # checked before reading: a wrong length may be terabytes
                raise Unreadable(f"the header says {length} bytes of JSON, the file holds {left}")
            raw = f.read(length)
            header = json.loads(raw)
            data = f.read()
    except OSError as error:
        raise Unreadable(error.strerror or str(error)) from error
    except (struct.error, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError too
        raise Unreadable(f"the header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise Unreadable("the header is not a JSON object")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise Unreadable(f"tensor {name} has no [begin, end] data_offsets")
        if info.get("dtype") != "F32":
            raise Unreadable(f"tensor {name} is {info.get('dtype')}, only F32 is compared")
        begin, end = offsets
        if not 0 <= begin <= end <= len(data) or (end - begin) % 4:
            raise Unreadable(f"tensor {name}'s data_offsets [{begin}, {end}] do not fit the "
                             f"{len(data)} bytes of data as float32 values")
        shape = info.get("shape")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool)
                                                and d >= 0 for d in shape)):
            raise Unreadable(f"tensor {name} has no shape (a list of sizes)")
        values = array.array("f")
        values.frombytes(data[begin:end])
        if sys.byteorder != "little":
            values.byteswap()
        if len(values) != math.prod(shape):
            raise Unreadable(f"tensor {name}: shape {shape} but {len(values)} values")
        tensors[name] = (shape, values)
    return tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--tolerance", type=float, default=1e-2)
    args = parser.parse_args()
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        # NaN made every comparison false: weights that differ "agreed"
        parser.error(f"--tolerance must be a finite number >= 0, got {args.tolerance}")
    tensors = []
    for path in (args.a, args.b):
        try:
            tensors.append(read_safetensors(path))
        except Unreadable as why:
            print(f"compare_weights: cannot read {path}: {why}", file=sys.stderr)
            return 2
    a, b = tensors
    if not a and not b:  # two empty files "agreed" (status 0): nothing was compared
        print(f"compare_weights: {args.a} and {args.b} hold no F32 tensor: nothing to compare",
              file=sys.stderr)
        return 2
    if a.keys() != b.keys():
        print(f"different tensors: {sorted(a.keys() ^ b.keys())}")
        return 1
    worst, worst_name, failures, identical = 0.0, "", 0, 0
    for name in sorted(a):
        (shape_x, x), (shape_y, y) = a[name], b[name]
        if shape_x != shape_y:  # the same bytes as [2, 3] and [3, 2] are not the same weights
            print(f"{name}: shape {shape_x} against {shape_y}")
            failures += 1
            continue
        if x.tobytes() == y.tobytes():
            identical += 1
            continue
        if all(p == q for p, q in zip(x, y)):  # -0.0 and 0.0: equal values, other bits
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
