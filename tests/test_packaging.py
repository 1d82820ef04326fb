"""What the distribution declares and ships: one version (pyproject.toml's) behind
``tangentless.__version__`` and ``tangentless --version``."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib

import tangentless

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_attribute_is_pyprojects():
    assert tangentless.__version__ == PYPROJECT["project"]["version"]
    assert "__version__" in dir(tangentless)


def test_version_option_prints_it_and_exits():
    out = subprocess.run([sys.executable, "-m", "tangentless.benchmarks.cli", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"tangentless {PYPROJECT['project']['version']}\n"
