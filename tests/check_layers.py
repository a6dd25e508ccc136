#!/usr/bin/env python3
"""The layer rule of ../shared/README.md ("Layers"), checked on every #include "x/..." of
our modules: common includes nothing of ours; config only common; storage (the SQLite and
Redis connections receipts and accounts share) only common and config; router and
providers only common and config; receipts and accounts only common, config and storage
(never each other); server anything.

  check_layers.py [ROOT]     scan ROOT (default: the repository); exit 1 and print
                             file:line and the rule for every violation
  check_layers.py --self-test  build a tree with one violation per rule in a temp dir
                             and check that each is reported (and a clean tree is not)
"""
import re
import sys
import tempfile
from pathlib import Path

# module -> the modules it may include besides itself (None: anything).
ALLOWED = {
    "common": set(),
    "config": {"common"},
    "storage": {"common", "config"},
    "router": {"common", "config"},
    "providers": {"common", "config"},
    "telemetry": {"common", "config"},
    "receipts": {"common", "config", "storage"},
    "accounts": {"common", "config", "storage"},
    "server": None,
}
RULES = {
    "common": "common includes nothing of ours",
    "config": "config includes only common",
    "storage": "storage includes only common and config",
    "router": "router includes only common and config",
    "providers": "providers includes only common and config",
    "telemetry": "telemetry includes only common and config",
    "receipts": "receipts includes only common, config and storage",
    "accounts": "accounts includes only common, config and storage",
}
SOURCE_SUFFIXES = {".h", ".hpp", ".cpp", ".cc"}
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"/]+)/[^"]*"')


def violations(root: Path):
    found = []
    for module, allowed in ALLOWED.items():
        if allowed is None or not (root / module).is_dir():
            continue
        for path in sorted((root / module).rglob("*")):
            if path.suffix not in SOURCE_SUFFIXES or not path.is_file():
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                target = m.group(1)
                # Only our own modules are layered; a quoted third-party path is not ours.
                if target == module or target not in ALLOWED or target in allowed:
                    continue
                found.append(f"{path.relative_to(root)}:{number}: includes {target}/: {RULES[module]}")
    return found


def self_test() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            "common/a.h": '#include "config/config.h"\n',
            "config/config.h": '#include "common/a.h"\n#include "router/x.h"\n',
            "router/x.h": '#include "config/config.h"\n#include "providers/y.h"\n',
            "providers/y.h": '#include "common/a.h"\n  #  include "receipts/z.h"\n',
            "receipts/z.h": '#include "server/s.h"\n',
            "accounts/k.cpp": '#include "router/x.h"\n',
            "storage/r.h": '#include "receipts/z.h"\n',
            "server/s.h": '#include "router/x.h"\n#include "accounts/k.h"\n',
        }
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        got = violations(root)
        want = [
            "accounts/k.cpp:1: includes router/",
            "common/a.h:1: includes config/",
            "config/config.h:2: includes router/",
            "providers/y.h:2: includes receipts/",
            "receipts/z.h:1: includes server/",
            "router/x.h:2: includes providers/",
            "storage/r.h:1: includes receipts/",
        ]
        prefixes = sorted(v.split("/: ")[0] + "/" for v in got)
        if prefixes != want:
            print("self-test failed: expected\n  " + "\n  ".join(want) + "\ngot\n  " + "\n  ".join(got))
            return 1
        for name in ("common/a.h", "config/config.h", "router/x.h", "providers/y.h", "receipts/z.h", "accounts/k.cpp",
                     "storage/r.h"):
            (root / name).unlink()
        if violations(root):
            print("self-test failed: a tree with only server/ reported violations")
            return 1
    print("self-test passed: 7 violations found, one per rule, none in a clean tree")
    return 0


def main(argv) -> int:
    if len(argv) > 1 and argv[1] == "--self-test":
        return self_test()
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    found = violations(root)
    for v in found:
        print(v)
    if found:
        print(f"{len(found)} layer violation(s); the layers are in ../shared/README.md")
        return 1
    print("layers ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
