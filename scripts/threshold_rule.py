#!/usr/bin/env python3
"""Youden's J on validation against 0.5, judged on validation only (the rule is in
docs/experiments/2026-12-02-threshold-rule/README.md, written before the runs).

For each run directory (holding model.safetensors): `pneumo evaluate --split val-carved` writes
the run's own validation scores (--scores) and the stress variants at the stored (Youden)
threshold, then again at 0.5. From the scores, many seeded stratified halvings: Youden's threshold
tuned on one half (0.5 kept where pneumo train would keep it: see youden_threshold), the other
half's accuracy at it against at 0.5; with --shares, also that
accuracy reweighted to other pneumonia shares (share * sensitivity + (1 - share) * specificity),
for a split whose class mix differs from validation's. A model whose stored threshold
is not Youden's (its threshold_rule says 0.5: --threshold-rule 0.5, or train's fall-back) is
listed, marked "left out", and kept out of both means. Writes results.md / results.csv in --out.
Never reads the test split.

    scripts/threshold_rule.py --pneumo build/pneumo --data CACHE --out DIR RUN_DIR...
"""
import argparse
import csv
import fractions
import json
import math
import os
import random
import subprocess
import sys


# pneumo train keeps 0.5 when validation holds fewer images of a class than this
# (kMinThresholdClassImages, src/cli/commands/commands.hpp).
MIN_CLASS_IMAGES = 20


def youden_threshold(logits, labels, min_class_images=MIN_CLASS_IMAGES):
    """The cut maximising sensitivity + specificity - 1, on the logit scale, as pneumo's
    choose_threshold_youden picks it and train stores it (pneumo then stores the shortest decimal
    probability within the middle half of the gap around it: the same decisions on these
    images): the midpoint between two adjacent distinct scores (1 beyond the extremes), J
    compared exactly (TP * N - FP * P), ties to the cut closest to logit 0 (then the higher one).
    Logit 0 (0.5), as pneumo keeps, when a class is absent or has fewer than `min_class_images`
    images, when no cut beats chance (J <= 0 at best: the cut would call every image one class),
    or when no probability threshold separates the scores on either side of the cut (a saturated
    model: probabilities round to 0 or 1 there; see separable)."""
    positives = sum(labels)
    negatives = len(labels) - positives
    if min(positives, negatives) < max(1, min_class_images):
        return 0.0
    pairs = sorted(zip(logits, labels))
    best_score, best_cut = None, 0.0
    # Everything above the cut is called positive; walk the cut up through the sorted scores.
    true_pos, false_pos = positives, negatives
    for i in range(len(pairs) + 1):
        if i == 0 or i == len(pairs) or pairs[i - 1][0] != pairs[i][0]:
            score = true_pos * negatives - false_pos * positives  # J * P * N, an exact integer
            if i == 0:
                cut = pairs[0][0] - 1.0
            elif i == len(pairs):
                cut = pairs[-1][0] + 1.0
            else:
                cut = 0.5 * (pairs[i - 1][0] + pairs[i][0])
            if (best_score is None or score > best_score or
                    (score == best_score and (abs(cut) < abs(best_cut) or
                                              (abs(cut) == abs(best_cut) and cut > best_cut)))):
                best_score, best_cut = score, cut
                # The lowest score called positive and the highest called negative.
                above = pairs[i][0] if i < len(pairs) else cut + 1.0
                below = pairs[i - 1][0] if i > 0 else cut - 1.0
        if i < len(pairs):
            if pairs[i][1]:
                true_pos -= 1
            else:
                false_pos -= 1
    if best_score <= 0:
        return 0.0  # no cut beats chance
    if not separable(best_cut, above, below):
        return 0.0  # saturated: no probability threshold stands for this cut
    return best_cut  # a logit


def sigmoid(logit):
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    e = math.exp(logit)
    return e / (1.0 + e)


def logit_of(probability):
    if probability == 0.5:
        return 0.0
    if probability >= 1.0:
        return math.inf
    if probability <= 0.0:
        return -math.inf
    return math.log(probability / (1.0 - probability))


def separable(logit_cut, above, below):
    """Whether a probability threshold separates `above` (called positive) from `below` under
    pneumo's rule (z > logit_of(t)), found as pneumo's separating_threshold finds it: the
    sigmoid of the cut, nudged one double at a time, at most 64 times. Not separable: the cut
    lies where probabilities round to 0 or 1 (pneumo then keeps 0.5, 'saturated')."""
    threshold = sigmoid(logit_cut)
    for _ in range(64):
        if not above > logit_of(threshold):
            threshold = math.nextafter(threshold, 0.0)
        elif below > logit_of(threshold):
            threshold = math.nextafter(threshold, 1.0)
        else:
            break
    return above > logit_of(threshold) and not below > logit_of(threshold)


# Accuracies are exact fractions (the shares too, as typed): two cuts that call the same images
# tie exactly, where floating point left a gain of +-1e-16 that counted as "Youden worse".
def accuracy(logits, labels, logit_cut):
    return fractions.Fraction(sum((z > logit_cut) == bool(y) for z, y in zip(logits, labels)),
                              len(labels))


def accuracy_at_share(logits, labels, logit_cut, share):
    """Accuracy on a split with the same images per class but `share` (a Fraction) of them
    pneumonia."""
    positives = [z for z, y in zip(logits, labels) if y]
    negatives = [z for z, y in zip(logits, labels) if not y]
    sensitivity = fractions.Fraction(sum(z > logit_cut for z in positives), len(positives))
    specificity = fractions.Fraction(sum(z <= logit_cut for z in negatives), len(negatives))
    return share * sensitivity + (1 - share) * specificity


def parse_shares(text):
    try:
        shares = [fractions.Fraction(v.strip()) for v in text.split(",")] if text else []
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"a share must be a number in [0, 1]: {error}")
    for v in shares:
        if not 0 <= v <= 1:
            raise argparse.ArgumentTypeError(f"a share must be in [0, 1], got {float(v):g}")
    return shares


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def read_scores(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [float(r["logit"]) for r in rows], [int(r["label"]) for r in rows]


def evaluate(pneumo, data, model, threshold, scores, json_path):
    command = [pneumo, "evaluate", "--model", model, "--data", data, "--split", "val-carved",
               "--stress", "--device", "cpu", "--json", json_path]
    if threshold is not None:
        command += ["--threshold", str(threshold)]
    if scores:
        command += ["--scores", scores]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    with open(json_path) as f:
        return json.load(f)


# Files that say a folder is another tool's: a sweep's (experiments.py), a run's, a cache's. Their
# results.md / results.csv are not this script's to replace.
OTHER_FOLDERS = {"plan.json": "a sweep folder (experiments.py)", "config.json": "a run folder",
                 "meta.json": "a prepared cache"}


def check_arguments(parser, args):
    """Refuses, before anything runs, what would fail later or overwrite another tool's files."""
    if not (os.path.isfile(args.pneumo) and os.access(args.pneumo, os.X_OK)):
        parser.error(f"--pneumo {args.pneumo}: no executable file there")
    for name, what in OTHER_FOLDERS.items():
        if os.path.isfile(os.path.join(args.out, name)):
            parser.error(f"--out {args.out} is {what} (it holds {name}); its results.md and "
                         "results.csv are not this script's to replace: give a folder of its own")
    seen = {}
    for run in args.runs:
        if not os.path.isfile(os.path.join(run, "model.safetensors")):
            parser.error(f"{run}: no model.safetensors (a run directory is expected)")
        real = os.path.realpath(run)
        if real in seen:
            parser.error(f"{run} is given twice ({seen[real]}): each run counts once in the means")
        seen[real] = run
    if len(args.runs) > 1:
        common = os.path.commonpath(list(seen))
        tags = {}
        for real, run in seen.items():
            tag = os.path.relpath(real, common).replace("/", "_")
            if tag in tags:
                parser.error(f"{run} and {tags[tag]} would write the same files ({tag}_*) in --out")
            tags[tag] = run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pneumo", required=True)
    parser.add_argument("--data", required=True, help="the cache the runs were trained on")
    parser.add_argument("--out", required=True)
    parser.add_argument("--halvings", type=positive_int, default=200,
                        help="stratified halvings per run, each half tuned on in turn (at least 1)")
    parser.add_argument("--shares", type=parse_shares, default=[],
                        help="pneumonia shares to reweight the held-out halves to, e.g. 0.5,0.625")
    parser.add_argument("--min-class-images", type=positive_int, default=MIN_CLASS_IMAGES,
                        help="a tuning half with fewer images of a class keeps 0.5, as pneumo "
                        f"train does with such a validation (default {MIN_CLASS_IMAGES})")
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    check_arguments(parser, args)
    os.makedirs(args.out, exist_ok=True)

    rows = []
    common = os.path.commonpath([os.path.realpath(run) for run in args.runs])
    for run in args.runs:
        name = os.path.relpath(os.path.realpath(run), common) if len(args.runs) > 1 else run
        tag = name.replace("/", "_")
        model = os.path.join(run, "model.safetensors")
        scores = os.path.join(args.out, f"{tag}_val_scores.csv")
        youden = evaluate(args.pneumo, args.data, model, None, scores,
                          os.path.join(args.out, f"{tag}_youden.json"))
        rule = youden.get("threshold_rule", "")
        if not rule.startswith("Youden's J"):  # the stored threshold is 0.5: nothing to judge
            rows.append({"run": name, "val_images": None,
                         "stored_threshold": youden["tuned_threshold"]["threshold"],
                         "threshold_rule": rule, "left_out": "stored threshold is not Youden's"})
            print(f"{name}: left out, its stored threshold is not Youden's ({rule})", flush=True)
            continue
        half = evaluate(args.pneumo, args.data, model, 0.5, None,
                        os.path.join(args.out, f"{tag}_half.json"))
        logits, labels = read_scores(scores)

        generator = random.Random(12345)
        positive = [i for i, y in enumerate(labels) if y]
        negative = [i for i, y in enumerate(labels) if not y]
        gains = []
        share_gains = {share: [] for share in args.shares}
        for _ in range(args.halvings):
            generator.shuffle(positive)
            generator.shuffle(negative)
            a = positive[: len(positive) // 2] + negative[: len(negative) // 2]
            b = positive[len(positive) // 2:] + negative[len(negative) // 2:]
            for tune, score in ((a, b), (b, a)):
                cut = youden_threshold([logits[i] for i in tune], [labels[i] for i in tune],
                                       args.min_class_images)
                held_z, held_y = [logits[i] for i in score], [labels[i] for i in score]
                gains.append(accuracy(held_z, held_y, cut) - accuracy(held_z, held_y, 0.0))
                for share, kept in share_gains.items():
                    kept.append(accuracy_at_share(held_z, held_y, cut, share) -
                                accuracy_at_share(held_z, held_y, 0.0, share))

        stress_youden = youden["stress"]["mean_accuracy"]
        stress_half = half["stress"]["mean_accuracy"]
        rows.append({
            "run": name,
            "val_images": len(labels),
            "stored_threshold": youden["tuned_threshold"]["threshold"],
            "threshold_rule": rule,
            "left_out": "",
            "halves_gain_mean": float(sum(gains) / len(gains)),
            "halves_youden_better": sum(g > 0 for g in gains) / len(gains),
            "halves_youden_worse": sum(g < 0 for g in gains) / len(gains),
            "stress_mean_accuracy_youden": stress_youden,
            "stress_mean_accuracy_0.5": stress_half,
            "stress_gain": stress_youden - stress_half,
            "stress_worst_accuracy_youden": youden["stress"]["worst_accuracy"],
            "stress_worst_accuracy_0.5": half["stress"]["worst_accuracy"],
        })
        for share, kept in share_gains.items():
            rows[-1][f"halves_gain_share_{float(share):g}"] = float(sum(kept) / len(kept))
            rows[-1][f"halves_youden_worse_share_{float(share):g}"] = (sum(g < 0 for g in kept) /
                                                                       len(kept))
        print(f"{name}: halves gain {rows[-1]['halves_gain_mean']:+.4f}, "
              f"stress gain {rows[-1]['stress_gain']:+.4f}", flush=True)

    fields = list(dict.fromkeys(key for r in rows for key in r))
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    judged = [r for r in rows if not r["left_out"]]
    left_out = [r["run"] for r in rows if r["left_out"]]
    if not judged:
        sys.exit("threshold_rule: no model stores Youden's threshold (all left out: "
                 f"{', '.join(left_out)}); nothing to judge")
    halves = sum(r["halves_gain_mean"] for r in judged) / len(judged)
    stress = sum(r["stress_gain"] for r in judged) / len(judged)
    verdict = "youden" if halves > 0 and stress > 0 else "0.5"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("| run | stored threshold | held-out half: accuracy gain of Youden over 0.5 "
                "(mean) | halvings Youden better / worse | stress mean accuracy, Youden | "
                "at 0.5 | gain |\n|---|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            if r["left_out"]:
                f.write(f"| {r['run']} | {r['stored_threshold']:.4f} | left out: {r['threshold_rule']} "
                        "| | | | |\n")
                continue
            f.write(f"| {r['run']} | {r['stored_threshold']:.4f} | {r['halves_gain_mean']:+.4f} | "
                    f"{r['halves_youden_better']:.2f} / {r['halves_youden_worse']:.2f} | "
                    f"{r['stress_mean_accuracy_youden']:.4f} | "
                    f"{r['stress_mean_accuracy_0.5']:.4f} | {r['stress_gain']:+.4f} |\n")
        f.write(f"\nMean over the {len(judged)} runs that store Youden's threshold: held-out halves "
                f"{halves:+.4f}, stress {stress:+.4f} ({args.halvings} halvings each way per run). "
                f"By the rule: **{verdict}**.\n")
        if left_out:
            f.write(f"\nLeft out (stored threshold not Youden's): {', '.join(left_out)}.\n")
        if args.shares:
            f.write("\nHeld-out halves reweighted to other pneumonia shares (share x sensitivity "
                    "+ (1 - share) x specificity), accuracy gain of Youden over 0.5, mean over the "
                    "halvings (the share of halvings where Youden was worse):\n\n| run | "
                    + " | ".join(f"share {float(v):g}" for v in args.shares) + " |\n|---|"
                    + "---:|" * len(args.shares) + "\n")
            for r in judged:
                f.write(f"| {r['run']} | " + " | ".join(
                    f"{r[f'halves_gain_share_{v:g}']:+.4f} ({r[f'halves_youden_worse_share_{v:g}']:.2f})"
                    for v in map(float, args.shares)) + " |\n")
            f.write("| mean | " + " | ".join(
                f"{sum(r[f'halves_gain_share_{v:g}'] for r in judged) / len(judged):+.4f}"
                for v in map(float, args.shares)) + " |\n")
    print(f"held-out halves {halves:+.4f}, stress {stress:+.4f} over {len(judged)} runs: {verdict}"
          + (f" (left out: {', '.join(left_out)})" if left_out else ""))


if __name__ == "__main__":
    main()
