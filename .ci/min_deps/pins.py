"""The declared minimum of every runtime dependency, as pip requirements: each ``name>=X`` of
pyproject.toml's ``[project] dependencies`` becomes ``name==X`` (extras kept), so the lower bounds
have one home. A dependency without a ``>=`` lower bound is an error: its minimum could not be
installed, so nobody would know whether it works.

    python3 .ci/min_deps/pins.py pyproject.toml > min-requirements.txt
"""
from __future__ import annotations

import re
import sys
import tomllib

#: name, optional [extras], then the specifiers ("numpy>=1.26", "dask[distributed]>=2025.1,<2027")
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def minimum_pins(dependencies: list[str]) -> list[str]:
    """``name[extras]==X`` for each requirement ``name[extras]>=X,...``; ValueError naming the
    requirements that have no ``>=`` bound."""
    pins, unbounded = [], []
    for requirement in dependencies:
        match = REQUIREMENT.match(requirement)
        specifiers = [s.strip() for s in match.group(3).split(",")] if match else []
        lower = [s[2:].strip() for s in specifiers if s.startswith(">=")]
        if match is None or match.group(4) or len(lower) != 1:
            unbounded.append(requirement)
            continue
        pins.append(f"{match.group(1)}{match.group(2) or ''}=={lower[0]}")
    if unbounded:
        raise ValueError(f"dependencies without one plain '>=' lower bound: {', '.join(unbounded)}")
    return pins


def main(path: str) -> None:
    with open(path, "rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    print("\n".join(minimum_pins(dependencies)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: pins.py PATH/TO/pyproject.toml")
    try:
        main(sys.argv[1])
    except ValueError as error:
        sys.exit(f"pins.py: {error}")
