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
configuration was measured more than once, the last line counts; a recipe line that says how warm
its start was (pneumo's "tuning_cache" state, PyTorch's "compile_cache") is kept beside the others
of its configuration, its seconds labelled (cold, warm); a recipe of another batch or length than
the recipe's (32, 12 epochs), or with first-call probes, is a configuration of its own. A speed
row timed without warm-up ("warmup": 0) is skipped with a note. Rows from more than one card
(pneumo's "backend", PyTorch's "device") are tabulated, the cards named, but not compared. A
line of those kinds whose fields have the wrong types (a batch that is not an integer, a speed or
seconds that are not a finite positive number, an impl or precision that is not a string, a
switch such as "augment" that is not true or false) is skipped with a warning on stderr naming
its file and line; bytes that are not UTF-8 make a line no JSON reads, passed over.
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
    # A recipe's batch, length and epoch other than the recipe's own, and first-call probes
    # (their events cost time), make another measurement: a cell of its own.
    if recipe:
        parts += recipe_differences(row.get("batch"), row.get("epochs"), row.get("train_images"))
    if recipe and "first_calls" in row:
        parts.append("first-call probes")
    if row.get("graph_engines"):
        parts.append("graph engines")
    return "pneumo " + ", ".join(parts)


def recipe_differences(batch, epochs, train_images):
    """How a recipe line differs from the recipe (batch 32, 12 epochs of 6,586 training images),
    in words; pneumo's and PyTorch's alike (a 2-epoch batch-256 PyTorch line took the 12-epoch
    line's cell)."""
    parts = []
    if batch not in (None, 32):
        parts.append(f"batch {batch}")
    if epochs not in (None, 12):
        parts.append(f"{epochs} epochs")
    if train_images not in (None, 6586):
        parts.append(f"{train_images:,} images an epoch" if isinstance(train_images, int)
                     else f"{train_images} images an epoch")
    return parts


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


def card_of(row):
    """The device a row ran on, as both tools name it ("NVIDIA H200", "CPU"), or None: pneumo
    says it in "backend" ("cuda (NVIDIA H200, sm_90, ...)", "cpu (2 threads, ...)"), PyTorch in
    "device"."""
    if row["impl"] != "pneumo":
        device = row.get("device")
        return device if isinstance(device, str) and device else None
    backend = row.get("backend")
    if not isinstance(backend, str):
        return None
    if backend.startswith("cpu"):
        return "CPU"
    if backend.startswith("cuda (") and "," in backend:
        return backend[len("cuda ("):backend.index(",")]
    return None


def start_of(row):
    """How warm a recipe line's start was ("cold", "warm", ...), or "" where it does not say."""
    state = (row.get("tuning_cache") or {}).get("state") if isinstance(
        row.get("tuning_cache"), dict) else row.get("compile_cache")
    return state if isinstance(state, str) else ""


class Rows:
    """What the lines hold: images/s per configuration and batch, recipe seconds per
    configuration and start, the PyTorch configurations measured per batch, and the cards."""

    def __init__(self):
        self.speed = {}    # name -> {batch: images/s}
        self.recipe = {}   # name -> {start ("" unsaid, "cold", "warm", ...): seconds}
        self.torch_configs = {}  # batch -> torch_reference.py configurations with a speed there
        self.cards = []    # every card named, in order of first appearance


def read_rows(paths):
    rows = Rows()
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
                if impl != "pneumo" and not impl.startswith("torch-"):
                    continue
                card = card_of(row)
                if card and card not in rows.cards:
                    rows.cards.append(card)
                recipe = row.get("measure") == "recipe"
                if impl == "pneumo":
                    name = pneumo_name(row, recipe=recipe)
                    seconds = row.get("total_seconds")
                else:
                    config = impl[len("torch-"):]
                    name = f"PyTorch {config} ({row.get('precision', 'fp32')})"
                    if recipe:
                        other = recipe_differences(row.get("batch"), row.get("recipe_epochs"),
                                                   row.get("recipe_train_images"))
                        name += "".join(f", {part}" for part in other)
                    seconds = row.get("recipe_seconds")
                if recipe:
                    rows.recipe.setdefault(name, {})[start_of(row)] = seconds
                elif "images_per_second" in row and row.get("warmup") == 0:
                    # --warmup 0 (the check's cold/warm recipe runs): a cold step, not a speed.
                    print(f"throughput_table: {path}:{number}: a step timed without warm-up "
                          "(\"warmup\": 0) is a cold start, not a speed; line skipped",
                          file=sys.stderr)
                elif "images_per_second" in row:
                    into = graph_runs if impl == "pneumo" and row.get("cuda_graph") else rows.speed
                    into.setdefault(name, {})[row["batch"]] = row["images_per_second"]
                    if impl != "pneumo":
                        rows.torch_configs.setdefault(row["batch"], set()).add(config)
    for name, by_batch in graph_runs.items():
        for batch, value in by_batch.items():
            rows.speed.setdefault(name, {}).setdefault(batch, value)
    return rows


# torch_reference.py's configurations (its CONFIGS), weakest first: "the best PyTorch" is the
# best of all of them.
TORCH_CONFIGS = ["eager", "eager-bf16", "compile", "compile-bf16", "compile-graphs-bf16",
                 "compile-max-bf16"]


# A recipe cell's starts, in this order; the unsaid ("") alone is printed bare.
STARTS = ["", "cold", "partly warm", "warm", "in memory", "unknown"]


def recipe_cell(by_start):
    if not by_start:
        return ""
    if list(by_start) == [""]:
        return f"{by_start['']:.2f}"
    order = sorted(by_start, key=lambda s: (STARTS.index(s) if s in STARTS else len(STARTS), s))
    return ", ".join(f"{by_start[s]:.2f} {s or 'start unsaid'}" for s in order)


def table(rows):
    speed = rows.speed
    batches = sorted({b for by_batch in speed.values() for b in by_batch})
    names = list(dict.fromkeys(list(speed) + list(rows.recipe)))
    out = ["| configuration | " + " | ".join(f"images/s, batch {b}" for b in batches) +
           " | recipe end to end, s |",
           "|---|" + "---:|" * (len(batches) + 1)]
    for name in names:
        cells = [f"{speed.get(name, {})[b]:,.0f}" if b in speed.get(name, {}) else ""
                 for b in batches]
        out.append(f"| {name} | " + " | ".join(cells) + f" | {recipe_cell(rows.recipe.get(name))} |")
    lines = ["\n".join(out), ""]
    if len(rows.cards) > 1:
        # Speeds from two cards say nothing about the two programs: no ratio is worked out.
        lines.append(f"Rows from {len(rows.cards)} devices ({', '.join(rows.cards)}): not "
                     "compared; give one card's lines.")
        return "\n".join(lines) + "\n"
    if rows.cards:
        lines.append(f"Every row that names its device: {rows.cards[0]}.")
        lines.append("")
    if any(n.startswith("PyTorch") for n in names) and any(
            n.startswith("pneumo") and "no augmentation" not in n for n in names):
        lines.append("pneumo's rows augment every image on the device (rotation, shift, zoom, "
                     "flip) unless they say \"no augmentation\"; PyTorch's never augment.")
        lines.append("")
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
        missing = [c for c in TORCH_CONFIGS if c not in rows.torch_configs.get(b, set())]
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
    rows = read_rows(sys.argv[1:])
    if not rows.speed and not rows.recipe:
        sys.exit("throughput_table: no pneumo or PyTorch rows in " + ", ".join(sys.argv[1:]))
    sys.stdout.write(table(rows))


if __name__ == "__main__":
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    main()
