"""The public API is type-annotated: every package ships a PEP 561 ``py.typed`` marker, which tells
type checkers to trust the inline annotations, so an unannotated public function would be read as
taking and returning ``Any``. Public API: each name in ``__all__`` of ``tangentless.kernels``,
``tangentless.solvers`` and ``tangentless.scattering`` (and the listed names of
``tangentless.benchmarks.cnn``): its functions, and the public methods (plus ``__init__``) defined
in the body of its classes. Each needs an annotation on every parameter but self/cls/*args/**kwargs,
and a return annotation (optional for ``__init__``)."""
from __future__ import annotations

import importlib
import inspect
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: module -> the public names to check (None: its ``__all__``)
PUBLIC = {
    "tangentless.kernels": None,
    "tangentless.solvers": None,
    "tangentless.scattering": None,
    "tangentless.benchmarks.cnn": ("CNNClassifier", "paper_recipe", "kernel_network", "standard_network", "resnet9"),
}


def _targets(name: str, obj: object) -> list[tuple[str, object]]:
    """(label, function) for a public function, or for each public method (and ``__init__``) defined
    in a public class's body."""
    if inspect.isfunction(obj):
        return [(name, obj)]
    if not inspect.isclass(obj):
        return []
    return [(f"{name}.{attr}", f) for attr, f in vars(obj).items()
            if inspect.isfunction(f) and (not attr.startswith("_") or attr == "__init__")
            # typing.Protocol puts its own __init__ in a protocol class's namespace: not ours
            and f.__module__ != "typing"]


def _missing(f) -> list[str]:
    """What ``f`` lacks: the names of its unannotated parameters, and "return" for no return
    annotation (``__init__`` needs none)."""
    sig = inspect.signature(f)
    missing = [p.name for p in sig.parameters.values()
               if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               and p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty and f.__name__ != "__init__":
        missing.append("return")
    return missing


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_api_is_annotated(module_name):
    module = importlib.import_module(module_name)
    names = PUBLIC[module_name] or module.__all__
    checked, gaps = 0, []
    for name in names:
        for label, f in _targets(name, getattr(module, name)):
            checked += 1
            if missing := _missing(f):
                gaps.append(f"{label}: {', '.join(missing)}")
    assert checked, f"{module_name}: no public functions or methods found"
    assert not gaps, (f"{module_name}: {len(gaps)} public functions/methods lack annotations "
                      "(the package ships py.typed):\n" + "\n".join(gaps))


#: what mypy checks: the library packages, the top level and the CNN module whose names are public
#: above (the rest of tangentless.benchmarks, its CLI and scripts, is the application, unchecked)
TYPE_CHECKED = ["-p", "tangentless.kernels", "-p", "tangentless.solvers", "-p", "tangentless.scattering",
                "-m", "tangentless", "-m", "tangentless.benchmarks.cnn"]


def _source_tree(root: pathlib.Path) -> pathlib.Path:
    """A folder holding ``tangentless/`` laid out as installed (pyproject's package-dir, as
    symlinks into the checkout): mypy reads sources, not an editable install's import hooks."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = root / "tangentless"
    top.mkdir(parents=True)
    for source in (ROOT / package_dir["tangentless"]).glob("*.py"):
        (top / source.name).symlink_to(source)
    for package, folder in package_dir.items():
        parts = package.split(".")
        if len(parts) == 2:   # subpackages of a subpackage come with its folder
            (top / parts[1]).symlink_to(ROOT / folder, target_is_directory=True)
    return root


def test_annotations_type_check(tmp_path):
    """mypy (pyproject's [tool.mypy]) finds no error in the typed API's modules: annotations that
    contradict the code (a float returned as an Array, an Optional indexed) would mislead every
    user whose type checker trusts py.typed."""
    tree = _source_tree(tmp_path / "src")
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                             "--cache-dir", str(tmp_path / "cache"), *TYPE_CHECKED],
                            cwd=tree, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "no issues found" in result.stdout
