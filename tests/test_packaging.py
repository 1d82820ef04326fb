"""What the distribution declares and ships: one version (pyproject.toml's) behind
``tangentless.__version__`` and ``tangentless --version``; the LICENSE file of the declared license;
a PEP 561 ``py.typed`` marker in every package, shipped as package data."""
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


def test_license_file_is_the_declared_license():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in text
    # PEP 639: with a license expression, no license classifier
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


def test_every_package_ships_a_py_typed_marker():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert "py.typed" in setuptools["package-data"]["*"]
    missing = [package for package in setuptools["packages"]
               if not (ROOT / setuptools["package-dir"][package] / "py.typed").is_file()]
    assert not missing, f"no py.typed in {missing}"
    assert "Typing :: Typed" in PYPROJECT["project"]["classifiers"]
