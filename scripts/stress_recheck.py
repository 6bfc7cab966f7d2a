#!/usr/bin/env python3
"""Re-decide committed sweeps by the stress variants a per-image standardisation does not cancel.

    python3 scripts/stress_recheck.py SWEEP_DIR... [--out results.md]

Each SWEEP_DIR is a folder `scripts/experiments.py` wrote (CONFIG/seed-N/val.json). For every
configuration it prints, as means over its seeds: the stress mean accuracy over all ten variants
(the rule the sweeps used), over the six variants of experiments.py's FAIR_VARIANTS (width,
gamma, blur, sharpen), the worst of those six, and the mean drop of every variant from the run's
own unstressed accuracy; then which configuration each rule picks (none while a configuration of
the sweep's plan.json lacks seeds; a plan that names its candidate picks nothing by a rule). The
fair rule: highest mean of the six-variant accuracy; a difference under TIE is a tie, broken by
the mean validation AUC
(docs/experiments/2026-12-06-stress-rule-recheck/README.md, written before it ran). Reads
validation files only; the test split is not touched.
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from experiments import FAIR_VARIANTS, fmt, mean_sd, val_columns  # noqa: E402
from summarize_runs import load  # noqa: E402

TIE = 0.001
SEED_DIR = re.compile(r"seed-(\d+)$")
SHOWN = [("stress mean acc, 10", "stress_mean_accuracy"),
         ("stress mean acc, 6 fair", "stress_fair_mean_accuracy"),
         ("stress worst acc, 6 fair", "stress_fair_worst_accuracy"),
         ("stress mean drop, 10", "stress_mean_drop"),
         ("val acc", "val_acc"), ("val AUC", "val_auc")]


def runs_of(sweep):
    """{config: [val_columns of each seed's val.json]}, configurations and seeds in name order."""
    configs = {}
    for name in sorted(os.listdir(sweep)):
        folder = os.path.join(sweep, name)
        if not os.path.isdir(folder):
            continue
        seeds = sorted((int(m.group(1)), d) for d in os.listdir(folder)
                       if (m := SEED_DIR.match(d)) and os.path.isfile(os.path.join(folder, d, "val.json")))
        if seeds:
            rows = []
            for _, d in seeds:
                path = os.path.join(folder, d, "val.json")
                scores = load(path)
                if scores is None:
                    raise SystemExit(f"stress_recheck: {path} cannot be read as JSON (damaged, or "
                                     "not an evaluation's); mend or remove it")
                rows.append(val_columns(scores))
            configs[name] = rows
    return configs


def means(configs):
    """{config: {column: (mean, sd), "n": seeds}}; a column missing from any run has no mean."""
    table = {}
    for name, rows in configs.items():
        table[name] = {"n": len(rows)}
        for _, column in SHOWN:
            values = [r[column] for r in rows]
            table[name][column] = (mean_sd(values) if all(isinstance(v, (int, float)) for v in values)
                                   else (None, None))
    return table


def pick(table, column, tie):
    """The configuration with the highest mean of COLUMN; within TIE of the best, the higher
    validation AUC (a tie of 0 is the sweeps' own rule: exact ties only)."""
    ranked = [name for name in table if table[name][column][0] is not None]
    if len(ranked) != len(table):
        return None
    best = max(table[name][column][0] for name in ranked)
    close = [name for name in ranked if best - table[name][column][0] < tie or
             table[name][column][0] == best]
    return max(close, key=lambda name: (table[name]["val_auc"][0] or -1, -ranked.index(name)))


def report(sweep):
    configs = runs_of(sweep)
    if not configs:
        raise SystemExit(f"stress_recheck: {sweep}: no CONFIG/seed-N/val.json here")
    table = means(configs)
    # The sweep's own plan, when it kept one: a configuration short of its seeds (or missing)
    # leaves the sweep unpicked, as experiments.py leaves it; a plan that names its candidate
    # ("pick") picks nothing by its rule.
    plan = load(os.path.join(sweep, "plan.json")) or {}
    seeds = plan.get("seeds") if isinstance(plan.get("seeds"), list) else None
    planned = list(plan["configs"]) if isinstance(plan.get("configs"), dict) else list(table)
    incomplete = [f"{name} ({table[name]['n'] if name in table else 0} of {len(seeds)} seeds)"
                  for name in planned if seeds and (name not in table or table[name]["n"] < len(seeds))]
    lines = [f"### {os.path.basename(os.path.normpath(sweep))}", "",
             "| config | seeds | " + " | ".join(h for h, _ in SHOWN) + " |",
             "|---|---|" + "---|" * len(SHOWN)]
    for name, row in table.items():
        lines.append(f"| {name} | {row['n']} | " + " | ".join(fmt(*row[c]) for _, c in SHOWN) + " |")
    if incomplete:
        lines += ["", "No pick: the sweep is not complete (" + ", ".join(incomplete) + ").", ""]
        return "\n".join(lines), None, None
    old = pick(table, "stress_mean_accuracy", 0.0)
    fair = pick(table, "stress_fair_mean_accuracy", TIE)
    lacking = [name for name in table if table[name]["stress_fair_mean_accuracy"][0] is None]
    rule = plan.get("pick_metric", "stress_mean_accuracy") if plan else None
    said = (f"The plan names `{plan['pick']}` (its `pick`): it picks nothing by a rule; the "
            f"ten-variant mean would take `{old}`. " if plan.get("pick") else
            f"The sweep picks by `{rule}` (its `pick_metric`), not by the stress variants; the "
            f"ten-variant mean would take `{old}`. " if plan and rule != "stress_mean_accuracy" else
            f"Picked by the ten-variant mean (the sweep's rule): `{old}`. " if plan else
            f"By the ten-variant mean: `{old}` (no plan.json here: whether every configuration "
            "has all its seeds, and whether its plan picks by a rule at all, is not checked). ")
    lines += ["", said
              + (f"By the six fair variants: `{fair}`"
                 + (" (the same)." if fair == old else " (a different pick).")
                 if fair else "No fair pick: runs of " + ", ".join(lacking) +
                 " lack one of " + ", ".join(FAIR_VARIANTS) + "."), ""]
    return "\n".join(lines), old, fair


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+", help="folders written by scripts/experiments.py")
    parser.add_argument("--out", help="write the tables here as well as to stdout")
    args = parser.parse_args()
    for sweep in args.sweeps:
        if not os.path.isdir(sweep):
            parser.error(f"{sweep} is not a folder (a sweep folder of scripts/experiments.py)")
    parts = [report(sweep)[0] for sweep in args.sweeps]
    text = ("Means over seeds (± sample sd), validation split carved from train, threshold 0.5; "
            f"the six fair variants: {', '.join(FAIR_VARIANTS)}.\n\n" + "\n".join(parts))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
