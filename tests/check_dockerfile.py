#!/usr/bin/env python3
"""The Dockerfile's build stage copies every module the top-level CMakeLists.txt builds.

A module added to CMakeLists.txt (add_subdirectory) but not COPYed into the image makes
`docker build` fail at configure time, and no other test builds the image (no Docker
engine on CI). Exit 1 and name each missing module.

  check_dockerfile.py [ROOT]   (default: the repository)
"""
import re
import sys
from pathlib import Path


def missing(root: Path):
    cmake = (root / "CMakeLists.txt").read_text()
    modules = re.findall(r"^\s*add_subdirectory\(\s*([^\s)]+)\s*\)", cmake, re.M)
    # tests/ is not built in the image (BUILD_TESTING=OFF), except the fake upstream.
    modules = [m for m in modules if m == "tests/fake_upstream" or not m.startswith("tests")]
    copies = re.findall(r"^\s*COPY\s+(?!--from)(\S+)\s+\S+\s*$", (root / "Dockerfile").read_text(), re.M)
    return [m for m in modules if m not in copies]


def main(argv) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    gone = missing(root)
    for m in gone:
        print(f"Dockerfile: the build stage does not COPY {m}/ (CMakeLists.txt builds it)")
    if gone:
        return 1
    print("Dockerfile copies every module")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
