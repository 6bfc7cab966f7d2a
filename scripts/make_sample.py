#!/usr/bin/env python3
"""Builds data/sample/: a small, deterministic subset of the chest X-ray dataset for the quick
start and the tests, stored as 150x150 8-bit grayscale JPEGs (quality 90) in the dataset's own
{train,val,test}/{NORMAL,PNEUMONIA}/<original name> layout.

Selection (reproducible: no randomness, only hashing of file names):
  * val:   all 16 images of the official val split (8 NORMAL + 8 PNEUMONIA);
  * test:  per class, the official test images ordered by sha256("pneumo-sample-v1/" + name),
           at most one image per patient, the first 30;
  * train: the same rule over official train, the first 60 per class, leaving out every
           patient who appears in the official val split or in the sample's test images,
           so no patient is on two sides of the sample.
Patients come from the file names exactly as pneumo's patient_id() parses them
(personNNN_..., IM-NNNN-..., NORMAL2-IM-NNNN-...).

Only a sample this script wrote is replaced (every file under --out's split folders listed in its
manifest.csv), and only once every image is written: the new one is made in a hidden folder
inside --out and moved in at the end.

Pixels: cv2.imread(IMREAD_GRAYSCALE) of the source copy, cv2.resize(150x150, INTER_AREA),
cv2.imencode('.jpeg', quality 90). Written with Debian's python3-opencv 4.6 (`apt-get install
python3-opencv`, then run with /usr/bin/python3); another OpenCV build may encode different
bytes (same pixels within JPEG rounding) but selects the same files.

Usage: /usr/bin/python3 scripts/make_sample.py [--source DIR] [--out data/sample]

--out's {train,val,test} folders are replaced, so an --out that is --source, holds it or lies
inside it is refused (exit 2) before anything is read or written.
"""
import argparse
import csv
import hashlib
import os
import re
import shutil
import sys
import tempfile

SPLITS = ("train", "val", "test")
CLASSES = ("NORMAL", "PNEUMONIA")
PER_CLASS = {"train": 60, "test": 30}
SIZE = 150
QUALITY = 90
SALT = "pneumo-sample-v1/"


def patient_id(name):
    """Same rules as pneumo::patient_id (src/data/sampling.cpp)."""
    stem = os.path.splitext(os.path.basename(name))[0]
    m = re.match(r"^(person\d+)_", stem)
    if m:
        return m.group(1)
    m = re.match(r"^(NORMAL2-IM-\d+)-", stem) or re.match(r"^(IM-\d+)-", stem)
    if m:
        return m.group(1)
    return stem


def order_key(name):
    return hashlib.sha256((SALT + name).encode()).hexdigest()


def listing(source, split, cls):
    folder = os.path.join(source, split, cls)
    return sorted(f for f in os.listdir(folder)
                  if not f.startswith(".") and f.lower().endswith((".jpeg", ".jpg", ".png")))


def choose(names, count, excluded_patients):
    chosen, seen = [], set(excluded_patients)
    for name in sorted(names, key=order_key):
        p = patient_id(name)
        if p in seen:
            continue
        seen.add(p)
        chosen.append(name)
        if len(chosen) == count:
            break
    if len(chosen) < count:
        sys.exit(f"only {len(chosen)} eligible images, {count} wanted")
    return sorted(chosen)


def stray_files(out):
    """Files under out's split folders that its manifest.csv does not list: not the sample this
    script wrote, so not its to replace."""
    listed = set()
    manifest = os.path.join(out, "manifest.csv")
    if os.path.isfile(manifest):
        with open(manifest, newline="") as f:
            for row in csv.DictReader(f):
                listed.add(os.path.join(row.get("split") or "", row.get("class") or "",
                                        row.get("file") or ""))
    stray = []
    for split in SPLITS:
        for folder, _, files in os.walk(os.path.join(out, split)):
            for name in files:
                relative = os.path.relpath(os.path.join(folder, name), out)
                if relative not in listed:
                    stray.append(relative)
    return sorted(stray)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=os.path.join(here, "..", "..", "shared", "data",
                                                         "chest_xray"))
    parser.add_argument("--out", default=os.path.join(here, "..", "data", "sample"))
    args = parser.parse_args()
    source = os.path.abspath(args.source)
    if not os.path.isdir(os.path.join(source, "train", "NORMAL")):
        sys.exit(f"{source} is not the dataset tree (no train/NORMAL); pass --source")
    out = os.path.abspath(args.out)
    # out/{train,val,test} are removed before the images are read: an --out that is the source,
    # or holds it, or lies inside it would delete the dataset (links resolved).
    real_source, real_out = os.path.realpath(source), os.path.realpath(out)
    common = os.path.commonpath([real_source, real_out])
    if common in (real_source, real_out):
        relation = ("is the same folder as" if real_out == real_source else
                    "holds" if common == real_out else "lies inside")
        print(f"make_sample: --out {out} {relation} --source {source}: the sample must be "
              "written outside the dataset (its train, val and test folders are replaced first); "
              "give another --out", file=sys.stderr)
        sys.exit(2)
    # Only the sample this script wrote is replaced: a file its manifest does not list (a user's
    # notes, another dataset in that folder) stops it before anything is touched.
    stray = stray_files(out)
    if stray:
        print(f"make_sample: {out} holds files its manifest.csv does not list ("
              f"{', '.join(stray[:3])}{', ...' if len(stray) > 3 else ''}): it is not a sample "
              "this script wrote, and its train, val and test folders would be replaced; give "
              "another --out", file=sys.stderr)
        sys.exit(2)
    try:
        import cv2
    except ImportError:
        sys.exit("make_sample.py needs OpenCV for Python: apt-get install python3-opencv, "
                 "then run it with /usr/bin/python3")

    kinds = {}
    manifest_path = os.path.join(source, "manifest.csv")
    if os.path.exists(manifest_path):
        with open(manifest_path, newline="") as f:
            for row in csv.DictReader(f):
                kinds[(row["split"], row["class"], row["file"])] = row["source_kind"]

    selection = {}
    for cls in CLASSES:
        selection[("val", cls)] = listing(source, "val", cls)
    val_patients = {patient_id(n) for cls in CLASSES for n in selection[("val", cls)]}
    for cls in CLASSES:
        selection[("test", cls)] = choose(listing(source, "test", cls), PER_CLASS["test"], set())
    test_patients = {patient_id(n) for cls in CLASSES for n in selection[("test", cls)]}
    for cls in CLASSES:
        selection[("train", cls)] = choose(listing(source, "train", cls), PER_CLASS["train"],
                                           val_patients | test_patients)

    # Written into a staging folder first and moved in whole at the end: an image that cannot be
    # read leaves the sample that was there as it was (it was half replaced).
    os.makedirs(out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".make_sample-", dir=out)
    try:
        rows = []
        for split in SPLITS:
            for cls in CLASSES:
                os.makedirs(os.path.join(staging, split, cls), exist_ok=True)
                for name in selection[(split, cls)]:
                    image = cv2.imread(os.path.join(source, split, cls, name),
                                       cv2.IMREAD_GRAYSCALE)
                    if image is None:
                        sys.exit(f"cannot read {split}/{cls}/{name}; {out} is left as it was")
                    small = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
                    ok, encoded = cv2.imencode(".jpeg", small,
                                               [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
                    assert ok
                    with open(os.path.join(staging, split, cls, name), "wb") as f:
                        f.write(encoded.tobytes())
                    rows.append((split, cls, name, patient_id(name),
                                 kinds.get((split, cls, name), "")))
        with open(os.path.join(staging, "manifest.csv"), "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(("split", "class", "file", "patient", "source_kind"))
            writer.writerows(rows)
        for split in SPLITS:
            shutil.rmtree(os.path.join(out, split), ignore_errors=True)
            os.replace(os.path.join(staging, split), os.path.join(out, split))
        os.replace(os.path.join(staging, "manifest.csv"), os.path.join(out, "manifest.csv"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {len(rows)} images to {out} with OpenCV {cv2.__version__}")


if __name__ == "__main__":
    main()
