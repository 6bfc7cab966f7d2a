#!/usr/bin/env python3
"""Rebuilds a pneumo cache from what scripts/pack_gpu_data.py wrote (see there), or prepares a
cache from an image tree, with Python's OpenCV: for GPU hosts that have python3 + numpy + cv2
but no OpenCV for C++.

Usage: scripts/unpack_gpu_data.py packed PACKED_DIR CACHE_DIR
       scripts/unpack_gpu_data.py tree IMAGE_TREE CACHE_DIR [SIZE]
The tree mode decodes like `pneumo prepare` (IMREAD_GRAYSCALE, INTER_AREA squash to SIZE x SIZE,
files sorted by relative path, NORMAL = 0, PNEUMONIA = 1) and writes the same layout.
"""
import json
import pathlib
import sys
import time

import opencv_numpy

cv2, np = opencv_numpy.load("unpack_gpu_data.py", __doc__)

CLASSES = ["NORMAL", "PNEUMONIA"]
SPLITS = ["train", "val", "test"]
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff"}  # pneumo prepare's


def unpack(packed, cache):
    try:
        meta = json.loads((packed / "meta.json").read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"unpack_gpu_data: {packed} holds no pack's meta.json ({error})")
    splits = meta.get("splits") if isinstance(meta, dict) else None
    if not isinstance(splits, dict) or not splits:
        sys.exit(f"unpack_gpu_data: {packed / 'meta.json'} names no split")
    missing = [f"{split}_images.bin" for split in splits
               if not (packed / f"{split}_images.bin").is_file()]
    if missing:
        sys.exit(f"unpack_gpu_data: {packed} is not what pack_gpu_data.py wrote (no "
                 f"{', '.join(missing)}); a prepared cache needs no unpacking")
    if cache.resolve() == packed.resolve():
        sys.exit(f"unpack_gpu_data: CACHE_DIR {cache} is the pack itself; give another folder")
    cache.mkdir(parents=True, exist_ok=True)
    for split in meta["splits"]:
        blob = (packed / f"{split}_images.bin").read_bytes()
        offsets = np.load(packed / f"{split}_images.offsets.npy")
        images = np.stack([
            cv2.imdecode(np.frombuffer(blob[offsets[i]:offsets[i + 1]], np.uint8),
                         cv2.IMREAD_GRAYSCALE) for i in range(len(offsets) - 1)])
        np.save(cache / f"{split}_images.npy", images)
        for suffix in ("_labels.npy", "_files.txt"):
            (cache / f"{split}{suffix}").write_bytes((packed / f"{split}{suffix}").read_bytes())
        print(f"{split}: {images.shape}")
    (cache / "meta.json").write_text(json.dumps(meta, indent=2))


def prepare_tree(tree, cache, size):
    # A mistyped tree wrote a cache of no split over a good one (exit 0); `pneumo prepare`
    # refuses it, and so does this, before anything is written.
    if not any((tree / split / c).is_dir() for split in SPLITS for c in CLASSES):
        sys.exit(f"unpack_gpu_data: {tree} is not an image tree (no "
                 "{train,val,test}/{NORMAL,PNEUMONIA} folder)")
    cache.mkdir(parents=True, exist_ok=True)
    # Made now (a sweep tells caches apart by it: every tree prepared here has the same "hash").
    meta = {"format": "pneumo-cache", "format_version": 1, "size": size, "classes": CLASSES,
            "splits": {}, "source": {"path": str(tree), "hash": "python-prepared"},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "transport": "prepared by scripts/unpack_gpu_data.py (Python OpenCV)"}
    for split in SPLITS:
        # The files pneumo prepare reads: image names, hidden ones (.DS_Store, ._x.jpeg) left out.
        files = sorted(p.relative_to(tree).as_posix() for c in CLASSES
                       for p in (tree / split / c).glob("*")
                       if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in IMAGE_SUFFIXES)
        decoded = {f: cv2.imread(str(tree / f), cv2.IMREAD_GRAYSCALE) for f in files}
        for f in [f for f in files if decoded[f] is None]:  # skipped and named, as prepare does
            print(f"unpack_gpu_data: warning: skipped {f}: not decoded", file=sys.stderr)
            meta.setdefault("skipped", []).append({"file": f, "reason": "not decoded"})
        files = [f for f in files if decoded[f] is not None]
        if not files:
            continue
        images = np.stack([cv2.resize(decoded[f], (size, size), interpolation=cv2.INTER_AREA)
                           for f in files])
        labels = np.array([CLASSES.index(f.split("/")[1]) for f in files], np.uint8)
        np.save(cache / f"{split}_images.npy", images)
        np.save(cache / f"{split}_labels.npy", labels)
        (cache / f"{split}_files.txt").write_text("".join(f + "\n" for f in files))
        meta["splits"][split] = {
            "count": len(files),
            "per_class": {c: int((labels == i).sum()) for i, c in enumerate(CLASSES)},
            "images": f"{split}_images.npy", "labels": f"{split}_labels.npy",
            "files": f"{split}_files.txt"}
    if not meta["splits"]:
        sys.exit(f"unpack_gpu_data: {tree} holds no image pneumo reads; nothing was written")
    (cache / "meta.json").write_text(json.dumps(meta, indent=2))


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("packed", "tree"):
        sys.exit(__doc__)
    source, cache = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    if sys.argv[1] == "packed":
        unpack(source, cache)
        return
    size = sys.argv[4] if len(sys.argv) > 4 else "150"
    if not size.isdigit() or not 8 <= int(size) <= 1024:
        sys.exit(f"unpack_gpu_data: SIZE must be a whole number in [8, 1024] (pneumo prepare's "
                 f"range), got {size!r}")
    prepare_tree(source, cache, int(size))


if __name__ == "__main__":
    main()
