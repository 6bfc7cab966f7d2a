#!/usr/bin/env python3
"""Validation scores broken down by what each image was before pneumo resized it.

Two thirds of the dataset copy's training images reached us already squashed to 224 x 224; the
rest, and every test image, are about 256 px high at their original width/height
(docs/generalisation.md). A carved validation split holds both kinds, so its scores can say
whether a model does worse on the kind that looks like test (not 224 x 224, and by how wide),
without reading the test split.

Input: the CSV of `pneumo evaluate --split val-carved --scores FILE` (index,file,label,logit,
probability), one per model, and the image tree the cache was prepared from (--images). Output:
one markdown table per CSV: images, specificity (NORMAL) and sensitivity (PNEUMONIA) at the
threshold, for 224 x 224 images and for the others by width/height.

  scripts/validation_by_origin.py --images ../shared/data/chest_xray run1.csv run2.csv
"""
import argparse
import csv
import math
import os
import struct
import sys

# Width/height bins of the images that were not 224 x 224 (upper bounds, the last open).
ASPECT_BINS = [(1.2, "< 1.2"), (1.35, "1.2 to 1.35"), (1.5, "1.35 to 1.5"), (None, ">= 1.5")]
SQUARE_224 = "224 x 224"


def jpeg_size(data):
    """(width, height) from a JPEG's first start-of-frame segment, or None."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if at + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        at += 2 + length
    return None


def png_size(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def image_size(path):
    """(width, height) of a JPEG or PNG file, read from its header only."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
        size = png_size(data) or jpeg_size(data)
        if size is None and data[:2] == b"\xff\xd8":  # a start-of-frame past the first 64 KiB
            f.seek(0)
            size = jpeg_size(f.read())
    if size is None:
        raise ValueError(f"{path}: neither a JPEG with a start-of-frame nor a PNG")
    if 0 in size:  # a JPEG may leave its height to a later DNL segment
        raise ValueError(f"{path}: its header gives no size ({size[0]} x {size[1]})")
    return size


def origin(width, height):
    if (width, height) == (224, 224):
        return SQUARE_224
    ratio = width / height
    for bound, name in ASPECT_BINS:
        if bound is None or ratio < bound:
            return f"other, width/height {name}"
    raise AssertionError("unreachable")


def group_order():
    return [SQUARE_224] + [f"other, width/height {name}" for _, name in ASPECT_BINS]


def read_scores(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"file", "label", "logit"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{path}: expected the CSV of `pneumo evaluate --scores` "
                         f"(columns {', '.join(sorted(need))})")
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            if row["file"] is None or int(row["label"]) not in (0, 1):
                raise ValueError
            float(row["logit"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}, line {line}: not a row of `pneumo evaluate --scores` "
                             "(a file cut short?)") from None
    return rows


def fraction(right, total):
    return f"{right / total:.3f} ({right}/{total})" if total else ""


def table(rows, images, threshold):
    # group -> [normal total, normal right, pneumonia total, pneumonia right]
    counts = {g: [0, 0, 0, 0] for g in group_order()}
    sizes = {}
    cut = math.log(threshold / (1.0 - threshold))
    for row in rows:
        path = os.path.join(images, row["file"])
        if path not in sizes:
            sizes[path] = image_size(path)
        cell = counts[origin(*sizes[path])]
        label = int(row["label"])
        predicted = 1 if float(row["logit"]) > cut else 0  # pneumo's rule (metrics.cpp)
        cell[2 * label] += 1
        cell[2 * label + 1] += predicted == label
    other = [sum(c[i] for g, c in counts.items() if g != SQUARE_224) for i in range(4)]
    lines = ["| images | NORMAL | specificity | PNEUMONIA | sensitivity |",
             "|---|---:|---:|---:|---:|"]
    for name, c in list(counts.items()) + [("other, all", other)]:
        lines.append(f"| {name} | {c[0]} | {fraction(c[1], c[0])} | {c[2]} | "
                     f"{fraction(c[3], c[2])} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True,
                        help="image tree the scores' files are relative to (the --data of prepare)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="probability above which an image counts as PNEUMONIA (default 0.5)")
    parser.add_argument("scores", nargs="+", help="CSV of `pneumo evaluate --scores`")
    args = parser.parse_args()
    if not 0.0 < args.threshold < 1.0:
        parser.error(f"--threshold must be in (0, 1), got {args.threshold}")
    try:
        for path in args.scores:
            print(f"## {path} (threshold {args.threshold:g})\n")
            print(table(read_scores(path), args.images, args.threshold))
            print()
    except (OSError, ValueError) as error:
        print(f"validation_by_origin.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
