#!/usr/bin/env python3
"""Checks speed predictions written before a GPU check against what the check measured.

    scripts/check_predictions.py PREDICTIONS.json OUT_DIR        # Markdown table on stdout

PREDICTIONS.json (written before the run, as the experiment plans are):
    {"written": "...", "rule": "...words...", "before_device": "H200",
     "device": "NVIDIA" (optional: every entry compared only where the device's name holds this
                         word, unless the entry names its own),
     "predictions": [{"id": "...", "claim": "...words...", "source": "profiling/README.md#...",
                      "measure": {...}, "before": 2.05 (optional),
                      "at_most": 1.3 | "at_least": 0.9 | "equals": 1,
                      "device": "H200" (optional: an absolute figure, compared only when the
                                        measuring device's name holds this word)}]}
A "measure" names one number:
    {"kernels": {"op": ..., "layer": ..., "batch": ..., "variant": ...}, "field": "median_ms"}
        one row of OUT_DIR/bench_kernels.jsonl (pneumo bench kernels --json; without that file,
        of OUT_DIR/bench_kernels.csv, --csv, as a stored result folder keeps it: numbers read as
        numbers, nan and inf too, empty cells as absent, true/false as booleans), matched on every
        key given;
        field any of its columns (median_ms, gbps, percent_dram_peak, speedup, ...).
    {"train": {"precision": ..., "batch": ..., ...}, "field": "step_ms_mean"}
        one steady row of OUT_DIR/throughput.jsonl from pneumo bench train (impl "pneumo", no
        "measure" key; without that file, of OUT_DIR/logs/bench_train*.log, else of their stored
        copies OUT_DIR/bench_train*.txt), matched on every key given. Instead of a field, "op"
        names one row of its per-op table (ops_ms, the "ms" column), or "ops_matching" a regular
        expression over that table's op names with "aggregate": "sum" (of ms) or "count".
    {"recipe": {...}, "log": "bench_recipe_warm.log", "field": "total_seconds"}
        one recipe line of bench train ("measure": "recipe"): of OUT_DIR/logs/LOG when "log" is
        given (or of its stored copy, OUT_DIR/bench_recipe_warm.txt for bench_recipe_warm.log,
        else of throughput.jsonl's lines that gpu_check.sh tagged "log": LOG), else of
        throughput.jsonl's untagged lines (bench train's own runs); field any of its numbers
        (total_seconds, first_epoch_overhead, ...).
Any measure may add "relative_to": another measure (its field, when it names none, the first's),
which the value is divided by (not measured when that is 0 or less).
A prediction with no matching row, or several, is "not measured" (with the reason), never held;
so is one whose number is NaN or infinite, in either format (a JSON NaN or Infinity, a CSV nan or
inf): no measurement, neither held nor missed.
An OUT_DIR that holds none of those files gets its table (every entry not measured) and a warning
on stderr.
Exit status: 0 when the table was written (whatever the verdicts), 2 on an invalid file (an
unknown key, a bound that is not a finite number, ...), a file of OUT_DIR it cannot read, or an
OUT_DIR that is not a folder.
"""
import csv
import json
import math
import os
import re
import sys

COMPARISONS = ("at_most", "at_least", "equals")
# Every key a file, a prediction and a measure may hold: a misspelt one (a "feild" that left the
# field to its default, a "devcie" that compared a figure on another GPU) is refused, not ignored.
FILE_KEYS = {"written", "rule", "before_device", "device", "predictions", "note"}
PREDICTION_KEYS = {"id", "claim", "source", "measure", "before", "device", "note"} | set(COMPARISONS)
MEASURE_KEYS = {"kernels", "train", "recipe", "field", "op", "ops_matching", "aggregate", "log",
                "relative_to"}
# bench kernels' CSV columns that hold words, whatever they look like; the others are numbers
# or true/false (src/bench/report.cpp, rows_to_csv).
CSV_TEXT_COLUMNS = {"platform", "device", "op", "layer", "shape", "variant", "status", "note",
                    "reference", "speedup_over"}
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
# A cell that is no finite number, as C's printf and Python write one: read as the float it names
# (JSON lines give NaN and Infinity as floats), so that number() refuses it in both formats alike.
NOT_FINITE = re.compile(r"^[-+]?(nan|inf|infinity)$", re.IGNORECASE)


def json_lines(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def csv_rows(path):
    """bench kernels' --csv rows, typed as its --json lines are: numbers as floats (a JSON
    integer compares equal), "true"/"false" as booleans, an empty cell absent (the JSON's null or
    an empty string)."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8", newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, text in raw.items():
                if key is None or text is None or text == "":
                    continue
                if key in CSV_TEXT_COLUMNS:
                    row[key] = text
                elif text in ("true", "false"):
                    row[key] = text == "true"
                elif NUMBER.match(text) or NOT_FINITE.match(text):
                    row[key] = float(text)
                else:
                    row[key] = text
            rows.append(row)
    return rows


def matching(rows, keys):
    return [r for r in rows if all(r.get(k) == v for k, v in keys.items())]


def one(rows, keys, what):
    found = matching(rows, keys)
    if len(found) != 1:
        raise LookupError(f"{len(found)} {what} rows match {json.dumps(keys, sort_keys=True)}")
    return found[0]


def number(value, what):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise LookupError(f"{what} is {value!r}, not a number")
    # A NaN compared as a miss (every comparison false) and an infinity as a hit or a miss, from
    # JSON lines, where the CSV's "nan" was not measured: neither is a measurement.
    if not math.isfinite(value):
        raise LookupError(f"{what} is {value}, not a finite number: no measurement")
    return float(value)


class Rows:
    """A check's rows: bench kernels', bench train's steady rows, and recipe lines by source."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.kernels = json_lines(self.path("bench_kernels.jsonl"))
        if not self.kernels:  # a stored result folder keeps the CSV only
            self.kernels = csv_rows(self.path("bench_kernels.csv"))
        train = json_lines(self.path("throughput.jsonl"))
        if not train:  # a check still running (or cut short) has its bench train logs only
            for name in self.logs("bench_train"):
                train += json_lines(self.path(name))
        self.train = [r for r in train if r.get("impl") == "pneumo" and "measure" not in r]
        recipes = [r for r in train if r.get("impl") == "pneumo" and r.get("measure") == "recipe"]
        # gpu_check.sh tags the tuning-cache pair's lines with their log: bench train's own
        # recipe lines are the untagged ones.
        self.recipes = [r for r in recipes if "log" not in r]
        self.tagged_recipes = [r for r in recipes if "log" in r]

    def path(self, name):
        return os.path.join(self.out_dir, name)

    def holds_any(self):
        """Whether OUT holds any file this reads (rows or not)."""
        return (any(os.path.isfile(self.path(name)) for name in
                    ("bench_kernels.jsonl", "bench_kernels.csv", "throughput.jsonl")) or
                bool(self.logs("bench_")))

    def logs(self, prefix):
        """logs/PREFIX*.log, else the stored copies PREFIX*.txt (a result folder keeps
        logs/bench_recipe_warm.log as bench_recipe_warm.txt)."""
        for folder, suffix in (("logs", ".log"), ("", ".txt")):
            where = os.path.join(self.out_dir, folder)
            names = sorted(os.listdir(where)) if os.path.isdir(where) else []
            found = [os.path.join(folder, n) for n in names
                     if n.startswith(prefix) and n.endswith(suffix)]
            if found:
                return found
        return []

    def recipe_lines(self, log):
        """The recipe lines of one log (OUT/logs/LOG, else its stored copy OUT/LOG's stem.txt), or
        of every bench train run by default."""
        if log is None:
            return self.recipes
        name = os.path.join("logs", log)
        if not os.path.isfile(os.path.join(self.out_dir, name)):
            stored = os.path.splitext(log)[0] + ".txt"
            if not os.path.isfile(os.path.join(self.out_dir, stored)):
                # Only throughput.jsonl came back: its lines tagged with that log.
                return [r for r in self.tagged_recipes if r.get("log") == log]
            name = stored
        return [r for r in json_lines(self.path(name)) if r.get("measure") == "recipe"]


def measured(measure, rows, field=None):
    """The measured number and the device it came from; LookupError says why there is none.
    "relative_to" is another measure (its field, when it names none, this one's): the value is
    divided by it."""
    value, device, field = measured_alone(measure, rows, field)
    if "relative_to" in measure:
        other, _ = measured(measure["relative_to"], rows, field)
        if not other > 0:  # a ratio to 0 or less says nothing (and a negative one flips the sign)
            raise LookupError(f"relative_to's value is {other:.4g}: no ratio to it")
        value /= other
    return value, device


def measured_alone(measure, rows, inherited):
    field = measure.get("field", inherited)
    if "kernels" in measure:
        row = one(rows.kernels, measure["kernels"], "bench kernels")
        if row.get("status") not in (None, "ok"):
            raise LookupError(f"the row's status is {row.get('status')!r}")
        field = field or "median_ms"
        return number(row.get(field), field), str(row.get("device", "")), field
    if "recipe" in measure:
        source = measure.get("log")
        row = one(rows.recipe_lines(source), measure["recipe"],
                  f"recipe ({source})" if source else "recipe")
        field = field or "total_seconds"
        return number(row.get(field), field), str(row.get("backend", "")), field
    if "train" in measure:
        row = one(rows.train, measure["train"], "bench train")
        device = str(row.get("backend", row.get("device", "")))  # the backend's name holds the GPU's
        ops = row.get("ops_ms")
        ops = [o for o in ops if isinstance(o, dict)] if isinstance(ops, list) else []
        if "op" in measure:
            found = [o for o in ops if o.get("op") == measure["op"]]
            if len(found) != 1:
                raise LookupError(f"{len(found)} per-op rows named {measure['op']!r}")
            return number(found[0].get("ms"), "ms"), device, field
        if "ops_matching" in measure:
            if not ops:
                raise LookupError("the row has no per-op table (bench train --layers)")
            pattern = re.compile(measure["ops_matching"])
            found = [o for o in ops if pattern.search(str(o.get("op", "")))]
            if measure.get("aggregate") == "count":
                return float(len(found)), device, field
            if not found:
                raise LookupError(f"no per-op row matches {measure['ops_matching']!r}")
            return sum(number(o.get("ms"), "ms") for o in found), device, field
        field = field or "images_per_second"
        return number(row.get(field), field), device, field
    raise LookupError("the measure names none of kernels, train or recipe")


def verdict(p, value):
    if "at_most" in p:
        return value <= p["at_most"]
    if "at_least" in p:
        return value >= p["at_least"]
    return abs(value - p["equals"]) <= 1e-9


def predicted_text(p):
    for key, words in (("at_most", "<="), ("at_least", ">="), ("equals", "=")):
        if key in p:
            return f"{words} {p[key]:g}"
    return "?"


def is_finite_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def validate(doc):
    problems = []
    if not isinstance(doc, dict) or not isinstance(doc.get("predictions"), list):
        return ["the file needs a list under \"predictions\""]
    for key in ("written", "rule"):
        if not isinstance(doc.get(key), str):
            problems.append(f"\"{key}\" (words) is missing")
    if "device" in doc and not isinstance(doc["device"], str):
        problems.append("\"device\" is not a string (a word of the device's name)")
    problems += [f"unknown key \"{key}\" (known: {', '.join(sorted(FILE_KEYS))})"
                 for key in sorted(set(doc) - FILE_KEYS)]
    seen = set()
    for i, p in enumerate(doc["predictions"]):
        name = p["id"] if isinstance(p, dict) and isinstance(p.get("id"), str) else f"#{i}"
        if not isinstance(p, dict):
            problems.append(f"prediction {name} is not an object")
            continue
        if name in seen:
            problems.append(f"prediction id {name} twice")
        seen.add(name)
        for key, kind in (("id", str), ("claim", str), ("measure", dict)):
            if not isinstance(p.get(key), kind):
                problems.append(f"prediction {name} has no \"{key}\" ({kind.__name__})")
        given = [k for k in COMPARISONS if k in p]
        if len(given) != 1:
            problems.append(f"prediction {name} needs exactly one of {', '.join(COMPARISONS)}")
        elif not is_finite_number(p[given[0]]):
            problems.append(f"prediction {name}: {given[0]} is not a finite number")
        if "before" in p and not is_finite_number(p["before"]):
            problems.append(f"prediction {name}: \"before\" is not a finite number")
        problems += [f"prediction {name}: unknown key \"{key}\" (known: "
                     f"{', '.join(sorted(PREDICTION_KEYS))})" for key in sorted(set(p) - PREDICTION_KEYS)]
        if "device" in p and not isinstance(p["device"], str):
            problems.append(f"prediction {name}: \"device\" is not a string (a word of the "
                            "device's name)")
        m = p.get("measure")
        while isinstance(m, dict):
            problems += [f"prediction {name}: {problem}" for problem in measure_problems(m)]
            m = m.get("relative_to")
    return problems


def measure_problems(m):
    """What is wrong with one measure (not the ones it is relative to)."""
    problems = [f"unknown key \"{key}\" in a measure (known: {', '.join(sorted(MEASURE_KEYS))})"
                for key in sorted(set(m) - MEASURE_KEYS)]
    kinds = [k for k in ("kernels", "train", "recipe") if k in m]
    if len(kinds) != 1 or not isinstance(m[kinds[0]], dict):
        problems.append("a measure names one of kernels, train, recipe, with an object of the "
                        "keys to match")
    if "relative_to" in m and not isinstance(m["relative_to"], dict):
        problems.append("\"relative_to\" is not an object (a measure)")
    for key in ("field", "op", "log"):
        if key in m and not isinstance(m[key], str):
            problems.append(f"\"{key}\" is not a string")
    if "ops_matching" in m:
        if not isinstance(m["ops_matching"], str):
            problems.append("\"ops_matching\" is not a string")
        else:
            try:
                re.compile(m["ops_matching"])
            except re.error as e:
                problems.append(f"\"ops_matching\" is not a regular expression: {e}")
    if "aggregate" in m and m["aggregate"] not in ("sum", "count"):
        problems.append("\"aggregate\" is neither \"sum\" nor \"count\"")
    return problems


def main(argv):
    if any(arg in ("-h", "--help") for arg in argv[1:]):
        print(__doc__)
        return 0
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:  # not JSON, or not UTF-8
        print(f"check_predictions: cannot read {argv[1]}: {e}", file=sys.stderr)
        return 2
    problems = validate(doc)
    if problems:
        for problem in problems:
            print(f"check_predictions: {argv[1]}: {problem}", file=sys.stderr)
        return 2
    if not os.path.isdir(argv[2]):
        print(f"check_predictions: {argv[2]}: "
              f"{'not a folder' if os.path.exists(argv[2]) else 'no such folder'} (OUT_DIR: "
              "the GPU check's output folder)", file=sys.stderr)
        return 2
    rows = Rows(argv[2])
    counts = {"held": 0, "missed": 0, "not measured": 0, "other device": 0}
    lines = []
    for p in doc["predictions"]:
        before = f"{p['before']:g}" if isinstance(p.get("before"), (int, float)) else ""
        try:
            value, device = measured(p["measure"], rows)
            shown = f"{value:.4g}"
            word = p.get("device") or doc.get("device")
            if word and word.lower() not in device.lower():
                result = "other device"
                shown += f" ({device or 'device unknown'})"
            else:
                result = "held" if verdict(p, value) else "missed"
        except LookupError as e:
            result, shown = "not measured", str(e)
        counts[result] += 1
        scope = f"({p['device']})" if p.get("device") else ""
        lines.append(f"| {p['id']} | {p['claim']} | {' '.join(x for x in (before, scope) if x)} | "
                     f"{predicted_text(p)} | {shown} | **{result}** |")
    print(f"{os.path.basename(argv[1])}, written {doc['written']}: {doc['rule']}")
    print()
    print("| id | claim | before | expected | measured | verdict |")
    print("|---|---|---:|---:|---:|---|")
    print("\n".join(lines))
    print()
    print(", ".join(f"{n} {k}" for k, n in counts.items()) + f" of {len(lines)}.")
    if not rows.holds_any():
        print(f"check_predictions: {argv[2]} holds none of the files read (bench_kernels.jsonl or "
              ".csv, throughput.jsonl, logs/bench_*.log or their stored copies bench_*.txt): "
              "nothing was measured", file=sys.stderr)
    return 0


def checked_main(argv):
    """main, with a file of OUT_DIR it cannot read (not UTF-8, a folder by a file's name) said in
    one line, status 2, as an invalid predictions file is."""
    try:
        return main(argv)
    except (OSError, UnicodeDecodeError) as e:
        where = getattr(e, "filename", None)
        print(f"check_predictions: cannot read {where or 'a file of ' + argv[2]}: {e}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(checked_main(sys.argv))
