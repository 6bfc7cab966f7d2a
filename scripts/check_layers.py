#!/usr/bin/env python3
"""Checks that the build's layers call only down their allowed arrows: every symbol a layer's
archive uses from another pneumo layer must be defined in a layer it links (directly or through
the layers those link). Run by ctest (LayerArrows) with the arrows CMake declares:

    check_layers.py [--no-arrows] NM LAYER=ARCHIVE:DEP,DEP ...

e.g. cpu=build/libpneumo_cpu.a:core. Prints each forbidden use (layer, symbol, where it is defined)
and exits 1; exits 0 with a one-line summary when there is none. An archive in which nm finds no
defined symbol, or layers that use nothing of each other, fail too: an nm output that was not
parsed would otherwise pass. --no-arrows drops every arrow, so that every cross-layer use is
forbidden: the check failing where it must (ctest's LayerArrowsSeeAForbiddenUse).
"""
import subprocess
import sys


def symbols(nm, archive, defined):
    flag = "--defined-only" if defined else "--undefined-only"
    out = subprocess.run([nm, "-C", flag, archive], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split(None, 2) if defined else line.split(None, 1)
        if defined and len(parts) == 3 and parts[1] in "TDBRVWu" and parts[1] != "":
            found.add(parts[2])
        elif not defined and len(parts) == 2 and parts[0] == "U":
            found.add(parts[1])
    return found


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    args = sys.argv[1:]
    no_arrows = args[:1] == ["--no-arrows"]
    if no_arrows:
        args = args[1:]
    if not args:
        sys.exit("check_layers: no nm given")
    nm, specs = args[0], args[1:]
    # No layer at all would pass vacuously (a CMake slip that passes none).
    if not specs:
        sys.exit("check_layers: no LAYER=ARCHIVE:DEPS given; nothing to check is a failure")
    layers = {}
    for spec in specs:
        name, rest = spec.split("=", 1)
        archive, _, deps = rest.partition(":")
        layers[name] = (archive, [] if no_arrows else [d for d in deps.split(",") if d])
    defined = {name: symbols(nm, archive, True) for name, (archive, _) in layers.items()}
    for name, (archive, _) in layers.items():
        if not defined[name]:
            sys.exit(f"check_layers: nm found no defined symbol in {archive} ({name})")

    def reachable(name, seen=None):
        seen = set() if seen is None else seen
        for dep in layers[name][1]:
            if dep not in seen:
                seen.add(dep)
                reachable(dep, seen)
        return seen

    problems = followed = 0
    for name, (archive, _) in layers.items():
        allowed = reachable(name) | {name}
        for symbol in sorted(symbols(nm, archive, False) - defined[name]):
            owners = [other for other in layers if symbol in defined[other]]
            if owners and not any(owner in allowed for owner in owners):
                print(f"{name} uses {symbol}, defined in {', '.join(owners)}: not an arrow of {name}")
                problems += 1
            elif owners:
                followed += 1
    if problems:
        print(f"check_layers: {problems} forbidden uses across layers")
        return 1
    if followed == 0:
        print("check_layers: no layer uses a symbol of another: nm's output was not read")
        return 1
    print(f"check_layers: {len(layers)} layers, {followed} cross-layer uses, each along an arrow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
