#!/usr/bin/env python3
"""Markdown table of several `pneumo train` runs of one recipe (say, one per --seed): each run's
validation and test metrics and, over the runs, mean and sample standard deviation, so a reported
number comes with its run-to-run spread.

    scripts/summarize_runs.py RUN_DIR [RUN_DIR ...] > runs.md

Each RUN_DIR holds config.json and metrics_val.json (written by `pneumo train`) and, when the
test split was evaluated, test_metrics.json (`pneumo evaluate --split test --json`; the GPU
check's name) or test.json (scripts/experiments.py --test's). A run missing a file (or whose file
is not a JSON object) is listed with a note and left out of the statistics that need that file; a
RUN_DIR that does not exist, holds no file a run makes (metrics_val.json, a test file,
history.csv, model.safetensors: a sweep's configuration folder given instead of its seed-S
folders), or is given twice, is an error.
"""
import json
import math
import os
import sys

# config.json keys that may differ between runs of one recipe: where a run wrote, read its data
# and resumed from, how many threads and which tuning cache it used, and its seed.
FREE_KEYS = {"seed", "out", "data", "resume", "config", "threads", "tuning-cache"}
# Flags added after runs were recorded without them: a missing key reads as the value those runs
# had (--val-seed -1: the carve followed --seed).
ADDED_LATER = {"val-seed": -1}


def recorded(settings, key):
    """A config.json's value for key, or the value runs had before the flag was added."""
    return settings.get(key, ADDED_LATER.get(key))


COLUMNS = [  # (header, source file key, path inside the JSON)
    ("val acc", "val", ("default_threshold", "accuracy")),
    ("val AUC", "val", ("roc_auc",)),
    ("test acc", "test", ("default_threshold", "accuracy")),
    ("test sens", "test", ("default_threshold", "sensitivity")),
    ("test spec", "test", ("default_threshold", "specificity")),
    ("test acc (Youden thr.)", "test", ("tuned_threshold", "accuracy")),
    ("Youden threshold", "test", ("tuned_threshold", "threshold")),
    ("test AUC", "test", ("roc_auc",)),
]
# `evaluate --json` stores whatever threshold it applied under "tuned_threshold" (the model's
# Youden cut, train's fallback 0.5, a --threshold typed on the command line, an ensemble's 0.5):
# only a Youden cut belongs in these columns.
YOUDEN_COLUMNS = {"test acc (Youden thr.)", "Youden threshold"}


def load(path):
    """The file's JSON object; None when it is missing, unreadable or holds no object."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def dig(obj, keys):
    """The number at obj[k1][k2]...; None when missing, or not a finite number (true is not 1)."""
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    is_number = isinstance(obj, (int, float)) and not isinstance(obj, bool)
    return obj if is_number and math.isfinite(obj) else None


def mean_sd(values):
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd


def main(run_dirs):
    if not run_dirs:
        sys.exit(__doc__)
    missing = [run for run in run_dirs if not os.path.isdir(run)]
    if missing:
        sys.exit(f"summarize_runs: no such run folder: {', '.join(missing)}")
    seen = {}
    for run in run_dirs:
        real = os.path.realpath(run)
        if real in seen:
            sys.exit(f"summarize_runs: {run} is the same folder as {seen[real]}: a run counts once")
        seen[real] = run
    # What a training or its evaluation leaves (a sweep's configuration folder holds a config.json
    # too, experiments.py's, but none of these).
    made_by_a_run = ("metrics_val.json", "test_metrics.json", "test.json", "history.csv",
                     "model.safetensors")
    empty = [run for run in run_dirs
             if not any(os.path.exists(os.path.join(run, name)) for name in made_by_a_run)]
    if empty:
        sys.exit(f"summarize_runs: not a run folder (none of {', '.join(made_by_a_run)}): "
                 f"{', '.join(empty)}")
    rows, notes, configs = [], [], []
    for run in run_dirs:
        test_file = "test_metrics.json"
        if not os.path.exists(os.path.join(run, test_file)) and \
                os.path.exists(os.path.join(run, "test.json")):
            test_file = "test.json"
        files = {"val": load(os.path.join(run, "metrics_val.json")),
                 "test": load(os.path.join(run, test_file))}
        config = load(os.path.join(run, "config.json"))
        if config is None:  # its recipe and seed cannot be compared with the others'
            notes.append(f"- {run}: its config.json cannot be read (missing or damaged): its "
                         "recipe and seed are not checked against the other runs'")
            config = {}
        missing = [name for name, data in files.items() if data is None]
        if missing:
            notes.append(f"- {run}: no {' or '.join(missing)} metrics")
        rule = (files["test"] or {}).get("threshold_rule") or ""
        youden = isinstance(rule, str) and rule.startswith("Youden's J")
        if files["test"] is not None and not youden:
            notes.append(f"- {run}: test scored at threshold rule '{rule}', not a Youden cut: "
                         "left out of the Youden columns" if rule else
                         f"- {run}: its test metrics record no threshold rule (evaluate before "
                         "2026-12-03): left out of the Youden columns")
        rows.append((run, config.get("seed", "?"),
                     [None if header in YOUDEN_COLUMNS and not youden else dig(files[src], keys)
                      for header, src, keys in COLUMNS]))
        configs.append((run, config))
    # One recipe's spread is over seeds: runs of other settings, or one seed twice, would be
    # averaged as if they were (the statistics are still printed, under a note that says so).
    # Compared with the first run whose config.json could be read (an unreadable one: said above).
    readable = [(run, config) for run, config in configs if config]
    first_run, first = readable[0] if readable else (None, {})
    for run, config in readable[1:]:
        differing = sorted(key for key in set(first) | set(config)
                           if key not in FREE_KEYS and recorded(first, key) != recorded(config, key))
        if differing:
            notes.append(f"- {run}: not the recipe of {first_run}: its config.json differs in "
                         f"{', '.join(differing)}; the mean and sd mix two recipes")
    # As JSON text: a damaged config.json's seed may be a list (unhashable: a TypeError traceback).
    seeds = [json.dumps(config.get("seed")) for _, config in configs if "seed" in config]
    for seed in sorted({s for s in seeds if seeds.count(s) > 1}):
        notes.append(f"- seed {seed} is given by {seeds.count(seed)} runs: the sd is not a "
                     "spread over seeds")

    print("| run | seed | " + " | ".join(h for h, _, _ in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for run, seed, values in rows:
        cells = ["" if v is None else f"{v:.4g}" if header == "Youden threshold" else f"{v:.3f}"
                 for (header, _, _), v in zip(COLUMNS, values)]
        print(f"| {os.path.basename(os.path.normpath(run))} | {seed} | " + " | ".join(cells) + " |")
    stats = []
    for i in range(len(COLUMNS)):
        values = [v[i] for _, _, v in rows if v[i] is not None]
        stats.append(mean_sd(values) if values else None)
    counts = [sum(v[i] is not None for _, _, v in rows) for i in range(len(COLUMNS))]
    cells = []
    for (header, _, _), s in zip(COLUMNS, stats):
        form = ".4g" if header == "Youden threshold" else ".3f"
        cells.append("" if s is None else f"{s[0]:{form}}" if math.isnan(s[1])
                     else f"{s[0]:{form}} ± {s[1]:{form}}")
    print("| mean ± sd | | " + " | ".join(cells) + " |")
    print()
    print(f"{len(rows)} runs; sd is the sample standard deviation over the runs that have the value "
          f"(n = {min(counts)} to {max(counts)}).")
    if notes:
        print()
        print("\n".join(notes))


if __name__ == "__main__":
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main(sys.argv[1:])
