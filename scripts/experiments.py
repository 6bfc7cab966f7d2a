#!/usr/bin/env python3
"""The generalisation experiment runner: trains every configuration of a plan for every seed,
scores each run on its own validation split and on the stress variants of it, writes one table,
picks a configuration by the rule the plan states (written before any run), and reads the test
split only when asked, once, for the picked configuration (and the baseline it is compared with).

    scripts/experiments.py PLAN.json --pneumo build/pneumo --data CACHE --out DIR        # train + score
    scripts/experiments.py PLAN.json --pneumo build/pneumo --data CACHE --out DIR --table # table only
    scripts/experiments.py PLAN.json ... --test                                           # test, once
    scripts/experiments.py PLAN.json ... -- --device cpu --threads 2   # extra `pneumo train` flags
    scripts/experiments.py PLAN.json ... --jobs 3                       # 3 runs at a time

PLAN.json: {"size": 96, "epochs": 12, "seeds": [1, 2, 3], "baseline": "keras",
            "rule": "...words...", "pick_metric": "stress_mean_accuracy",
            "pick": "NAME" (optional: a configuration named in advance, one an earlier plan
                    picked or the candidate measured beside the baseline; this plan picks
                    nothing, and its tables say "named by the plan", not "picked"),
            "note": "...words..." (optional),
            "configs": {"NAME": {"flag": value, ...}, ...},
            "views": {"NAME": {"of": "CONFIG", "model": "checkpoints/last.safetensors"}}
                    (optional: another checkpoint of CONFIG's runs, scored and read as a
                    configuration of its own without training anything: which checkpoint is
                    a choice like any other)}
size, epochs, seeds, rule and configs are required; a NAME is [A-Za-z0-9][A-Za-z0-9._-]* (at
most 100 characters) and
none of OUT's own files (plan.json, sweep.json, results.md, results.csv, test.md, test.lock); no
key twice in one object; baseline and pick name configurations or views; pick_metric is a column
of the table (the default is stress_mean_accuracy; a plan comparing normalisations should use
stress_fair_mean_accuracy, the six variants per-image standardisation does not cancel; with pick,
the column its rule reads). The pick is the configuration
with the highest mean pick_metric (a tie: the higher mean validation AUC, then the first in the
plan); none while a run lacks a value of it. Each config's flags are `pneumo train` flags (as in a
--config file), checked by `pneumo train` itself before anything runs; size, epochs and seed come
from the plan. Flags after a lone "--" go to every `pneumo train` (none a configuration sets),
and --device among them to `pneumo evaluate` too (it has no --threads). An invalid plan or command
line (a --data that does not exist, a cache at another size, an --out that is a file) exits with
status 2 before anything runs.

The first training call copies the plan to OUT/plan.json and records in OUT/sweep.json the data
(a cache by its meta.json: size, creation time, images' hash, counts) and the flags after "--"
(but --threads and --tuning-cache, which may change between calls); a later call whose plan or
data differs (the configurations' order too: it breaks ties) is refused, and a training call whose
flags after "--" differ (compared as flags: their order and "--x=v" against "--x v" do not
count); a sweep.json that cannot be read is refused, not taken for an older sweep's. Until OUT
holds a run's result (a checkpoint, a model, a score) a training call replaces them, so a plan
whose first run failed at once can be mended. --table and --test need OUT/plan.json; --table reads no
data (given one that does not exist, it does not compare it). Runs
land in OUT/NAME/seed-S/ (a view's scores in OUT/VIEW/seed-S/, its model in its CONFIG's run);
each run's config.json must record the plan's flags, size, epochs and seed, else it is refused.
A finished run (its val.json readable, an evaluation's) is never trained again, so an interrupted
sweep continues where it stopped (a view is scored again when its model is newer than its val.json). SIGINT or
SIGTERM (to the script alone or to its process group) reaches the commands under way once (a
`pneumo train` checkpoints), no new one starts, and the script exits 130 or 143; the same command
continues. This holds from a training call's start-up checks on: a signal during them (each runs
`pneumo`) reaches the check under way and stops the call before any run, with the same status and
a message saying so; likewise during --test's checks before its lock (nothing read, no lock
written: the same command reads it later). During --test's reads a signal is not passed on: the
read under way finishes (unless the signal reached it too, as Ctrl-C does), none starts after it.
--jobs N trains and scores N runs at a time (for a GPU that one run leaves partly idle; each run's
train_seconds.txt then holds time shared with the others, so a sweep's seconds are not a speed
measure). train_seconds.txt has a line per `pneumo train` command of the run that got
past its start-up checks (one stopped or failed later too; a run trained again from nothing starts
it afresh); the table's "train s" is their sum. A command that exits 0 without writing its
model or scores is a failure. OUT/results.md and OUT/results.csv hold the table
(mean ± sample sd over seeds); the pick is made once every configuration has all its seeds scored.
--test needs that too; it reads the test split into OUT/test.md, once (OUT/test.lock, with the
plan's SHA-256 and the data, refuses a second read, as does a test.json already in a run folder);
before the lock every model file is read and the first evaluated on its validation split with
the flags after "--", so a damaged model or a --device the machine lacks does not spend the read;
reads stopped or failed part way leave test.md with those made and the rest named as not read.
Once the test split is read (OUT/test.lock or OUT/test.md exists) the sweep is closed, so that its
table stays the one test.md's pick was made from (a val.json damaged later and scored again could
change it): a training call is refused (status 1, before its checks: nothing trained or written),
--table prints OUT/results.md as it stands without writing it or results.csv again (status 0), and
--test is refused before it touches the table.
"""
import argparse
import concurrent.futures
import csv
import hashlib
import json
import math
import os
import re
import shutil
import signal
import shlex
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize_runs import dig, load  # noqa: E402  (the same JSON readers)
from compare_weights import Unreadable, read_safetensors  # noqa: E402  (a model file's check)

# Columns of the table, computed from a run's val.json (`pneumo evaluate --split val-carved
# --stress --json`). Everything at threshold 0.5 except stress_mean_accuracy_tuned, which applies the threshold the
# checkpoint tuned on validation (Youden's J) to the stress variants: the evidence for the
# threshold rule. A run whose stored threshold is not Youden's (its val.json's threshold_rule:
# train's 0.5 fall-back on a small validation, --threshold-rule 0.5, an epoch checkpoint's 0.5)
# has no value in that column (as summarize_runs.py leaves it out of its Youden columns).
# The stress_fair_ columns read only the variants a per-image standardisation does not cancel
# (FAIR_VARIANTS: geometry, gamma, blur): darker, brighter and the contrast changes barely move
# what a --normalization per-image model sees, so a mean over all ten favours it by construction
# (docs/experiments/2026-12-06-stress-rule-recheck/). stress_mean_drop is the mean over every
# variant of its drop from the run's own unstressed accuracy (lower is better).
COLUMNS = ["val_acc", "val_sens", "val_spec", "val_auc", "stress_worst_accuracy",
           "stress_mean_accuracy", "stress_worst_specificity", "stress_worst_sensitivity",
           "stress_worst_auc", "stress_mean_accuracy_tuned", "stress_fair_mean_accuracy",
           "stress_fair_worst_accuracy", "stress_mean_drop"]
FAIR_VARIANTS = ("width-0.8", "width-1.25", "gamma-0.7", "gamma-1.5", "blur", "sharpen")
LOWER_IS_BETTER = {"stress_mean_drop"}  # not a pick_metric: the pick takes the highest mean

# A configuration's or view's name: a folder, and part of its runs' file names (at most 100
# characters: a 300-character name failed with an OSError traceback after plan.json was written).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
PLAN_KEYS = {"size", "epochs", "seeds", "configs", "views", "rule", "baseline", "pick",
             "pick_metric", "note"}
# Flags the script sets itself (from the plan, or the run folder): not in a config nor after "--";
# nor those that make `pneumo train` print and exit without training.
OWN_FLAGS = {"size", "epochs", "seed", "out", "data", "config", "resume", "help", "version"}
# Flags after "--" that may differ from one call to the next: they change how fast a run goes,
# not what it computes. Every other one is recorded by the first call (OUT/sweep.json).
FREE_FLAGS = {"threads", "tuning-cache"}
# OUT's own files: no configuration or view may be named as one of them.
OUT_FILES = {"plan.json", "sweep.json", "results.md", "results.csv", "test.md", "test.lock"}


def val_columns(val):
    at = val.get("default_threshold") or {}
    row = {"val_acc": at.get("accuracy"), "val_sens": at.get("sensitivity"),
           "val_spec": at.get("specificity"), "val_auc": val.get("roc_auc")}
    named = (val.get("stress") or {}).get("variants", [])
    every = [v["metrics"] for v in named]
    fair = [v["metrics"] for v in named if v.get("name") in FAIR_VARIANTS]
    # All six or none: a mean over some of them would not be the column's comparison.
    fair = fair if len(fair) == len(FAIR_VARIANTS) else []

    def over(key, path, reduce, variants=every):
        values = [dig(v, path) for v in variants]
        values = [x for x in values if isinstance(x, (int, float))]
        row[key] = reduce(values) if values else None

    def mean(values):
        return sum(values) / len(values)

    over("stress_worst_accuracy", ("default_threshold", "accuracy"), min)
    over("stress_mean_accuracy", ("default_threshold", "accuracy"), mean)
    over("stress_worst_specificity", ("default_threshold", "specificity"), min)
    over("stress_worst_sensitivity", ("default_threshold", "sensitivity"), min)
    over("stress_worst_auc", ("roc_auc",), min)
    over("stress_mean_accuracy_tuned", ("tuned_threshold", "accuracy"), mean)
    over("stress_fair_mean_accuracy", ("default_threshold", "accuracy"), mean, fair)
    over("stress_fair_worst_accuracy", ("default_threshold", "accuracy"), min, fair)
    unstressed = row["val_acc"]
    over("stress_mean_drop", ("default_threshold", "accuracy"),
         lambda v: unstressed - mean(v) if isinstance(unstressed, (int, float)) else None)
    return row


TEST_COLUMNS = [  # (header, function of a test.json); threshold 0.5 unless said
    ("test acc", lambda t: dig(t, ("default_threshold", "accuracy"))),
    ("sens", lambda t: dig(t, ("default_threshold", "sensitivity"))),
    ("spec", lambda t: dig(t, ("default_threshold", "specificity"))),
    ("AUC", lambda t: dig(t, ("roc_auc",))),
    ("acc at the checkpoint's threshold", lambda t: dig(t, ("tuned_threshold", "accuracy"))),
    ("stress worst acc", lambda t: val_columns(t)["stress_worst_accuracy"]),
]
TUNED = 4  # TEST_COLUMNS' checkpoint-threshold column: none for an ensemble (it applies 0.5)


def usage_error(message):
    print(f"experiments: {message}", file=sys.stderr)
    sys.exit(2)


def warn(message):
    print(f"experiments: warning: {message}", file=sys.stderr, flush=True)


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def plan_errors(plan):
    """What is wrong with a plan, in words (empty when nothing is)."""
    if not isinstance(plan, dict):
        return ["the plan must be a JSON object"]
    errors = []
    unknown = sorted(set(plan) - PLAN_KEYS)
    if unknown:
        errors.append(f"unknown keys {unknown} (known: {sorted(PLAN_KEYS)})")
    for key in ("size", "epochs", "seeds", "configs", "rule"):
        if key not in plan:
            errors.append(f"'{key}' is required")
    for key in ("size", "epochs"):
        if key in plan and not (is_int(plan[key]) and plan[key] > 0):
            errors.append(f"'{key}' must be a positive integer, got {json.dumps(plan[key])}")
    seeds = plan.get("seeds")
    if "seeds" in plan:
        # pneumo's --seed is a UINT (64 bits): a larger one passed the first seed's check and
        # failed its own training, leaving a folder the corrected plan could not finish.
        if not (isinstance(seeds, list) and seeds and
                all(is_int(s) and 0 <= s < 2 ** 64 for s in seeds)):
            errors.append("'seeds' must be a non-empty list of integers in [0, 2^64), got "
                          f"{json.dumps(seeds)}")
        elif len(set(seeds)) != len(seeds):
            errors.append(f"'seeds' holds a seed twice: {seeds}")
    for key in ("rule", "note", "baseline", "pick", "pick_metric"):
        if key in plan and not (isinstance(plan[key], str) and plan[key].strip()):
            errors.append(f"'{key}' must be a non-empty string, got {json.dumps(plan[key])}")
    configs = plan.get("configs")
    if "configs" in plan and not (isinstance(configs, dict) and configs):
        errors.append("'configs' must be a non-empty object of NAME -> {flag: value}")
        configs = {}
    for name, flags in (configs or {}).items():
        if not NAME.fullmatch(name):
            errors.append(f"configuration name {json.dumps(name)} is not [A-Za-z0-9][A-Za-z0-9._-]* "
                          "of at most 100 characters "
                          "(it names a folder)")
        elif name in OUT_FILES:
            errors.append(f"configuration name '{name}' is one of OUT's own files {sorted(OUT_FILES)}")
        if not isinstance(flags, dict):
            errors.append(f"configuration '{name}' must be an object of flags, got {json.dumps(flags)}")
            continue
        for flag, value in flags.items():
            if flag in OWN_FLAGS:
                errors.append(f"configuration '{name}': '{flag}' is set by the script "
                              "(size, epochs and seed come from the plan), or is not for a run")
            elif not isinstance(value, (str, int, float, bool)):
                errors.append(f"configuration '{name}': '{flag}' must be a string, number or "
                              f"boolean, got {json.dumps(value)}")
    views = plan.get("views", {})
    errors += view_errors(views, configs if isinstance(configs, dict) else {})
    named = list(configs or {}) + (list(views) if isinstance(views, dict) else [])
    for key in ("baseline", "pick"):
        if isinstance(plan.get(key), str) and isinstance(configs, dict) and plan[key] not in named:
            errors.append(f"'{key}' names '{plan[key]}', which is not among the configurations "
                          f"and views {named}")
    if isinstance(plan.get("pick_metric"), str) and plan["pick_metric"] not in COLUMNS:
        errors.append(f"'pick_metric' '{plan['pick_metric']}' is not one of {COLUMNS}")
    elif plan.get("pick_metric") in LOWER_IS_BETTER:  # the pick takes the highest mean
        errors.append(f"'pick_metric' '{plan['pick_metric']}' is lower-is-better; the pick takes "
                      "the highest mean: pick by another column")
    return errors


def view_errors(views, configs):
    """What is wrong with a plan's views (another checkpoint of a configuration's runs)."""
    if not isinstance(views, dict):
        return ["'views' must be an object of NAME -> {\"of\": CONFIG, \"model\": PATH}"]
    errors = []
    for name, view in views.items():
        if not NAME.fullmatch(name):
            errors.append(f"view name {json.dumps(name)} is not [A-Za-z0-9][A-Za-z0-9._-]* "
                          "of at most 100 characters "
                          "(it names a folder)")
        elif name in OUT_FILES:
            errors.append(f"view name '{name}' is one of OUT's own files {sorted(OUT_FILES)}")
        if name in configs:
            errors.append(f"view '{name}' has the name of a configuration")
        if not (isinstance(view, dict) and set(view) == {"of", "model"}):
            errors.append(f"view '{name}' must be {{\"of\": CONFIG, \"model\": PATH}}, got "
                          f"{json.dumps(view)}")
            continue
        if not isinstance(view["of"], str):
            errors.append(f"view '{name}': 'of' must name a configuration (a string), got "
                          f"{json.dumps(view['of'])}")
        elif view["of"] not in configs:
            errors.append(f"view '{name}' is of '{view['of']}', which is not a configuration")
        model = view["model"]
        parts = model.split("/") if isinstance(model, str) else []
        if not (parts and model.endswith(".safetensors") and not os.path.isabs(model)
                and all(p not in ("", ".", "..") for p in parts)):
            errors.append(f"view '{name}': 'model' must be a .safetensors file inside a run folder "
                          f"(e.g. checkpoints/last.safetensors), got {json.dumps(model)}")
    return errors


def names_of(plan):
    """Configurations, then views: every NAME with a column of the table."""
    return list(plan["configs"]) + list(plan.get("views", {}))


def model_path(args, plan, name, seed):
    """The model a NAME's seed is scored with: the run's model.safetensors, or the file a view
    names in its configuration's run."""
    view = plan.get("views", {}).get(name)
    if view is None:
        return os.path.join(args.out, name, f"seed-{seed}", "model.safetensors")
    return os.path.join(args.out, view["of"], f"seed-{seed}", *view["model"].split("/"))


def flag_name(arg):
    """"--threads=2" -> "threads"; None for a value."""
    return arg[2:].split("=")[0] if arg.startswith("--") and len(arg) > 2 else None


def flag_groups(flags):
    """The flags after "--" as (name, values) pairs in the order given, the one reading of them
    every use shares: "--x=v" is ("x", ["v"]), as "--x v"; a value is an argument that does not
    start with "--" ("-1" is one), and values before any flag go under the name ""."""
    groups = []
    for arg in flags:
        if flag_name(arg):
            name, _, value = arg[2:].partition("=")
            groups.append((name, [value] if "=" in arg else []))
        elif groups:
            groups[-1][1].append(arg)
        else:
            groups.append(("", [arg]))
    return groups


def flag_value(args, name):
    """The (last) value of --NAME in a list of arguments, else None."""
    values = [values for flag, values in flag_groups(args) if flag == name]
    return values[-1][0] if values and values[-1] else None


def check_flag_names(args, plan):
    """Every config flag and every flag after "--" must be one `pneumo train --help` lists."""
    try:
        result = run_check([args.pneumo, "train", "--help"])
    except OSError as error:
        usage_error(f"cannot run --pneumo {args.pneumo}: {error}")
    known = set(re.findall(r"^\s*(?:-\w,)?--([A-Za-z0-9][A-Za-z0-9-]*)", result.stdout, re.M))
    if result.returncode != 0 or not known:
        return  # a --help this cannot read: `pneumo train` checks its flags itself
    errors = [f"configuration '{name}': '{flag}' is not a `pneumo train` flag"
              for name, flags in plan["configs"].items() for flag in flags if flag not in known]
    errors += [f"'{arg}' after \"--\" is not a `pneumo train` flag" for arg in args.train_args
               if flag_name(arg) and flag_name(arg) not in known]
    if errors:
        usage_error("invalid plan or flags:\n  " + "\n  ".join(errors))


def check_flag_values(args, plan):
    """Every configuration's values, with the flags after "--", must be ones `pneumo train`
    accepts: each is given to it with data that does not exist, which it reports (status 1) only
    after its flags passed (a refused value is status 2). Found here, before OUT is made or its
    plan fixed, a typo costs nothing; found by the first run, it cost the folder its plan."""
    errors = []
    with tempfile.TemporaryDirectory(prefix="experiments-check-") as scratch:
        for index, (name, flags) in enumerate(plan["configs"].items()):
            config = os.path.join(scratch, f"config-{index}.json")
            with open(config, "w", encoding="utf-8") as f:
                json.dump(flags, f)
            command = [args.pneumo, "train", "--config", config,
                       "--data", os.path.join(scratch, "no-data"),
                       "--out", os.path.join(scratch, f"run-{index}"), "--size", str(plan["size"]),
                       "--epochs", str(plan["epochs"]), "--seed", str(plan["seeds"][0])]
            try:
                result = run_check(command + args.train_args, timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                return  # `pneumo train` checks its flags itself when the run starts
            where = f"configuration '{name}'" + (" with the flags after \"--\""
                                                  if args.train_args else "")
            if result.returncode == 2:
                said = [line for line in (result.stdout + result.stderr).splitlines()
                        if line.startswith("pneumo: error:")]
                errors.append(f"{where}: `pneumo train` refuses it: "
                              + (said[0][len("pneumo: error: "):] if said else "status 2"))
            elif result.returncode == 0:  # it never reached the data: help, version, ...
                errors.append(f"{where}: `pneumo train` ends with status 0 without training")
    if errors:
        usage_error("invalid plan or flags:\n  " + "\n  ".join(errors))


def differences(fixed, given, where=""):
    """The keys (dotted) whose values differ between two parsed JSON values. The order of a
    plan's configurations and views counts: it breaks the pick's ties ("the first in the plan")."""
    if isinstance(fixed, dict) and isinstance(given, dict):
        found = []
        for key in list(fixed) + [k for k in given if k not in fixed]:
            if key not in fixed or key not in given:
                found.append(where + key)
            else:
                found += differences(fixed[key], given[key], where + key + ".")
        if where == "" and not found:
            for key in ("configs", "views"):
                if isinstance(fixed.get(key), dict) and isinstance(given.get(key), dict) and \
                        list(fixed[key]) != list(given[key]):
                    found.append(f"{key} (their order)")
        return found
    same = json.dumps(fixed, sort_keys=True) == json.dumps(given, sort_keys=True)
    return [] if same else [where.rstrip(".") or "(the whole plan)"]


def data_identity(path):
    """What names a sweep's data: a cache by what `pneumo prepare` recorded in its meta.json (its
    size, when it was made, its images' hash, its splits' counts, and how it travelled when
    scripts/pack_gpu_data.py re-encoded it: such a copy's pixels differ), wherever it lies now;
    an image tree by its absolute path."""
    meta = load(os.path.join(path, "meta.json"))
    if meta is None:
        return {"tree": os.path.realpath(path)}
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    splits = meta.get("splits") if isinstance(meta.get("splits"), dict) else {}
    cache = {"size": meta.get("size"), "created": meta.get("created"),
             "images_hash": source.get("hash"),
             "counts": {name: split.get("count") for name, split in sorted(splits.items())
                        if isinstance(split, dict)}}
    if meta.get("transport"):
        cache["transport"] = meta["transport"]
    return {"cache": cache, "path": os.path.realpath(path)}


def same_data(recorded, given):
    if "cache" in recorded or "cache" in given:
        return recorded.get("cache") == given.get("cache")  # a cache moved is the same cache
    return recorded.get("tree") == given.get("tree")


def recorded_flags(train_args):
    """The flags after "--" that decide what a sweep's runs compute: all but FREE_FLAGS, each
    with its values."""
    return [arg for name, values in flag_groups(train_args) if name not in FREE_FLAGS
            for arg in ([f"--{name}"] if name else []) + values]


def holds_results(out):
    """Whether OUT holds anything a run made: a checkpoint or model, a score, a test read."""
    for _, _, files in os.walk(out):
        if any(f.endswith(".safetensors") or f in ("val.json", "test.json", "test_ensemble.json",
                                                     "test.lock") for f in files):
            return True
    return False


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def fix_plan(args, plan, training):
    """The first training call keeps a copy of the plan in OUT/plan.json, and in OUT/sweep.json
    what else decides what its runs compute: the data and the flags after "--" (but FREE_FLAGS).
    Later calls must bring the same plan and data, and a training call the same flags. While
    nothing in OUT is a run's result (a checkpoint, a model, a score), a training call replaces
    them: a plan whose first run failed at once can still be mended."""
    plan_path = os.path.join(args.out, "plan.json")
    sweep_path = os.path.join(args.out, "sweep.json")
    sweep = {"data": data_identity(args.data) if os.path.exists(args.data) else None,
             "flags_after_dashes": recorded_flags(args.train_args)}

    def start():
        os.makedirs(args.out, exist_ok=True)
        # A plan given as OUT/plan.json itself is its own copy (copying it onto itself raised).
        if not (os.path.exists(plan_path) and os.path.samefile(args.plan, plan_path)):
            shutil.copyfile(args.plan, plan_path)
        write_json(sweep_path, sweep)

    if not os.path.exists(plan_path):
        if not training:
            usage_error(f"{args.out} holds no sweep (no plan.json): nothing to tabulate or test; "
                        "is --out the folder of the sweep's first call?")
        if holds_results(args.out):
            sys.exit(f"experiments: {args.out} holds runs but no plan.json: what they were trained "
                     "under cannot be told; use another --out")
        return start()
    fixed = load(plan_path)
    if fixed is None:
        sys.exit(f"experiments: cannot read {plan_path}, the plan this folder was started with")
    changed = differences(fixed, plan)
    recorded = load(sweep_path)
    # --table reads no data: a sweep's folder copied back without its cache still tabulates.
    data_given = os.path.exists(args.data)
    other_data = recorded is not None and data_given and \
        not same_data(recorded.get("data") or {}, sweep["data"])
    other_flags = recorded is not None and training and \
        not same_flags(recorded.get("flags_after_dashes") or [], sweep["flags_after_dashes"])
    if (changed or recorded is None or other_data or other_flags) and training and \
            not holds_results(args.out):
        replaced = [what for what, differs in (("plan", changed), ("data", other_data),
                                               ("flags after \"--\"", other_flags)) if differs]
        if replaced:
            warn(f"{args.out} has no run's result yet: its {', '.join(replaced)} "
                 "are replaced by this call's")
        return start()
    # (With runs' results in OUT.) Damaged is not missing: taken for an older sweep's, the next
    # call's data and flags were recorded in its place, and the rest of the sweep trained under
    # them.
    if recorded is None and os.path.exists(sweep_path):
        sys.exit(f"experiments: {sweep_path} cannot be read: the data and flags this sweep's runs "
                 "were trained with cannot be checked. Mend it from a run's config.json and "
                 "meta.json, or use another --out")
    if changed:
        sys.exit(f"experiments: {args.plan} differs from the plan {args.out} was started with "
                 f"({plan_path}) in: {', '.join(changed)}. A plan is fixed before its runs; "
                 "write a new plan with another --out")
    if recorded is None:  # an OUT from before sweep.json: recorded from now on
        if training:
            warn(f"{sweep_path} is missing (a sweep started by an older experiments.py): its data "
                 "and flags after \"--\" are recorded from this call")
            write_json(sweep_path, sweep)
        return
    if other_data:
        sys.exit(f"experiments: --data {args.data} is not the data this sweep's runs were trained "
                 f"on ({sweep_path}: {json.dumps(recorded.get('data'))}; given: "
                 f"{json.dumps(sweep['data'])}); give that data, or use another --out")
    if other_flags:
        sys.exit("experiments: the flags after \"--\" differ from those this sweep's runs were "
                 f"trained with ({sweep_path}): {shlex.join(sweep['flags_after_dashes']) or 'none'} "
                 f"against {shlex.join(recorded.get('flags_after_dashes') or []) or 'none'}; only "
                 f"{', '.join('--' + f for f in sorted(FREE_FLAGS))} may change between calls")


def same_flags(recorded, given):
    """The same flags and values, whatever their order and "--x v" or "--x=v"."""
    return sorted(flag_groups(recorded)) == sorted(flag_groups(given))


def plan_sha256(args):
    return file_sha256(os.path.join(args.out, "plan.json"))


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_test_reads():
    """The test reads the repository records: {sha256: test.lock} of every plan and every model
    file named in a test.lock under docs/experiments/*/ (PNEUMO_TEST_READS names another folder
    of such folders). The test split is read once per final configuration, wherever its sweep
    ran: a lock in OUT sees only OUT, and a plan run again in a fresh folder (another machine, a
    GPU check's) or a model copied into another plan's folder was read twice."""
    root = os.environ.get("PNEUMO_TEST_READS") or os.path.normpath(os.path.join(
        os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "experiments"))
    plans, models = {}, {}
    for folder in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        lock = os.path.join(root, folder, "test.lock")
        if not os.path.isfile(lock):
            continue
        with open(lock, encoding="utf-8", errors="replace") as f:
            for line in f:
                found = re.match(r"(plan|model) sha256 ([0-9a-f]{64})\b", line)
                if found:
                    (plans if found.group(1) == "plan" else models)[found.group(2)] = lock
    return plans, models


def check_cache_size(args, plan):
    meta_path = os.path.join(args.data, "meta.json")
    if not os.path.exists(meta_path):
        return  # an image tree: pneumo caches it at the size asked for
    meta = load(meta_path)
    size = meta.get("size") if isinstance(meta, dict) else None
    if size != plan["size"]:
        usage_error(f"the cache {args.data} holds {size} px images ({meta_path}); the plan's size "
                    f"is {plan['size']}")


def same_value(recorded, planned):
    """A config.json value against a plan's (as `pneumo train --config` reads the plan's: 0.1 and
    "0.1", true and "true" agree)."""
    def norm(value):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return float(value)
        except ValueError:
            return value
    a, b = norm(recorded), norm(planned)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return a == b


def check_run(args, plan, name, seed, run_dir):
    """Refuses a run whose config.json does not record the plan's flags, size, epochs and seed."""
    config_path = os.path.join(run_dir, "config.json")
    config = load(config_path)
    if not isinstance(config, dict):
        sys.exit(f"experiments: cannot read {config_path}, so cannot tell whether run {run_dir} was "
                 "trained under this plan; remove that run folder to train it again")
    given_after = {flag_name(a) for a in args.train_args if flag_name(a)}  # these win over a config
    expected = {k: v for k, v in plan["configs"][name].items() if k not in given_after}
    expected.update({"size": plan["size"], "epochs": plan["epochs"], "seed": seed})
    differing = [f"{key} = {json.dumps(config[key])} (plan: {json.dumps(value)})"
                 for key, value in expected.items()
                 if key in config and not same_value(config[key], value)]
    if differing:
        sys.exit(f"experiments: run {run_dir} was not trained under this plan: its config.json "
                 f"records {'; '.join(differing)}. Remove that run folder, or use another --out")


def is_atomic_write_temporary(name):
    """pneumo's rule (src/core/atomic_file.cpp): a file being written is named PATH.tmp.XXXXXX."""
    return len(name) > len(".tmp.XXXXXX") and name[-11:-6] == ".tmp."


def best_checkpoint_written_here(run_dir):
    """As `pneumo train` sees it: checkpoints/best.safetensors exists and its run's config names
    `run_dir` as its out (or cannot be read): a whole epoch of a run stopped between writing its
    best checkpoint and its last, not a best a failed resume carried over from another folder."""
    best = os.path.join(run_dir, "checkpoints", "best.safetensors")
    if not os.path.exists(best):
        return False
    try:
        with open(best, "rb") as f:
            length = struct.unpack("<Q", f.read(8))[0]
            if length > os.fstat(f.fileno()).st_size - 8:  # a damaged length: read no further
                raise ValueError("header longer than the file")
            metadata = json.loads(f.read(length)).get("__metadata__", {})
        out = json.loads(metadata["config"]).get("out")
    except (OSError, ValueError, KeyError, AttributeError, struct.error):
        return True  # unreadable: not a failed start's to delete
    if not isinstance(out, str):
        return True
    try:
        return os.path.samefile(out, run_dir)
    except OSError:
        return False


def holds_only_a_failed_start(run_dir):
    """As `pneumo train` sees it (it may reuse such a folder): the lock file and checkpoints/
    holding no last.safetensors (at most a failed resume's carried best.safetensors, and the
    temporary file of a checkpoint write a kill cut short), perhaps config.json and the history
    files, nothing else; or nothing at all (an empty folder is a fresh one to pneumo too)."""
    if not os.listdir(run_dir):
        return True
    if best_checkpoint_written_here(run_dir):
        return False
    lock = checkpoints = False
    for entry in os.listdir(run_dir):
        path = os.path.join(run_dir, entry)
        if entry == ".lock" and os.path.isfile(path):  # locked only while a run lives
            lock = True
        elif entry == "checkpoints" and os.path.isdir(path) and \
                all(name == "best.safetensors" or is_atomic_write_temporary(name)
                    for name in os.listdir(path)):
            checkpoints = True
        elif entry not in ("config.json", "history.csv", "history.jsonl", "train_seconds.txt") \
                or not os.path.isfile(path):  # a folder of that name is not a start's file
            return False
    return lock and checkpoints


# SIGINT and SIGTERM, while runs are under way, are passed on to the `pneumo` commands running:
# Ctrl-C reaches them from the terminal anyway, but a SIGTERM sent to this script alone (`kill
# PID`, a runner) would not. Each `pneumo train` then checkpoints and stops (the same signal twice
# within a second counts once: docs/usage.md), no new command starts, and the script exits with
# 128 + the signal's number once the commands under way have ended; the same command continues.
FORWARDED = (signal.SIGINT, signal.SIGTERM)
children = set()  # the `pneumo` processes running now
children_lock = threading.RLock()  # reentrant: the handler may interrupt its own thread holding it
received = []  # the signals received while forwarding, in order
passing_on = True  # whether a signal received goes on to the children (ForwardingSignals)
commands_started = [0]  # how many commands run() has started


def send(child, signum):
    try:
        child.send_signal(signum)
    except ProcessLookupError:  # ended since
        pass


def record(signum, _frame):
    received.append(signum)


def forward(signum, frame):
    record(signum, frame)
    with children_lock:
        for child in list(children):
            send(child, signum)


class ForwardingSignals:
    """While in the block, FORWARDED signals go to the running children, or (pass_on=False) are
    only recorded, so that the command running finishes and no new one starts; handlers are put
    back after. A signal the script was started ignoring (a background job's SIGINT) stays
    ignored."""

    def __init__(self, pass_on=True):
        self.pass_on = pass_on
        self.handler = forward if pass_on else record

    def __enter__(self):
        global passing_on
        self.previous = {}
        self.previous_passing_on = passing_on
        passing_on = self.pass_on
        for number in FORWARDED:
            if signal.getsignal(number) is not signal.SIG_IGN:
                self.previous[number] = signal.signal(number, self.handler)

    def __exit__(self, *_):
        global passing_on
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        passing_on = self.previous_passing_on


def exit_stopped(message):
    """Ends the script after a signal: the message on stderr, status 128 + the signal's number."""
    print(message, file=sys.stderr)
    sys.exit(128 + received[0])


def exit_if_stopped(args):
    if received:
        exit_stopped(f"experiments: stopped by {signal.Signals(received[0]).name}, passed on to "
                     f"the runs under way (a `pneumo train` writes a checkpoint first; its log "
                     f"{args.out}/NAME/seed-S.log says where); the same command continues the "
                     "sweep")


def exit_if_stopped_at_start():
    if received:
        exit_stopped(f"experiments: stopped by {signal.Signals(received[0]).name} during the "
                     "start-up checks, before any run started: nothing was trained; the same "
                     "command starts (or continues) the sweep")


def exit_if_stopped_before_lock():
    if received:
        exit_stopped(f"experiments: stopped by {signal.Signals(received[0]).name} during --test's "
                     "checks, before its lock: the test split was not read; the same command "
                     "reads it")


def run_check(command, timeout=None, exit_if_stopped=exit_if_stopped_at_start):
    """A check's command (`pneumo train --help`, a flag check, `pneumo --version`, --test's
    evaluation on validation), its output captured, as subprocess.run(capture_output=True,
    text=True) gives it. main runs a training call's checks, and read_test its checks before the
    lock, under ForwardingSignals: a signal reaches the check under way as it reaches a run, and
    then exit_if_stopped ends the script (it ended without a word, the check left running)."""
    exit_if_stopped()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             errors="replace")
    with children_lock:
        children.add(child)
        if received:  # a signal came while it was starting
            send(child, received[-1])
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise
    finally:
        with children_lock:
            children.discard(child)
    exit_if_stopped()
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


def started_training(log_path, offset):
    """Whether the `pneumo train` whose output begins at `offset` of its log got past its start-up
    checks (flags, run folder and its lock, data): it then prints the line "data: ..."."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            return any(line.startswith(b"data: ") for line in log)
    except OSError:
        return False


def run(command, log_path, failed_note=None, seconds_path=None, makes=None):
    """Runs a command, its output appended to log_path; exits (after a signal, or when it fails,
    or when it succeeds without writing the file `makes`). With seconds_path (a `pneumo train`),
    the command's elapsed seconds are appended there (a line) if it got past its start-up checks,
    however it ends (stopped, failed or done), if the file's folder exists then: a start refused at
    once (another process holds the run, the data is missing) trained nothing."""
    def note():  # asked when the script ends, so that it says what is true then
        return f"\n{failed_note()}" if failed_note else ""

    if received:
        exit_stopped(f"experiments: not started after {signal.Signals(received[0]).name}: "
                     + shlex.join(command) + note())
    print("+ " + shlex.join(command), flush=True)
    start = time.time()
    try:
        with open(log_path, "a") as log:
            offset = log.tell()
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            commands_started[0] += 1
    except OSError as error:
        status = f"could not start: {error}"
    else:
        with children_lock:
            children.add(child)
            if received and passing_on:  # a signal came while it was starting
                send(child, received[-1])
        try:
            returncode = child.wait()
        finally:
            with children_lock:
                children.discard(child)
            if seconds_path and os.path.isdir(os.path.dirname(seconds_path)) and \
                    started_training(log_path, offset):
                with open(seconds_path, "a") as f:
                    f.write(f"{time.time() - start:.1f}\n")
        if returncode == 0 and (makes is None or os.path.exists(makes)):
            return
        # Popen's -N is death by signal N ("failed with status -11" was a crash by SIGSEGV); 128 + N
        # the status pneumo gives when a signal stopped it as asked.
        if returncode < 0:
            try:
                killer = signal.Signals(-returncode).name
            except ValueError:
                killer = f"signal {-returncode}"
            status = f"was killed by {killer}, see {log_path}"
        elif returncode > 128 and received and returncode - 128 == received[0]:
            status = f"stopped as asked (status {returncode}), see {log_path}"
        elif returncode != 0:
            status = f"failed with status {returncode}, see {log_path}"
        else:
            status = f"ended with status 0 without writing {makes}, see {log_path}"
    if received:
        exit_stopped(f"experiments: command {status} after {signal.Signals(received[0]).name}"
                     f"{note()}")
    sys.exit(f"experiments: command {status}{note()}")


def evaluate_args(args):
    """The flags after "--" that `pneumo evaluate` takes as well (it has no --threads)."""
    device = flag_value(args.train_args, "device")
    return ["--device", device] if device else []


def write_config(args, name, flags):
    """OUT/NAME/config.json, the configuration's flags as a `pneumo train --config` file."""
    os.makedirs(os.path.join(args.out, name), exist_ok=True)
    config_path = os.path.join(args.out, name, "config.json")
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(flags, f, indent=2)
    return config_path


def record_build(args):
    """OUT/sweep.json's "builds": each `--pneumo` binary (SHA-256 and --version's first line)
    that a training call of this sweep used. A call with a binary not listed yet, once OUT holds
    results, is warned of: its runs and the earlier ones come from two builds, and the table says
    so (a sweep continued after a rebuild ranked runs of two builds as one)."""
    sweep_path = os.path.join(args.out, "sweep.json")
    sweep = load(sweep_path) or {}
    try:
        digest = file_sha256(shutil.which(args.pneumo) or args.pneumo)
        version = run_check([args.pneumo, "--version"], timeout=60).stdout.partition("\n")[0]
    except (OSError, subprocess.TimeoutExpired):
        return  # the training call itself says what is wrong with --pneumo
    builds = [b for b in sweep.get("builds", []) if isinstance(b, dict)]
    if any(b.get("sha256") == digest for b in builds):
        return
    if builds and holds_results(args.out):
        warn(f"--pneumo {args.pneumo} (sha256 {digest[:12]}) is not the build that trained this "
             f"sweep's earlier runs ({', '.join(b.get('sha256', '?')[:12] for b in builds)}): its "
             "table will say the runs come from several builds")
    builds.append({"sha256": digest, "version": version,
                   "first_used": time.strftime("%Y-%m-%d %H:%M:%S")})
    sweep["builds"] = builds
    write_json(sweep_path, sweep)


def train_all(args, plan):
    """Every (seed, configuration) run not yet scored, seed-major (every configuration gets its
    first seed early), args.jobs at a time. The first failure stops the sweep once the runs
    already started have ended (their checkpoints let a later call continue them)."""
    record_build(args)
    exit_if_stopped_at_start()  # a signal since the checks (fix_plan runs no command)
    names = [name for name in plan["configs"] if not args.only or name in args.only]
    for name in names:  # written once, before any run reads them
        write_config(args, name, plan["configs"][name])
    pairs = [(name, seed) for seed in plan["seeds"] for name in names]  # seed-major
    failed = threading.Event()  # after a failure no run starts; the running ones end

    def one(name, seed):
        if failed.is_set() or received:
            return
        try:
            train_and_score(args, plan, name, seed)
            for view, of in plan.get("views", {}).items():
                if of["of"] == name:
                    score_view(args, plan, view, seed)
        except BaseException:
            failed.set()
            raise

    with ForwardingSignals(), concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(one, *pair) for pair in pairs]
    exit_if_stopped(args)  # before the runs' own failures: they were told to stop
    for future in futures:  # the first failure in plan order, as one at a time would report it
        future.result()


def load_val(path):
    """A run's val.json, or None when it is missing, unreadable or not an evaluation's (its
    accuracy at 0.5 and its stress variants): a `{}` counted as scored, was never scored again,
    and left the sweep unpicked with no file named."""
    val = load(path)
    if val is None or not isinstance(val.get("default_threshold"), dict) or \
            not isinstance(val["default_threshold"].get("accuracy"), (int, float)) or \
            not isinstance(val.get("stress"), dict):
        return None
    return val


def set_aside(val_json, then):
    """A val.json that cannot be read or holds no evaluation, moved to val.json.unread (pneumo
    evaluate replaces only its own earlier output, and the bytes are kept for a look)."""
    os.replace(val_json, val_json + ".unread")
    warn(f"{val_json} cannot be read or holds no evaluation (kept as {val_json}.unread); {then}")


def train_and_score(args, plan, name, seed):
    run_dir = os.path.join(args.out, name, f"seed-{seed}")
    val_json = os.path.join(run_dir, "val.json")
    if os.path.exists(val_json):
        if load_val(val_json) is not None:
            check_run(args, plan, name, seed, run_dir)
            return
        set_aside(val_json, "evaluating that run again")
    config_path = os.path.join(args.out, name, "config.json")  # written by train_all
    log = os.path.join(args.out, name, f"seed-{seed}.log")
    model = os.path.join(run_dir, "model.safetensors")
    last = os.path.join(run_dir, "checkpoints", "last.safetensors")
    command = [args.pneumo, "train", "--data", args.data, "--config", config_path,
               "--size", str(plan["size"]), "--epochs", str(plan["epochs"]),
               "--seed", str(seed), "--out", run_dir]
    resuming = False
    if os.path.exists(model):
        check_run(args, plan, name, seed, run_dir)
        command = None  # trained; only its evaluation is missing
    elif os.path.exists(last):
        # An interrupted training: continue it (its checkpoint holds the position).
        check_run(args, plan, name, seed, run_dir)
        # Its data given again: the path the checkpoint recorded may be relative to another folder.
        command = [args.pneumo, "train", "--resume", last, "--data", args.data]
        resuming = True
    elif os.path.isdir(run_dir) and best_checkpoint_written_here(run_dir):
        # Stopped between writing its best checkpoint and its last: that epoch is whole there.
        check_run(args, plan, name, seed, run_dir)
        command = [args.pneumo, "train", "--resume",
                   os.path.join(run_dir, "checkpoints", "best.safetensors"), "--data", args.data]
        resuming = True
    elif os.path.isdir(run_dir) and not holds_only_a_failed_start(run_dir):
        sys.exit(f"experiments: {run_dir} holds neither a checkpoint nor a model, nor only what a "
                 "failed start leaves (an unfinished run, or one whose files were removed); "
                 "remove it to start that run again")
    # else: new, or a start that failed before training (`pneumo train` reuses that folder)
    if command is not None:
        seconds = os.path.join(run_dir, "train_seconds.txt")
        if not resuming and os.path.exists(seconds):
            os.remove(seconds)  # trained from nothing: a failed start's seconds are not this run's
        run(command + args.train_args, log, seconds_path=seconds, makes=model)
    run([args.pneumo, "evaluate", "--model", model, "--data", args.data, "--split", "val-carved",
         "--stress", "--json", val_json] + evaluate_args(args), log, makes=val_json)


def score_view(args, plan, view, seed):
    """A view's seed scored on validation and its stress variants: the model its configuration's
    run holds at the view's path (that run trained and checked already)."""
    run_dir = os.path.join(args.out, view, f"seed-{seed}")
    val_json = os.path.join(run_dir, "val.json")
    model = model_path(args, plan, view, seed)
    if not os.path.exists(model):
        sys.exit(f"experiments: view '{view}' scores {model}, which its configuration's run did "
                 "not write")
    if load_val(val_json) is not None and os.path.getmtime(val_json) >= os.path.getmtime(model):
        return  # scored, and not from a model trained again since
    if os.path.exists(val_json) and load_val(val_json) is None:
        set_aside(val_json, "scoring that view again")
    os.makedirs(run_dir, exist_ok=True)
    run([args.pneumo, "evaluate", "--model", model, "--data", args.data, "--split", "val-carved",
         "--stress", "--json", val_json] + evaluate_args(args),
        os.path.join(args.out, view, f"seed-{seed}.log"), makes=val_json)


def check_source(args, plan, name, seed):
    """check_run for the run that trained NAME's model (a view's: its configuration's)."""
    of = plan.get("views", {}).get(name, {}).get("of", name)
    check_run(args, plan, of, seed, os.path.join(args.out, of, f"seed-{seed}"))


def table_rows(args, plan):
    rows = []
    for name in names_of(plan):
        for seed in plan["seeds"]:
            run_dir = os.path.join(args.out, name, f"seed-{seed}")
            val_json = os.path.join(run_dir, "val.json")
            val = load_val(val_json)
            if val is None:
                if os.path.exists(val_json):
                    warn(f"{val_json} cannot be read or holds no evaluation; that run is left out "
                         "(a sweep without --table or --test evaluates it again)")
                continue
            check_source(args, plan, name, seed)
            row = {"config": name, "seed": seed}
            row.update(val_columns(val))
            rule = val.get("threshold_rule")
            if not (isinstance(rule, str) and rule.startswith("Youden's J")):
                row["stress_mean_accuracy_tuned"] = None
            seconds = load_seconds(os.path.dirname(model_path(args, plan, name, seed)))
            row["train_seconds"] = seconds
            row["val_split"] = val_split(args, plan, name, seed)
            row["threshold_rule"] = rule if isinstance(rule, str) else ""
            rows.append(row)
    return rows


def val_split(args, plan, name, seed):
    """The --val-split NAME's seed was trained with: as its run's config.json records it, else as
    the plan's configuration and the flags after "--" give it (pneumo's default 0.15)."""
    of = plan.get("views", {}).get(name, {}).get("of", name)
    config = load(os.path.join(args.out, of, f"seed-{seed}", "config.json"))
    if isinstance(config, dict) and "val-split" in config:
        return str(config["val-split"])
    planned = flag_value(args.train_args, "val-split") or plan["configs"][of].get("val-split")
    return "0.15" if planned is None else str(planned)


def split_words(value):
    """A --val-split in words: "15%" of train (carved by patient), or the dataset's own split."""
    try:
        return f"{float(value) * 100:g}%"
    except ValueError:
        return "the dataset's own val split" if value == "official" else value


def validation_words(rows, args, plan):
    """What validation is, from the runs' val-split (from the plan where no run is scored)."""
    splits = {}
    for name in names_of(plan):
        mine = [r["val_split"] for r in rows if r["config"] == name]
        for value in mine or [val_split(args, plan, name, seed) for seed in plan["seeds"]]:
            splits.setdefault(name, [])
            if value not in splits[name]:
                splits[name].append(value)
    distinct = {v for values in splits.values() for v in values}
    if distinct == {"official"}:
        return "Validation = the dataset's own val split (`--val-split official`)"
    if len(distinct) == 1:
        share = split_words(distinct.pop())
        return f"Validation = the split each run carves from train ({share}, by patient)"
    return ("Validation = each run's `val-split` (a share of train, carved by patient; `official`: "
            "the dataset's own val split): " + ", ".join(
                f"`{name}` {' / '.join(split_words(v) for v in values)}"
                for name, values in splits.items()))


def load_seconds(run_dir):
    """A run's training seconds: the sum of its train_seconds.txt, a line per `pneumo train`
    command (a run stopped and continued has one for each part)."""
    try:
        with open(os.path.join(run_dir, "train_seconds.txt")) as f:
            parts = [float(v) for v in f.read().split()]
    except (OSError, ValueError):
        return None
    return round(sum(parts), 1) if parts else None


def fmt_seconds(value):
    return "-" if value is None else f"{value:.1f}"


def mean_sd(values):
    """Mean and sample standard deviation (n - 1)."""
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) == 1:  # one run has no spread: print the value alone, not "± 0.000"
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def fmt(value, sd=None):
    if value is None:
        return "-"
    return f"{value:.3f}" if sd is None else f"{value:.3f} ± {sd:.3f}"


def counted(values):
    """How many of a column's values are numbers (a mean covers only those)."""
    return sum(1 for v in values if isinstance(v, (int, float)) and math.isfinite(v))


def summarise(rows, plan):
    """Per config: n seeds, mean ± sample sd of every column, and how many runs each mean covers
    ("count", by column)."""
    summary = {}
    for name in names_of(plan):
        mine = [r for r in rows if r["config"] == name]
        if mine:
            summary[name] = {"n": len(mine), "count": {}}
            for column in COLUMNS:
                summary[name][column] = mean_sd([r[column] for r in mine])
                summary[name]["count"][column] = counted([r[column] for r in mine])
    return summary


def pick_metric(plan):
    return plan.get("pick_metric", "stress_mean_accuracy")


def unpickable(summary, plan):
    """Configurations whose pick metric lacks a value for one of their runs, in words: the rule
    cannot rank them (a mean over fewer seeds is not the plan's comparison)."""
    if plan.get("pick"):
        return []
    metric = pick_metric(plan)
    return [f"{name} ({metric} for {s['count'][metric]} of {s['n']} runs)"
            for name, s in summary.items() if s["count"][metric] < s["n"]]


def incomplete(summary, plan):
    """Configurations without all their seeds scored, in words."""
    return [f"{name} ({summary[name]['n'] if name in summary else 0} of {len(plan['seeds'])} seeds)"
            for name in names_of(plan)
            if name not in summary or summary[name]["n"] < len(plan["seeds"])]


def pick(summary, plan):
    """The configuration the plan's rule picks (the highest mean of its pick metric; a tie goes to
    the higher mean validation AUC, then to the first in the plan), once every configuration has
    all its seeds scored and the metric a value for each run."""
    if incomplete(summary, plan):
        return None
    if plan.get("pick"):  # chosen by an earlier plan's rule: this one only measures it
        return plan["pick"]
    if unpickable(summary, plan):
        return None
    metric = pick_metric(plan)

    def key(name):
        auc = summary[name]["val_auc"][0]
        return (summary[name][metric][0], auc if auc is not None else -1)
    return max(summary, key=key)


def write_table(args, plan):
    rows = table_rows(args, plan)
    with open(os.path.join(args.out, "results.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["config", "seed"] + COLUMNS +
                                ["train_seconds", "val_split", "threshold_rule"])
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows, plan)
    missing = incomplete(summary, plan)
    if missing:
        warn(f"not every seed is scored: {', '.join(missing)}; no configuration is picked "
             "until they are")
    unranked = [] if missing else unpickable(summary, plan)
    if unranked:
        warn(f"the pick metric has no value for some runs: {', '.join(unranked)}; the rule "
             "cannot rank them, so nothing is picked")
    chosen = pick(summary, plan)
    sweep = load(os.path.join(args.out, "sweep.json")) or {}
    after = sweep.get("flags_after_dashes")
    data = sweep.get("data") if isinstance(sweep.get("data"), dict) else {}
    builds = sweep.get("builds") if isinstance(sweep.get("builds"), list) else []
    lines = [f"# Generalisation sweep: {plan['size']} px, {plan['epochs']} epochs, seeds {plan['seeds']}",
             "", f"Selection rule (fixed before the runs): {plan['rule']}", "",
             validation_words(rows, args, plan) + "; stress = the same "
             "images under `pneumo evaluate --stress`'s ten fixed variants. Threshold 0.5 except the last "
             "column (the threshold the checkpoint stores where Youden's J on validation chose it; a run "
             "whose stored threshold is another, such as train's 0.5 fall-back on a small validation or "
             "an epoch checkpoint a view names, is left out of that column). Mean ± sample sd (n - 1) over "
             "seeds; model = each run's model.safetensors (the final epoch's weights unless its configuration "
             "restores its best), a view's the checkpoint it names."
             + (f" Incomplete, nothing picked yet: {', '.join(missing)}." if missing else "")
             + (f" Nothing picked: the pick metric has no value for some runs: "
                f"{', '.join(unranked)}." if unranked else "")
             + ("" if plan.get("pick") or missing or unranked else
                f" Picked by the highest mean `{pick_metric(plan)}` (a tie: the higher mean "
                "validation AUC).")
             + (f" This plan picks nothing: it names `{plan['pick']}` (its `pick`) to measure beside"
                f" `{plan.get('baseline')}`; whether its rule holds is read from the table."
                if plan.get("pick") else "")
             + " A mean over fewer runs than the row's seeds says how many, as (k).", "",
             "Data: " + (f"the cache made {data['cache'].get('created')} "
                         f"({data['cache'].get('images_hash')}) at "
                         f"{os.path.realpath(args.data) if os.path.exists(args.data) else data.get('path')}"
                         if isinstance(data.get("cache"), dict) else
                         f"the image tree {data.get('tree')}" if data.get("tree") else
                         "not recorded (a sweep started by an older experiments.py)")
             + "; flags after \"--\" on every `pneumo train`: "
             + (("`" + shlex.join(after) + "`" if after else "none")
                if isinstance(after, list) else "not recorded")
             + f" (besides {', '.join('--' + f for f in sorted(FREE_FLAGS))}, which may differ "
               "between calls)."
             + (f" Trained by {len(builds)} builds of pneumo (sweep.json's builds: a call after a "
                "rebuild): a difference between configurations may be one between builds."
                if len(builds) > 1 else ""), "",
             "| config | seeds | val acc | val sens | val spec | val AUC | stress worst acc | stress mean acc | stress worst spec | stress worst sens | stress worst AUC | stress mean acc, Youden threshold | stress mean acc, 6 fair | stress worst acc, 6 fair | stress mean drop |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        cells = [fmt(*s[c]) + (f" ({s['count'][c]})" if 0 < s["count"][c] < s["n"] else "")
                 for c in ("val_acc", "val_sens", "val_spec", "val_auc", "stress_worst_accuracy",
                           "stress_mean_accuracy", "stress_worst_specificity",
                           "stress_worst_sensitivity", "stress_worst_auc",
                           "stress_mean_accuracy_tuned", "stress_fair_mean_accuracy",
                           "stress_fair_worst_accuracy", "stress_mean_drop")]
        mark = "" if name != chosen else " (named by the plan)" if plan.get("pick") else " (picked)"
        lines.append(f"| {name}{mark} | {s['n']} | " + " | ".join(cells) + " |")
    not_youden = {}  # NAME -> (seeds, rules) left out of the Youden column
    for r in rows:
        if not r["threshold_rule"].startswith("Youden's J"):
            seeds, rules = not_youden.setdefault(r["config"], ([], []))
            seeds.append(str(r["seed"]))
            # one reason per configuration: the fall-back's "it would have chosen X" differs by seed
            rule = re.sub(r"; it would have chosen [^)]*", "", r["threshold_rule"])
            rule = rule or "none recorded"
            if rule not in rules:
                rules.append(rule)
    if not_youden:
        left_out = "; ".join(
            f"`{name}` seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)} ({'; '.join(rules)})"
            for name, (seeds, rules) in not_youden.items())
        lines += ["", f"Left out of the column 'stress mean acc, Youden threshold', their stored threshold not Youden's J: {left_out}."]
    shown = len(lines)
    lines += ["", "Configurations:", ""]
    for name, flags in plan["configs"].items():
        lines.append(f"- `{name}`: `{json.dumps(flags)}`")
    for name, view in plan.get("views", {}).items():
        lines.append(f"- `{name}`: `{view['model']}` of `{view['of']}`'s runs (not trained again)")
    lines += ["", "Per run:", "", "| config | seed | " + " | ".join(COLUMNS) + " | train s |",
              "|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        lines.append(f"| {r['config']} | {r['seed']} | " + " | ".join(fmt(r[c]) for c in COLUMNS) +
                     f" | {fmt_seconds(r['train_seconds'])} |")
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[:shown]))
    return chosen, missing + unranked


def test_read_files(out):
    """OUT's files that say its test split was read: test.lock (written before the reads) and
    test.md (after them). A sweep with either is closed: a training call is refused, --table
    shows results.md as it stands, --test is refused. A val.json damaged after the read, scored
    again, gave a table whose pick was not the one test.md reports."""
    return [path for path in (os.path.join(out, "test.lock"), os.path.join(out, "test.md"))
            if os.path.exists(path)]


def show_closed_table(args, read):
    """--table on a closed sweep: results.md printed as it stands, neither it nor results.csv
    written again."""
    table = os.path.join(args.out, "results.md")
    try:
        with open(table, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as error:
        sys.exit(f"experiments: this sweep is closed (its test split was read: {', '.join(read)}) "
                 f"and its table cannot be read ({error.strerror or error}); it is not written "
                 "again")
    print(text, end="", flush=True)
    warn(f"this sweep is closed (its test split was read: {', '.join(read)}): {table} and "
         "results.csv are left as test.md's pick was made from them; printed as it stands, not "
         "computed again")


def preflight(args, models):
    """Why `pneumo evaluate` would fail on these models with these flags, in words (empty when it
    would not), before the lock: every model file read whole as safetensors, and the first
    evaluated on its own validation split with the flags. A damaged model file or a --device
    this machine lacks failed the reads after the lock was written, so the one test read was
    spent on nothing."""
    problems = []
    for model in models:
        try:
            read_safetensors(model)
        except Unreadable as why:
            problems.append(f"{model} cannot be read: {why}")
    if problems or not models:
        return problems
    command = [args.pneumo, "evaluate", "--data", args.data, "--split", "val-carved",
               "--model", models[0]] + evaluate_args(args)
    try:
        result = run_check(command, timeout=3600, exit_if_stopped=exit_if_stopped_before_lock)
    except (OSError, subprocess.TimeoutExpired) as error:
        return [f"the check on validation ({shlex.join(command)}) could not run: {error}"]
    if result.returncode == 0:
        return []
    said = [line for line in (result.stderr or "").splitlines() if "error" in line]
    return [f"`pneumo evaluate` on the validation split fails with these models and flags (status "
            f"{result.returncode}): " + (said[-1] if said else "no error line") +
            f" ({shlex.join(command)})"]


def checks_before_lock(args, plan, names, problems):
    """Adds to `problems` why the test split must not be read now, in words: --pneumo must run,
    every model exist and none have been read on test before (here, or as a committed lock
    records), and, when nothing else is wrong, preflight's evaluation on validation pass.
    Returns {model file: sha256} of the models that exist, each once, for the lock."""
    try:  # a --pneumo that cannot run would leave the lock written and the split never read
        version = run_check([args.pneumo, "--version"], timeout=60,
                            exit_if_stopped=exit_if_stopped_before_lock)
        if version.returncode != 0:
            problems.append(f"--pneumo {args.pneumo} --version failed (status {version.returncode})")
    except (OSError, subprocess.TimeoutExpired) as error:
        problems.append(f"cannot run --pneumo {args.pneumo}: {error}")
    for name in names:
        for seed in plan["seeds"]:
            run_dir = os.path.join(args.out, name, f"seed-{seed}")
            if not os.path.exists(model_path(args, plan, name, seed)):
                problems.append(f"{model_path(args, plan, name, seed)} is missing")
            if os.path.exists(os.path.join(run_dir, "test.json")):
                problems.append(f"{run_dir}/test.json exists: the test split was already read for "
                                "that model (under another plan or call)")
        if os.path.exists(os.path.join(args.out, name, "test_ensemble.json")):
            problems.append(f"{os.path.join(args.out, name, 'test_ensemble.json')} exists: the test "
                            "split was already read for that ensemble")
    plans_read, models_read = recorded_test_reads()
    if plan_sha256(args) in plans_read:
        problems.append(f"this plan's test split was read already ({plans_read[plan_sha256(args)]} "
                        "records its sha256): it is read once per final configuration")
    models = {}
    for name in names:
        for seed in plan["seeds"]:
            path = model_path(args, plan, name, seed)
            if os.path.exists(path) and path not in models:
                models[path] = file_sha256(path)
                if models[path] in models_read:
                    problems.append(f"{path} was read on test already ({models_read[models[path]]} "
                                    "records its sha256)")
    if not problems:
        problems += preflight(args, list(models))
    return models


def read_test(args, plan, chosen):
    lock = os.path.join(args.out, "test.lock")
    if os.path.exists(lock):
        sys.exit(f"experiments: the test split was read already ({lock}); it is read once")
    names = [chosen] + ([plan["baseline"]] if plan.get("baseline") and plan["baseline"] != chosen else [])
    # Everything checked before the lock: a refusal here leaves the test split unread.
    problems = [f"'{n}' is not a configuration or view of the plan" for n in names
                if n not in names_of(plan)]
    check_cache_size(args, plan)
    # Until the lock, a signal reaches the check under way (the evaluation on validation takes a
    # while) and ends the call with nothing read and no lock: the same command reads it later.
    with ForwardingSignals():
        models = checks_before_lock(args, plan, names, problems)  # model file -> sha256, for the lock
    exit_if_stopped_before_lock()
    if problems:
        sys.exit("experiments: the test split is not read (no lock written):\n  " + "\n  ".join(problems))
    # The lock's text, made before the lock: a failure here (a file that cannot be read) leaves
    # the test split unread and no lock.
    lock_text = (f"test read at {time.strftime('%Y-%m-%d %H:%M:%S')} for {names}\n"
                 f"plan sha256 {plan_sha256(args)} ({os.path.join(args.out, 'plan.json')})\n"
                 f"data {args.data}: {json.dumps(data_identity(args.data))}\n" +
                 "".join(f"model sha256 {digest} ({path})\n" for path, digest in models.items()))

    reads = []  # (name, label, path of its test JSON, whether it is an ensemble), in order
    for name in names:
        models = []
        for seed in plan["seeds"]:
            models.append(model_path(args, plan, name, seed))
            reads.append((name, f"seed {seed}", os.path.join(args.out, name, f"seed-{seed}", "test.json"),
                          [models[-1]]))
        if len(models) > 1:
            reads.append((name, f"ensemble of {len(models)} (mean p, threshold 0.5)",
                          os.path.join(args.out, name, "test_ensemble.json"), list(models)))
    done = []

    def failed_note():
        if commands_started[0] == started_before:  # the lock is removed again (below)
            return (f"No test read began, so the lock {lock} is removed: the test split is "
                    "unread, and the same command reads it.")
        not_read = [path for _, _, path, _ in reads if path not in done]
        return (f"The lock {lock} is written, so the test split will not be read again. Read: "
                f"{', '.join(done) or 'nothing'}. Not read: {', '.join(not_read)}.")

    # From the lock on, a signal is not passed on: `pneumo evaluate` would die with its read half
    # done, and the lock allows no second read. The read running finishes; none starts after it.
    # A signal before the first read starts, or a lock that cannot be written whole, removes the
    # lock again (nothing was read). Whatever ends the reads, test.md holds those made (the lock
    # allows no call to write it later).
    with ForwardingSignals(pass_on=False):
        exit_if_stopped_before_lock()
        # Made only if absent (O_EXCL): of two calls at once, one reads (the check at the top saw
        # no lock in either).
        try:
            descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            sys.exit(f"experiments: the test split was read already ({lock}, written by a call "
                     "that ran beside this one); it is read once")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as f:
                f.write(lock_text)
        except BaseException:
            os.remove(lock)
            raise
        if received:
            os.remove(lock)
            exit_if_stopped_before_lock()
        started_before = commands_started[0]
        try:
            for name, _, out, models in reads:
                command = [args.pneumo, "evaluate", "--data", args.data, "--split", "test",
                           "--stress", "--json", out] + evaluate_args(args)
                for model in models:
                    command += ["--model", model]
                run(command, os.path.join(args.out, name, "test.log"), failed_note, makes=out)
                done.append(out)
        finally:
            if commands_started[0] == started_before:
                os.remove(lock)  # no read began (a signal in the last instants before it)
            else:
                write_test_md(args, plan, chosen, names, reads, done)


def write_test_md(args, plan, chosen, names, reads, done):
    """OUT/test.md: the test metrics of the reads made (`done`), the others named as not read."""
    what = "named by the plan" if plan.get("pick") else "picked"
    not_read = [f"{name} {label}" for name, label, out, _ in reads if out not in done]
    lines = [f"# Test split, read once ({time.strftime('%Y-%m-%d')}): {what} `{chosen}`"
             + (f", baseline `{plan['baseline']}`" if len(names) > 1 else ""), "",
             "Threshold 0.5 in every column but \"acc at the checkpoint's threshold\" (so "
             "\"stress worst acc\" is at 0.5; `evaluate --stress` prints its worst accuracy at the "
             "checkpoint's threshold). Mean ± sample sd (n - 1) over seeds; an ensemble applies "
             "threshold 0.5, so it has no checkpoint threshold (-). Test split of --data "
             f"{os.path.realpath(args.data)}."
             + (f" Not read (the reads were stopped or failed, and the lock allows no other): "
                f"{', '.join(not_read)}." if not_read else ""), "",
             "| config | run | " + " | ".join(h for h, _ in TEST_COLUMNS) + " |",
             "|---|---|" + "---|" * len(TEST_COLUMNS)]
    for name in names:
        results = []
        for row_name, label, out, models in reads:
            if row_name != name:
                continue
            result = (load(out) if out in done else None) or {}
            if len(models) == 1:
                if result:
                    results.append(result)
                cells = [fmt(f(result)) for _, f in TEST_COLUMNS]
            else:
                if len(results) > 1:
                    stats = [mean_sd([f(r) for r in results]) for _, f in TEST_COLUMNS]
                    # Over the seeds read: say so when the reads stopped short of them all.
                    over = "" if len(results) == len(models) else \
                        f" ({len(results)} of {len(models)} seeds)"
                    lines.append(f"| {name} | mean ± sample sd{over} | " +
                                 " | ".join(fmt(*s) for s in stats) + " |")
                cells = [fmt(f(result)) if i != TUNED else "-" for i, (_, f) in enumerate(TEST_COLUMNS)]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, "test.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def parents(path):
    """The folders above a path, nearest first (as given: relative ones stay relative)."""
    path = os.path.normpath(path)
    found = []
    while os.path.dirname(path) not in ("", path):
        path = os.path.dirname(path)
        found.append(path)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan")
    parser.add_argument("--pneumo", default="build/pneumo")
    parser.add_argument("--data", required=True, help="cache prepared at the plan's size")
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="*", help="train only these configs")
    parser.add_argument("--table", action="store_true",
                        help="only rewrite the table (a closed sweep's: only print it)")
    parser.add_argument("--test", action="store_true", help="read the test split for the picked config")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at a time (default 1)")
    # Extra `pneumo train` flags go after a lone "--" (split off here: argparse would read
    # "--threads" as one of its own options).
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = parser.parse_args(argv)
    args.train_args = train_args
    repeated = []  # keys a JSON object holds twice (json.load keeps the last one silently)

    def unique_keys(pairs):
        keys = [key for key, _ in pairs]
        repeated.extend(sorted({key for key in keys if keys.count(key) > 1}))
        return dict(pairs)
    try:  # any JSON (load() keeps objects only): plan_errors says what a plan must be
        with open(args.plan, encoding="utf-8") as f:
            plan = json.load(f, object_pairs_hook=unique_keys)
    except OSError as error:
        usage_error(f"cannot read plan {args.plan}: {error.strerror or error}")
    except ValueError as error:  # not UTF-8, or not JSON
        usage_error(f"cannot read plan {args.plan}: not JSON in UTF-8 ({error})")
    errors = [f"the plan holds {json.dumps(key)} twice in one object (JSON keeps only the last)"
              for key in repeated]
    errors += plan_errors(plan)
    errors += [f"'{a}' after \"--\" is set by the script (from the plan, or the run folder), or "
               "is not for a run" for a in train_args if flag_name(a) in OWN_FLAGS or a == "-h"]
    configs = plan.get("configs") if isinstance(plan, dict) else None
    given_after = {flag_name(a) for a in train_args if flag_name(a)}
    errors += [f"'--{flag}' after \"--\" would replace configuration '{name}''s own {flag}: a "
               "configuration's flags belong in the plan" for name, flags in
               (configs.items() if isinstance(configs, dict) else [])
               if isinstance(flags, dict) for flag in flags if flag in given_after]
    if args.only is not None and not args.only:
        errors.append("--only names no configuration")
    errors += [f"--only names '{n}', which is not a configuration of the plan" for n in args.only or []
               if isinstance(configs, dict) and n not in configs]
    if args.jobs < 1:
        errors.append(f"--jobs {args.jobs}: give at least 1")
    if not args.out:
        errors.append("--out is empty")
    elif os.path.exists(args.out) and not os.path.isdir(args.out):
        errors.append(f"--out {args.out} is a file, not a folder")
    elif not os.path.exists(args.out) and any(
            os.path.exists(p) and not os.path.isdir(p) for p in parents(args.out)):
        errors.append(f"--out {args.out} lies under a file")
    if not os.path.exists(args.data) and not args.table:  # --table reads no data
        errors.append(f"--data {args.data} does not exist")
    if errors:
        usage_error(f"invalid plan {args.plan} or command line:\n  " + "\n  ".join(errors))
    check_cache_size(args, plan)
    training = not args.table and not args.test
    read = test_read_files(args.out)
    if training and read:  # before the checks and fix_plan: nothing runs, nothing is written
        sys.exit(f"experiments: this sweep is closed: its test split was read ({', '.join(read)}), "
                 "so no run of it is trained or scored again (a run scored again could change "
                 "the table test.md's pick was made from). Nothing was trained or written; a "
                 "new plan needs another --out")
    if training:
        # From the start-up checks (each runs `pneumo`) to the end of the runs, a signal is
        # passed on and ends the script with 128 + its number, a message saying where it was.
        with ForwardingSignals():
            check_flag_names(args, plan)
            check_flag_values(args, plan)
            fix_plan(args, plan, training)
            train_all(args, plan)
    else:
        fix_plan(args, plan, training)
    if read:  # closed: its table stays as test.md's pick was made from it
        if args.test:
            sys.exit(f"experiments: the test split was read already ({', '.join(read)}); it is "
                     "read once")
        show_closed_table(args, read)
        return
    chosen, missing = write_table(args, plan)
    if args.test:
        if missing:
            sys.exit("experiments: --test reads the test split only once the plan's rule has picked "
                     "(every configuration with all its seeds scored and the pick metric for each); "
                     f"it has not: {', '.join(missing)}. No lock written")
        read_test(args, plan, chosen)


if __name__ == "__main__":
    main()
