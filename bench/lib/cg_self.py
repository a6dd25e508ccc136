#!/usr/bin/env python3
"""Top functions by SELF (exclusive) Ir of a callgrind out file.

usage: cg_self.py FILE [N]

Why not callgrind_annotate --inclusive=no: for a dump taken while the program runs
(callgrind_control -d), it lists the frames still on the stack (clone, start_thread,
io_context::run, …) with their whole inclusive cost as if it were self cost. Here self
cost is what the file says it is: the cost lines of a function that do not follow a
`calls=` line (those carry the inclusive cost of a call).
"""
import re
import sys
from collections import defaultdict

path = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
names = {"fn": {}, "ob": {}, "fl": {}}
cost = defaultdict(int)
total = 0
fn = ob = "?"
after_calls = False
comp = re.compile(r"^\((\d+)\)(?:\s+(.*))?$")


def resolve(kind, value):
    m = comp.match(value)
    if not m:
        return value
    if m.group(2) is not None:
        names[kind][m.group(1)] = m.group(2)
        return m.group(2)
    return names[kind].get(m.group(1), value)


with open(path, errors="replace") as f:
    for line in f:
        line = line.rstrip("\n")
        if not line:
            continue
        c = line[0]
        if c.isdigit() or c in "+-*":
            if after_calls:
                after_calls = False
                continue
            parts = line.split()
            if len(parts) >= 2:
                v = int(parts[1])
                cost[(fn, ob)] += v
                total += v
            continue
        key, _, val = line.partition("=")
        if key == "fn":
            fn = resolve("fn", val)
        elif key == "ob":
            ob = resolve("ob", val)
        elif key in ("cob",):
            resolve("ob", val)
        elif key in ("cfn", "cfi", "cfl"):
            resolve("fn" if key == "cfn" else "fl", val)
        elif key in ("fl", "fi", "fe"):
            resolve("fl", val)
        elif key == "calls":
            after_calls = True

for (f, o), v in sorted(cost.items(), key=lambda kv: -kv[1])[:top]:
    obj = o.rsplit("/", 1)[-1]
    print(f"{v:>14,} ({100 * v / total:5.2f}%)  {f} [{obj}]")
