#!/usr/bin/env python3
"""pneumo against PyTorch from the JSON lines the GPU check gathers (throughput.jsonl): one
Markdown table of images/s per configuration and batch, the recipe's end-to-end seconds, and the
ratios issue #15 asks about (pneumo's best over the best PyTorch configuration, and over PyTorch
eager fp32).

    scripts/throughput_table.py throughput.jsonl [more.jsonl ...]

Lines it reads: `pneumo bench train` rows ({"impl": "pneumo", "batch", "images_per_second",
"precision", "augment", "cudnn_only", "deterministic", "fused_block_tails", "cuda_graph",
"graph_engines"}), its recipe line ({"impl": "pneumo",
"measure": "recipe", "total_seconds"}), and `profiling/torch_reference.py`'s rows
({"impl": "torch-<config>", "batch", "images_per_second"}) and recipe lines
({"measure": "recipe", "recipe_seconds"}). Other lines (profiles, layers) are passed over. Where a
configuration was measured more than once, the last line counts. A line of those kinds whose
fields have the wrong types (a batch that is not an integer, a speed or seconds that are not a
finite positive number, an impl or precision that is not a string, a switch such as "augment"
that is not true or false) is skipped with a warning on stderr naming its file and line; bytes
that are not UTF-8 make a line no JSON reads, passed over.
"""
import json
import math
import sys


def pneumo_name(row, recipe=False):
    """A pneumo bench row's configuration, in words. `bench train` times its steps op by op even
    under --cuda-graph (only the recipe's epochs replay graphs), so "steps as CUDA graphs" names
    recipe rows only; a recipe row also names a validation batch other than its training batch."""
    parts = [row.get("precision", "fp32")]
    if not row.get("augment", True):
        parts.append("no augmentation")
    if row.get("cudnn_only"):
        parts.append("cuDNN only")
    if row.get("deterministic") is False:
        parts.append("fastest algorithms")
    if row.get("fused_block_tails"):
        parts.append("fused block tails")
    if row.get("cuda_graph") and recipe:
        parts.append("steps as CUDA graphs")
    if recipe and row.get("val_batch") not in (None, row.get("batch")):
        parts.append(f"validation batch {row['val_batch']}")
    if row.get("graph_engines"):
        parts.append("graph engines")
    return "pneumo " + ", ".join(parts)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# The configuration switches of a pneumo row: true or false when given ("no" read as true).
SWITCHES = ("augment", "cudnn_only", "deterministic", "fused_block_tails", "cuda_graph",
            "graph_engines")


def type_problem(row):
    """Why a pneumo or PyTorch row cannot be tabulated (a field of the wrong type), or None."""
    if not isinstance(row.get("precision", ""), str):
        return f"\"precision\" is {row['precision']!r}, not a string"
    for switch in SWITCHES:
        if switch in row and not isinstance(row[switch], bool):
            return f"\"{switch}\" is {row[switch]!r}, not true or false"
    if row.get("measure") == "recipe":
        key = "total_seconds" if row["impl"] == "pneumo" else "recipe_seconds"
        if row.get(key) is not None and not (is_number(row[key]) and row[key] > 0):
            return f"\"{key}\" is {row[key]!r}, not a positive number"
    elif "images_per_second" in row:
        if not isinstance(row.get("batch"), int) or isinstance(row.get("batch"), bool):
            return f"\"batch\" is {row.get('batch')!r}, not an integer"
        if not is_number(row["images_per_second"]) or not row["images_per_second"] > 0:
            return f"\"images_per_second\" is {row['images_per_second']!r}, not a positive number"
    return None


def lines_of(f, path):
    """The file's lines; a read error (a folder by a file's name) ends the script in one line."""
    try:
        yield from f
    except OSError as error:
        sys.exit(f"throughput_table: cannot read {path}: {error.strerror or error}")


def read_rows(paths):
    speed, recipe = {}, {}  # name -> {batch: images/s}; name -> seconds
    # A --cuda-graph run's steps are the same op-by-op measurement as a plain run's: its speeds
    # fill only the cells no plain run did.
    graph_runs = {}
    for path in paths:
        try:
            f = open(path, encoding="utf-8", errors="replace")  # a damaged line is skipped below
        except OSError as error:
            sys.exit(f"throughput_table: cannot read {path}: {error.strerror}")
        with f:
            for number, line in enumerate(lines_of(f, path), 1):
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                impl = row.get("impl", "")
                if "profile" in row or not impl:
                    continue
                problem = (f"\"impl\" is {impl!r}, not a string" if not isinstance(impl, str)
                           else type_problem(row)
                           if impl == "pneumo" or impl.startswith("torch-") else None)
                if problem:
                    print(f"throughput_table: {path}:{number}: {problem}; line skipped",
                          file=sys.stderr)
                    continue
                if impl == "pneumo":
                    name = pneumo_name(row, recipe=row.get("measure") == "recipe")
                    if row.get("measure") == "recipe":
                        recipe[name] = row.get("total_seconds")
                    elif "images_per_second" in row:
                        into = graph_runs if row.get("cuda_graph") else speed
                        into.setdefault(name, {})[row["batch"]] = row["images_per_second"]
                elif impl.startswith("torch-"):
                    name = f"PyTorch {impl[len('torch-'):]} ({row.get('precision', 'fp32')})"
                    if row.get("measure") == "recipe":
                        recipe[name] = row.get("recipe_seconds")
                    elif "images_per_second" in row:
                        speed.setdefault(name, {})[row["batch"]] = row["images_per_second"]
    for name, by_batch in graph_runs.items():
        for batch, value in by_batch.items():
            speed.setdefault(name, {}).setdefault(batch, value)
    return speed, recipe


# torch_reference.py's configurations (its CONFIGS), weakest first: "the best PyTorch" is the
# best of all of them.
TORCH_CONFIGS = ["eager", "eager-bf16", "compile", "compile-bf16", "compile-graphs-bf16",
                 "compile-max-bf16"]


def table(speed, recipe):
    batches = sorted({b for by_batch in speed.values() for b in by_batch})
    names = list(dict.fromkeys(list(speed) + list(recipe)))
    out = ["| configuration | " + " | ".join(f"images/s, batch {b}" for b in batches) +
           " | recipe end to end, s |",
           "|---|" + "---:|" * (len(batches) + 1)]
    for name in names:
        cells = [f"{speed.get(name, {})[b]:,.0f}" if b in speed.get(name, {}) else ""
                 for b in batches]
        seconds = recipe.get(name)
        end_to_end = f"{seconds:.2f}" if seconds is not None else ""
        out.append(f"| {name} | " + " | ".join(cells) + f" | {end_to_end} |")
    lines = ["\n".join(out), ""]
    for b in batches:
        ours = {n: v[b] for n, v in speed.items() if n.startswith("pneumo") and b in v}
        torch = {n: v[b] for n, v in speed.items() if n.startswith("PyTorch") and b in v}
        if not ours or not torch:
            continue
        best_ours = max(ours, key=ours.get)
        best_torch = max(torch, key=torch.get)
        # "The best PyTorch" only when every configuration of torch_reference.py ran at this
        # batch: a budget that cut the compiled ones once made eager fp32 "the best" (2.15x,
        # where compiled bf16, run by hand, gave 0.42x).
        ran = {n.split(" (")[0][len("PyTorch "):] for n in torch}
        missing = [c for c in TORCH_CONFIGS if c not in ran]
        best = "the best PyTorch" if not missing else "the best PyTorch measured"
        line = (f"Batch {b}: {best_ours} {ours[best_ours]:,.0f} images/s is "
                f"{ours[best_ours] / torch[best_torch]:.2f}x {best} ({best_torch}, "
                f"{torch[best_torch]:,.0f}"
                + (f"; not measured: {', '.join(missing)}" if missing else "") + ")")
        eager = [n for n in torch if n.startswith("PyTorch eager (fp32")]
        if eager:
            line += f" and {ours[best_ours] / torch[eager[0]]:.2f}x PyTorch eager fp32"
        lines.append(line + ".")
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    speed, recipe = read_rows(sys.argv[1:])
    if not speed and not recipe:
        sys.exit("throughput_table: no pneumo or PyTorch rows in " + ", ".join(sys.argv[1:]))
    sys.stdout.write(table(speed, recipe))


if __name__ == "__main__":
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main()
