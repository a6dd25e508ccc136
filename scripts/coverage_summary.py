#!/usr/bin/env python3
"""Prints the coverage summary of scripts/coverage.sh from gcovr's JSON report.

usage: coverage_summary.py COVERAGE_JSON [MIN_PERCENT]

Per module (top-level directory) line coverage, the total of the five modules issue 9
targets, the least-covered files and the functions no test entered. With MIN_PERCENT, exits
1 if one of the five modules is below it.
"""
import json
import sys
from collections import defaultdict

TARGET_MODULES = ["server", "router", "providers", "config", "receipts"]
SHOWN_MODULES = TARGET_MODULES + ["common"]
LEAST_COVERED_FILES = 15
UNCOVERED_FUNCTIONS_PER_FILE = 12


def pct(covered, total):
    return 100.0 * covered / total if total else 100.0


def main():
    data = json.load(open(sys.argv[1]))
    minimum = float(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None

    per_module = defaultdict(lambda: [0, 0])  # module -> [covered, total]
    per_file = []  # (uncovered, covered, total, path)
    uncovered_functions = defaultdict(list)  # path -> [(line, name)]
    for f in data["files"]:
        path = f["file"]
        module = path.split("/", 1)[0]
        lines = [l for l in f["lines"] if not l.get("gcovr/noncode", False)]
        total = len(lines)
        covered = sum(1 for l in lines if l["count"] > 0)
        per_module[module][0] += covered
        per_module[module][1] += total
        per_file.append((total - covered, covered, total, path))
        for fn in f.get("functions", []):
            if fn.get("execution_count", 0) == 0:
                uncovered_functions[path].append((fn.get("lineno", 0), fn.get("name", "?")))

    print("\nLine coverage per module")
    print(f"  {'module':<12}{'lines':>8}{'covered':>9}{'percent':>9}")
    for module in SHOWN_MODULES:
        covered, total = per_module.get(module, (0, 0))
        print(f"  {module + '/':<12}{total:>8}{covered:>9}{pct(covered, total):>8.1f}%")
    covered = sum(per_module[m][0] for m in TARGET_MODULES)
    total = sum(per_module[m][1] for m in TARGET_MODULES)
    print(f"  {'total (5)':<12}{total:>8}{covered:>9}{pct(covered, total):>8.1f}%"
          "   (server router providers config receipts; target 85%)")

    print(f"\nLeast-covered files (most uncovered lines first, top {LEAST_COVERED_FILES})")
    for uncovered, covered, total, path in sorted(per_file, reverse=True)[:LEAST_COVERED_FILES]:
        print(f"  {path:<40}{uncovered:>5} uncovered of {total:>5}  ({pct(covered, total):5.1f}%)")

    count = sum(len(v) for v in uncovered_functions.values())
    print(f"\nFunctions never entered ({count})")
    for path in sorted(uncovered_functions):
        functions = sorted(uncovered_functions[path])
        print(f"  {path}")
        for line, name in functions[:UNCOVERED_FUNCTIONS_PER_FILE]:
            print(f"    {line:>5}  {name[:110]}")
        if len(functions) > UNCOVERED_FUNCTIONS_PER_FILE:
            print(f"           … and {len(functions) - UNCOVERED_FUNCTIONS_PER_FILE} more (see the HTML report)")

    if minimum is not None:
        below = [m for m in TARGET_MODULES if pct(*per_module.get(m, (0, 0))) < minimum]
        if below:
            print(f"\ncoverage below {minimum:g}% in: {' '.join(below)}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
