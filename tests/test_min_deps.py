"""The CI job of the minimum dependencies (.ci/min_deps/run) installs pins derived from
pyproject.toml's lower bounds by .ci/min_deps/pins.py: every runtime dependency has one, and the pins
are exactly those bounds."""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PINS = ROOT / ".ci" / "min_deps" / "pins.py"


def _pins_module():
    spec = importlib.util.spec_from_file_location("min_deps_pins", PINS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_dependency_is_pinned_at_its_lower_bound():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = subprocess.run([sys.executable, str(PINS), str(ROOT / "pyproject.toml")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [d.replace(">=", "==") for d in dependencies]
    assert "dask[distributed]==2022.12.1" in out  # extras kept


def test_pins_keep_extras_and_ignore_upper_bounds():
    pins = _pins_module().minimum_pins(["a>=1.2", "b[x, y] >= 2.0, < 3", "c<4,>=0.1"])
    assert pins == ["a==1.2", "b[x, y]==2.0", "c==0.1"]


@pytest.mark.parametrize("requirement", ["numpy", "numpy<3", "numpy==2.0", "numpy>2.0",
                                         "numpy>=2.0; python_version>'3.11'", "numpy>=1,>=2"])
def test_a_dependency_without_one_plain_lower_bound_is_refused(requirement):
    with pytest.raises(ValueError, match="without one plain '>=' lower bound: " + requirement.split(";")[0]):
        _pins_module().minimum_pins(["scipy>=1.13", requirement])


def test_the_command_says_what_is_wrong(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["numpy>=2", "zarr"]\n')
    out = subprocess.run([sys.executable, str(PINS), str(tmp_path / "pyproject.toml")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.strip() == "pins.py: dependencies without one plain '>=' lower bound: zarr"
