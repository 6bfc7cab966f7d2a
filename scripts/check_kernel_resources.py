#!/usr/bin/env python3
"""Static resource check of pneumo's CUDA kernels (ctest KernelResources; no GPU needed).

Compiles each kernels/*.cu for one architecture with `ptxas -v` and reads, for every kernel,
its registers, stack frame and spills. A stack frame or a spill means local memory: per-thread
arrays indexed at run time, or registers spilled, each access a trip through the L1 cache, which
in a memory-bound kernel costs bandwidth the kernel needs (the fused tails kept their pooling
windows there until 2026-12-04, 80 bytes a thread in every tail kernel, invisible without this
read). The check fails on any kernel with either, except those listed in ALLOWED with the reason.
Prints one CSV row per kernel on stdout.

Usage: check_kernel_resources.py --nvcc NVCC --source-dir DIR [--arch sm_90] [--allow none]
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile

# Kernel name -> why its stack frame is accepted (verified by compiling the pattern alone).
ALLOWED = {
    "augment_batch_kernel": "cosf and sinf of the rotation angle: CUDA's large-argument reduction "
                            "keeps a 32-byte array (the same frame for a kernel of cosf + sinf "
                            "alone); run by one thread per block, once",
}

ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
REGISTERS = re.compile(r"Used (\d+) registers")


def kernel_name(mangled):
    """The kernel's own identifier from its mangled name (the last <length><name> before its
    template or parameter list), without needing c++filt."""
    names = []
    i = 0
    while i < len(mangled):
        match = re.match(r"(\d+)", mangled[i:])
        if match:
            length = int(match.group(1))
            start = i + len(match.group(1))
            word = mangled[start:start + length]
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", word or ""):
                names.append(word)
                i = start + length
                continue
        i += 1
    kernels = [n for n in names if n.endswith("_kernel")]
    return kernels[0] if kernels else (names[-1] if names else mangled)


def compile_report(nvcc, source_dir, source, arch):
    with tempfile.TemporaryDirectory() as tmp:
        command = [nvcc, "-O3", "-DNDEBUG", f"-arch={arch}", "-cubin", "--expt-relaxed-constexpr",
                   "-std=c++17", "-Xptxas", "-v",
                   "-I", os.path.join(source_dir, "include"), "-I", os.path.join(source_dir, "src"),
                   "-I", os.path.join(source_dir, "kernels"), source,
                   "-o", os.path.join(tmp, "out.cubin")]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"check_kernel_resources: {' '.join(command)} failed:\n{result.stderr}")
    rows, current = [], None
    for line in (result.stdout + result.stderr).splitlines():
        entry = ENTRY.search(line)
        if entry:
            current = {"file": os.path.basename(source), "kernel": kernel_name(entry.group(1))}
            continue
        frame = FRAME.search(line)
        if frame and current is not None and "stack" not in current:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(
                int, frame.groups())
            continue
        registers = REGISTERS.search(line)
        if registers and current is not None and "stack" in current:
            current["registers"] = int(registers.group(1))
            rows.append(current)
            current = None
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvcc", required=True)
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--allow", choices=["listed", "none"], default="listed",
                        help="'none': no exceptions (the self-test that the check can fail)")
    args = parser.parse_args()
    sources = sorted(glob.glob(os.path.join(args.source_dir, "kernels", "*.cu")))
    if not sources:
        sys.exit(f"check_kernel_resources: no kernels/*.cu under {args.source_dir}")
    allowed = ALLOWED if args.allow == "listed" else {}
    rows = [row for source in sources
            for row in compile_report(args.nvcc, args.source_dir, source, args.arch)]
    print("file,kernel,registers,stack_bytes,spill_store_bytes,spill_load_bytes")
    failures = []
    for row in rows:
        print(f"{row['file']},{row['kernel']},{row['registers']},{row['stack']},"
              f"{row['spill_stores']},{row['spill_loads']}")
        local = row["stack"] or row["spill_stores"] or row["spill_loads"]
        if local and row["kernel"] not in allowed:
            failures.append(f"{row['file']}: {row['kernel']}: {row['stack']} bytes of stack, "
                            f"{row['spill_stores']} / {row['spill_loads']} bytes of spill stores "
                            "/ loads (local memory)")
    print(f"{len(rows)} kernels from {len(sources)} files, {args.arch}", file=sys.stderr)
    for name, why in allowed.items():
        print(f"allowed: {name}: {why}", file=sys.stderr)
    if failures:
        print("check_kernel_resources: local memory in:\n  " + "\n  ".join(failures),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
