#!/usr/bin/env python3
"""The generalisation experiment runner: trains every configuration of a plan for every seed,
scores each run on its own validation split and on the stress variants of it, writes one table,
picks a configuration by the rule the plan states (written before any run), and reads the test
split only when asked, once, for the picked configuration (and the baseline it is compared with).

    scripts/experiments.py PLAN.json --pneumo build/pneumo --data CACHE --out DIR        # train + score
    scripts/experiments.py PLAN.json --pneumo build/pneumo --data CACHE --out DIR --table # table only
    scripts/experiments.py PLAN.json ... --test                                           # test, once

PLAN.json: {"size": 96, "epochs": 12, "seeds": [1, 2, 3], "baseline": "keras",
            "rule": "...words...", "pick_metric": "stress_mean_accuracy",
            "pick": "NAME" (optional: a configuration an earlier plan picked; no new pick),
            "configs": {"NAME": {"flag": value, ...}, ...}}
Each config's flags are `pneumo train` flags (as in a --config file); size, epochs and seed come
from the plan. Runs land in OUT/NAME/seed-S/, and a finished run (its val.json present) is never
trained again, so an interrupted sweep continues where it stopped. OUT/results.md and
OUT/results.csv hold the table; OUT/test.md the test read (OUT/test.lock makes it happen once).
"""
import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize_runs import dig, load  # noqa: E402  (the same JSON readers)

# Columns of the table, computed from a run's val.json (`pneumo evaluate --split val-carved
# --stress --json`). Everything at threshold 0.5 except the last, which applies the threshold the
# checkpoint tuned on validation (Youden's J) to the stress variants: the evidence for the
# threshold rule.
COLUMNS = ["val_acc", "val_sens", "val_spec", "val_auc", "stress_worst_accuracy",
           "stress_mean_accuracy", "stress_worst_specificity", "stress_worst_sensitivity",
           "stress_worst_auc", "stress_mean_accuracy_tuned"]


def val_columns(val):
    at = val.get("default_threshold") or {}
    row = {"val_acc": at.get("accuracy"), "val_sens": at.get("sensitivity"),
           "val_spec": at.get("specificity"), "val_auc": val.get("roc_auc")}
    variants = [v["metrics"] for v in (val.get("stress") or {}).get("variants", [])]

    def over(key, path, reduce):
        values = [dig(v, path) for v in variants]
        values = [x for x in values if isinstance(x, (int, float))]
        row[key] = reduce(values) if values else None

    over("stress_worst_accuracy", ("default_threshold", "accuracy"), min)
    over("stress_mean_accuracy", ("default_threshold", "accuracy"), lambda v: sum(v) / len(v))
    over("stress_worst_specificity", ("default_threshold", "specificity"), min)
    over("stress_worst_sensitivity", ("default_threshold", "sensitivity"), min)
    over("stress_worst_auc", ("roc_auc",), min)
    over("stress_mean_accuracy_tuned", ("tuned_threshold", "accuracy"), lambda v: sum(v) / len(v))
    return row


TEST_COLUMNS = [  # (header, function of a test.json); threshold 0.5 unless said
    ("test acc", lambda t: dig(t, ("default_threshold", "accuracy"))),
    ("sens", lambda t: dig(t, ("default_threshold", "sensitivity"))),
    ("spec", lambda t: dig(t, ("default_threshold", "specificity"))),
    ("AUC", lambda t: dig(t, ("roc_auc",))),
    ("acc at the checkpoint's threshold", lambda t: dig(t, ("tuned_threshold", "accuracy"))),
    ("stress worst acc", lambda t: val_columns(t)["stress_worst_accuracy"]),
]


def run(command, log_path):
    print("+ " + " ".join(command), flush=True)
    with open(log_path, "a") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f"experiments: command failed with status {result.returncode}, see {log_path}")


def train_and_score(args, plan, name, flags, seed):
    run_dir = os.path.join(args.out, name, f"seed-{seed}")
    val_json = os.path.join(run_dir, "val.json")
    if os.path.exists(val_json):
        return
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    config_path = os.path.join(args.out, name, "config.json")
    with open(config_path, "w") as f:
        json.dump(flags, f, indent=2)
    log = os.path.join(args.out, name, f"seed-{seed}.log")
    if os.path.exists(run_dir) and not os.path.exists(os.path.join(run_dir, "model.safetensors")):
        # An interrupted training: continue it (its checkpoint holds the position).
        last = os.path.join(run_dir, "checkpoints", "last.safetensors")
        command = [args.pneumo, "train", "--resume", last] if os.path.exists(last) else None
        if command is None:
            sys.exit(f"experiments: {run_dir} holds an unfinished run without a checkpoint; "
                     "remove it to start that run again")
    else:
        command = [args.pneumo, "train", "--data", args.data, "--config", config_path,
                   "--size", str(plan["size"]), "--epochs", str(plan["epochs"]),
                   "--seed", str(seed), "--out", run_dir]
    command += args.train_args
    start = time.time()
    if not os.path.exists(os.path.join(run_dir, "model.safetensors")):
        run(command, log)
    with open(os.path.join(run_dir, "train_seconds.txt"), "a") as f:
        f.write(f"{time.time() - start:.1f}\n")
    run([args.pneumo, "evaluate", "--model", os.path.join(run_dir, "model.safetensors"),
         "--data", args.data, "--split", "val-carved", "--stress", "--json", val_json], log)


def table_rows(args, plan):
    rows = []
    for name in plan["configs"]:
        for seed in plan["seeds"]:
            run_dir = os.path.join(args.out, name, f"seed-{seed}")
            val = load(os.path.join(run_dir, "val.json"))
            if val is None:
                continue
            row = {"config": name, "seed": seed}
            row.update(val_columns(val))
            seconds = load_seconds(run_dir)
            row["train_seconds"] = seconds
            rows.append(row)
    return rows


def load_seconds(run_dir):
    try:
        with open(os.path.join(run_dir, "train_seconds.txt")) as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def mean_sd(values):
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


def summarise(rows, plan):
    """Per config: n seeds, mean ± sd of every column."""
    summary = {}
    for name in plan["configs"]:
        mine = [r for r in rows if r["config"] == name]
        if mine:
            summary[name] = {"n": len(mine)}
            for column in COLUMNS:
                summary[name][column] = mean_sd([r[column] for r in mine])
    return summary


def pick(summary, plan):
    metric = plan.get("pick_metric", "stress_mean_accuracy")
    complete = {n: s for n, s in summary.items() if s["n"] == len(plan["seeds"])}
    if not complete:
        return None
    if plan.get("pick"):  # chosen by an earlier plan's rule: this one only measures it
        return plan["pick"] if plan["pick"] in complete else None
    return max(complete, key=lambda n: (complete[n][metric][0] or -1, complete[n]["val_auc"][0] or -1))


def write_table(args, plan):
    rows = table_rows(args, plan)
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["config", "seed"] + COLUMNS + ["train_seconds"])
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows, plan)
    chosen = pick(summary, plan)
    lines = [f"# Generalisation sweep: {plan['size']} px, {plan['epochs']} epochs, seeds {plan['seeds']}",
             "", f"Selection rule (fixed before the runs): {plan['rule']}", "",
             "Validation = the split each run carves from train (15%, by patient); stress = the same "
             "images under `pneumo evaluate --stress`'s ten fixed variants. Threshold 0.5 except the last "
             "column (the checkpoint's Youden threshold from validation). Mean ± sd over seeds; "
             "model = the final epoch's weights (model.safetensors).", "",
             "| config | seeds | val acc | val sens | val spec | val AUC | stress worst acc | stress mean acc | stress worst spec | stress worst sens | stress mean acc, Youden threshold |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        cells = [fmt(*s[c]) for c in ("val_acc", "val_sens", "val_spec", "val_auc", "stress_worst_accuracy",
                                       "stress_mean_accuracy", "stress_worst_specificity",
                                       "stress_worst_sensitivity", "stress_mean_accuracy_tuned")]
        mark = " (picked)" if name == chosen else ""
        lines.append(f"| {name}{mark} | {s['n']} | " + " | ".join(cells) + " |")
    lines += ["", "Configurations:", ""]
    for name, flags in plan["configs"].items():
        lines.append(f"- `{name}`: `{json.dumps(flags)}`")
    lines += ["", "Per run:", "", "| config | seed | " + " | ".join(COLUMNS) + " | train s |",
              "|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        lines.append(f"| {r['config']} | {r['seed']} | " + " | ".join(fmt(r[c]) for c in COLUMNS) +
                     f" | {r['train_seconds'] if r['train_seconds'] is not None else '-'} |")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[:8 + len(summary)]))
    return chosen


def read_test(args, plan, chosen):
    lock = os.path.join(args.out, "test.lock")
    if os.path.exists(lock):
        sys.exit(f"experiments: the test split was read already ({lock}); it is read once")
    names = [chosen] + ([plan["baseline"]] if plan.get("baseline") and plan["baseline"] != chosen else [])
    with open(lock, "w") as f:
        f.write(f"test read at {time.strftime('%Y-%m-%d %H:%M:%S')} for {names}\n")
    lines = [f"# Test split, read once ({time.strftime('%Y-%m-%d')}): picked `{chosen}`"
             + (f", baseline `{plan['baseline']}`" if len(names) > 1 else ""), "",
             "| config | run | " + " | ".join(h for h, _ in TEST_COLUMNS) + " |",
             "|---|---|" + "---|" * len(TEST_COLUMNS)]
    for name in names:
        models, results = [], []
        for seed in plan["seeds"]:
            run_dir = os.path.join(args.out, name, f"seed-{seed}")
            model = os.path.join(run_dir, "model.safetensors")
            out = os.path.join(run_dir, "test.json")
            run([args.pneumo, "evaluate", "--model", model, "--data", args.data, "--split", "test",
                 "--stress", "--json", out], os.path.join(args.out, name, "test.log"))
            models.append(model)
            results.append(load(out))
            lines.append(f"| {name} | seed {seed} | " + " | ".join(fmt(f(results[-1])) for _, f in TEST_COLUMNS) + " |")
        if len(results) > 1:
            stats = [mean_sd([f(r) for r in results]) for _, f in TEST_COLUMNS]
            lines.append(f"| {name} | mean ± sd | " + " | ".join(fmt(*s) for s in stats) + " |")
        if len(models) > 1:
            out = os.path.join(args.out, name, "test_ensemble.json")
            command = [args.pneumo, "evaluate", "--data", args.data, "--split", "test", "--stress", "--json", out]
            for model in models:
                command += ["--model", model]
            run(command, os.path.join(args.out, name, "test.log"))
            ensemble = load(out)
            lines.append(f"| {name} | ensemble of {len(models)} (mean p, threshold 0.5) | " +
                         " | ".join(fmt(f(ensemble)) for _, f in TEST_COLUMNS) + " |")
    with open(os.path.join(args.out, "test.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan")
    parser.add_argument("--pneumo", default="build/pneumo")
    parser.add_argument("--data", required=True, help="cache prepared at the plan's size")
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="*", help="train only these configs")
    parser.add_argument("--table", action="store_true", help="only rewrite the table")
    parser.add_argument("--test", action="store_true", help="read the test split for the picked config")
    # Extra `pneumo train` flags go after a lone "--" (split off here: argparse would read
    # "--threads" as one of its own options).
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = parser.parse_args(argv)
    args.train_args = train_args
    plan = load(args.plan)
    if plan is None:
        sys.exit(f"experiments: cannot read plan {args.plan}")
    os.makedirs(args.out, exist_ok=True)
    if not args.table and not args.test:
        for seed in plan["seeds"]:  # seed-major: every config gets its first seed early
            for name, flags in plan["configs"].items():
                if args.only and name not in args.only:
                    continue
                train_and_score(args, plan, name, flags, seed)
    chosen = write_table(args, plan)
    if args.test:
        if chosen is None:
            sys.exit("experiments: no configuration has all its seeds scored; nothing to test")
        read_test(args, plan, chosen)


if __name__ == "__main__":
    main()
