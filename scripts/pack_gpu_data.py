#!/usr/bin/env python3
"""Packs a prepared pneumo cache small enough to travel to a GPU host (whose transfer limit is
64 MiB) and to be rebuilt there by scripts/unpack_gpu_data.py without OpenCV for C++.

The train images travel as JPEG quality 95 (about 39 MB instead of 117 MB raw; on the full
dataset at 150x150 the decoded pixels differ from the cache by 0.77 grey levels on average, at
most 10). Every other split (val, test) travels losslessly as PNG, so evaluation sees exactly the
cached pixels. Labels, file lists and meta.json are copied as they are, and a note in meta.json
records the re-encoding.

When OUT_DIR lies in the repository (.xfer/full), the end adds up what a device call carrying
it and .deps moves (the files git does not ignore, .deps, OUT_DIR's top folder) and fails when
that passes the limit, before a call is spent finding out.

Usage: scripts/pack_gpu_data.py CACHE_DIR OUT_DIR   (needs python3 with numpy and cv2)
"""
import json
import pathlib
import shutil
import subprocess
import sys

import opencv_numpy

cv2, np = opencv_numpy.load("pack_gpu_data.py", __doc__)

TRAIN_JPEG_QUALITY = 95


def pack_images(images, path, lossless):
    """Writes images (N, S, S) uint8 as one blob of encoded files plus an offsets array."""
    blobs = []
    for image in images:
        if lossless:
            ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        else:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, TRAIN_JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"encoding failed for {path}")
        blobs.append(data.tobytes())
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    path.with_suffix(".bin").write_bytes(b"".join(blobs))
    np.save(path.with_suffix(".offsets.npy"), offsets)
    return offsets[-1]


TRANSFER_LIMIT = 64 << 20  # what the device tool carries, in all


def read_cache_meta(cache):
    """The cache's meta.json, or a clear exit: an image tree or a damaged cache is no cache."""
    try:
        meta = json.loads((cache / "meta.json").read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"pack_gpu_data: {cache} is no prepared pneumo cache ({error}); give the "
                 "folder `pneumo prepare` wrote (an image tree is prepared first)")
    if not isinstance(meta, dict) or meta.get("format") != "pneumo-cache" or \
            not isinstance(meta.get("splits"), dict):
        sys.exit(f"pack_gpu_data: {cache / 'meta.json'} is not a pneumo cache's")
    return meta


def folder_bytes(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def carried_bytes(root, carried):
    """What a device call moves: the checkout's files that git does not ignore, and the carried
    folders (paths under root) whole."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout
    total = 0
    for name in listed.split(b"\0"):
        path = root / name.decode(errors="surrogateescape")
        if name and path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total + sum(folder_bytes(folder) for folder in carried if folder.is_dir())


def check_carry(out):
    """Fails when a call carrying OUT_DIR's top folder and .deps would pass the transfer limit."""
    root = pathlib.Path(__file__).resolve().parent.parent
    real_out = out.resolve()
    if root not in real_out.parents:
        return  # not carried from the repository: nothing to add up here
    top = root / real_out.relative_to(root).parts[0]
    deps = root / ".deps"
    try:
        total = carried_bytes(root, [top, deps])
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"pack_gpu_data: warning: could not add up what a call carries ({error})",
              file=sys.stderr)
        return
    names = f"the checkout, {top.name}" + (" and .deps" if deps.is_dir() else " (no .deps yet)")
    print(f"a device call carrying {top.name} and .deps moves {total / 2**20:.1f} MiB "
          f"({names}) of the {TRANSFER_LIMIT >> 20} MiB it allows")
    if total > TRANSFER_LIMIT:
        sys.exit(f"pack_gpu_data: {total / 2**20:.1f} MiB is more than a device call carries "
                 f"({TRANSFER_LIMIT >> 20} MiB): pack a smaller cache or carry less")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cache, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    meta = read_cache_meta(cache)
    real_cache, real_out = cache.resolve(), out.resolve()
    if real_out == real_cache or real_cache in real_out.parents:
        sys.exit(f"pack_gpu_data: OUT_DIR {out} lies in the cache {cache}; give a folder of its own")
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for split in meta["splits"]:
        images = np.load(cache / f"{split}_images.npy")
        lossless = split != "train"
        size = pack_images(images, out / f"{split}_images", lossless)
        total += size
        print(f"{split}: {len(images)} images -> {size / 1e6:.1f} MB "
              f"({'PNG, lossless' if lossless else f'JPEG q{TRAIN_JPEG_QUALITY}'})")
        for suffix in ("_labels.npy", "_files.txt"):
            shutil.copy(cache / f"{split}{suffix}", out / f"{split}{suffix}")
    meta["transport"] = (f"train images re-encoded as JPEG q{TRAIN_JPEG_QUALITY} for transfer; "
                         "other splits lossless (PNG)")
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    if total > TRANSFER_LIMIT:
        print(f"pack_gpu_data: warning: {total / 2**20:.1f} MiB of images, more than the "
              f"{TRANSFER_LIMIT >> 20} MiB a device call carries", file=sys.stderr)
    check_carry(out)


if __name__ == "__main__":
    main()
