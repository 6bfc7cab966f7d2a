#!/usr/bin/env python3
"""The image tree of the wide-holdout check (README.md beside this file): the dataset's train
split without a held-out set of wide, uncropped images and every other image of their patients;
the held-out images become the tree's `test` split. The dataset's own test split is not used, not
even linked. Symbolic links only; the dataset is not touched.

  make_tree.py DATASET OUT [--seed 1]

Patients are grouped by the file-name rule of src/data/sampling.cpp (patient_id), restated here
for this one check: `personN_...`, `NORMAL2-IM-N-...`, `IM-N-...`, else the whole name.
"""
import argparse
import os
import random
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../scripts"))
from validation_by_origin import image_size  # noqa: E402  (the header reader, tested)

WIDE = 1.35  # width/height at or above which an uncropped image counts as wide


def patient_id(name):
    stem = os.path.splitext(os.path.basename(name))[0]
    for pattern in (r"(person\d+)_", r"(NORMAL2-IM-\d+)-", r"(IM-\d+)-"):
        m = re.match(pattern, stem)
        if m:
            return m.group(1)
    return stem


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if os.path.exists(args.out):
        sys.exit(f"make_tree.py: {args.out} exists; give a new folder")
    train = {}  # relative path -> (label, width/height or None for 224 x 224)
    for label in ("NORMAL", "PNEUMONIA"):
        folder = os.path.join(args.dataset, "train", label)
        for name in sorted(os.listdir(folder)):
            if not name.lower().endswith((".jpeg", ".jpg", ".png")):
                continue
            w, h = image_size(os.path.join(folder, name))
            train[f"train/{label}/{name}"] = (label, None if (w, h) == (224, 224) else w / h)
    wide = {label: [p for p, (l, r) in train.items() if l == label and r is not None and r >= WIDE]
            for label in ("NORMAL", "PNEUMONIA")}
    held = list(wide["NORMAL"])  # every wide NORMAL
    rng = random.Random(args.seed)
    held += rng.sample(wide["PNEUMONIA"], len(wide["NORMAL"]))  # as many wide PNEUMONIA
    held_patients = {patient_id(p) for p in held}
    dropped = [p for p in train if patient_id(p) in held_patients and p not in held]
    kept = [p for p in train if patient_id(p) not in held_patients]

    def link(relative, as_relative):
        target = os.path.join(args.out, as_relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(args.dataset, relative)), target)

    for p in kept:
        link(p, p)
    for p in held:
        link(p, p.replace("train/", "test/", 1))
    for label in ("NORMAL", "PNEUMONIA"):  # the official val split, as in the dataset
        folder = os.path.join(args.dataset, "val", label)
        for name in sorted(os.listdir(folder)):
            link(f"val/{label}/{name}", f"val/{label}/{name}")
    count = lambda paths, label: sum(1 for p in paths if f"/{label}/" in p)
    print(f"held out (the tree's test split): {count(held, 'NORMAL')} NORMAL, "
          f"{count(held, 'PNEUMONIA')} PNEUMONIA, {len(held_patients)} patients; their other "
          f"images left out: {len(dropped)}; train keeps {count(kept, 'NORMAL')} NORMAL, "
          f"{count(kept, 'PNEUMONIA')} PNEUMONIA")


if __name__ == "__main__":
    main()
