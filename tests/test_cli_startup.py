"""The command line answers --help and argument errors without loading the heavy libraries (JAX,
scikit-learn, matplotlib, ...): its parser is built from light modules, and ``tangentless.kernels``
is a lazy package whose public names import their submodule on first access. Each check runs in a
fresh interpreter, since this test process has long imported everything."""
from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: what neither the parser nor ``import tangentless.kernels`` may load (top-level module names)
HEAVY = ("jax", "jaxlib", "sklearn", "scipy", "matplotlib", "PIL", "zarr", "dask", "optax", "kymatio",
         "tqdm", "numba", "cv2", "skimage", "imagecorruptions")


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; it leaves its result in ``result`` (JSON-able). Returns
    {"result": ..., "heavy": the HEAVY modules loaded, "exit": SystemExit code or None, "stderr"}."""
    script = (
        "import contextlib, io, json, sys\n"
        "result, exit_code, err = None, None, io.StringIO()\n"
        "try:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):\n"
        + "".join(f"        {line}\n" for line in code.splitlines()) +
        "except SystemExit as e:\n"
        "    exit_code = e.code\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "print(json.dumps({'result': result, 'heavy': heavy, 'exit': exit_code,"
        " 'stderr': err.getvalue()}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_building_the_parser_loads_no_heavy_library():
    run = _fresh("from tangentless.benchmarks.cli import build_parser\nbuild_parser()")
    assert run["heavy"] == [], f"building the parser loaded {run['heavy']}"


@pytest.mark.parametrize("argv", [
    ["--help"], ["--version"], ["gram", "--help"], ["quickstart", "--help"], ["fit", "--help"], ["predict", "--help"],
    ["bench", "--help"], ["bench", "small-data", "--help"], ["bench", "architectures", "--help"],
    ["bench", "cifar10", "--help"], ["bench", "imagenet", "--help"], ["bench", "shifts", "--help"],
    ["shifts", "--help"]])
def test_help_loads_no_heavy_library(argv):
    run = _fresh(f"from tangentless.benchmarks.cli import main\nmain({argv!r})")
    assert run["exit"] == 0
    assert run["heavy"] == [], f"{' '.join(argv)} loaded {run['heavy']}"


@pytest.mark.parametrize("argv, message", [
    (["bench", "small-data", "--sizes", "x"], "expected comma-separated integers, got 'x'"),
    (["bench", "small-data", "--methods", "svm"], "unknown method(s) ['svm']"),
    (["gram", "--arch", "myrtle6"], "invalid choice: 'myrtle6'"),
    (["fit", "--set", "kernel.flip"], "expected METHOD.NAME=VALUE"),
    (["shifts", "--seed", "x"], "invalid int value: 'x'"),
    (["bogus"], "invalid choice: 'bogus'")])
def test_argument_errors_load_no_heavy_library(argv, message):
    run = _fresh(f"from tangentless.benchmarks.cli import main\nmain({argv!r})")
    assert run["exit"] == 2 and message in run["stderr"], run["stderr"]
    assert run["heavy"] == [], f"{' '.join(argv)} loaded {run['heavy']}"


def test_importing_kernels_is_lazy_and_every_public_name_resolves():
    run = _fresh("import tangentless.kernels as tk\nresult = sorted(tk.__all__)")
    assert run["heavy"] == [], f"import tangentless.kernels loaded {run['heavy']}"
    import tangentless.kernels as tk
    assert run["result"] == sorted(tk.__all__)
    for name in tk.__all__:
        value = getattr(tk, name)
        assert value is getattr(sys.modules[f"tangentless.kernels{tk._EXPORTS[name]}"], name), name
    assert set(tk.__all__) <= set(dir(tk))
    with pytest.raises(AttributeError, match="has no attribute 'nonexistent'"):
        tk.nonexistent  # noqa: B018


def test_names_shared_with_submodules_stay_the_functions():
    # importing the submodule first binds the module to the package attribute of the same name
    run = _fresh("import tangentless.kernels.gram, tangentless.kernels.network\n"
                 "import tangentless.kernels as tk\n"
                 "from tangentless.kernels import gram, network\n"
                 "result = [callable(f) and f.__module__ for f in (tk.gram, tk.network, gram, network)]")
    assert run["result"] == ["tangentless.kernels.gram", "tangentless.kernels.network"] * 2


def test_type_checking_imports_match_the_lazy_table():
    """The ``if TYPE_CHECKING:`` imports (for type checkers) name exactly the lazy table's modules."""
    import tangentless.kernels as tk
    tree = ast.parse((ROOT / "kernels" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and getattr(node.test, "id", None) == "TYPE_CHECKING")
    imported = {alias.name: "." * node.level + node.module for node in block.body
                for alias in node.names}
    assert imported == tk._EXPORTS


def test_backends_register_without_the_package_import():
    """A direct submodule import (as on a Dask worker) still finds the built-in backends."""
    run = _fresh("from tangentless.kernels.backend import backend_names, create_backend\n"
                 "result = [backend_names(), type(create_backend('jax')).__name__,\n"
                 "          type(create_backend('numba')).__name__]")
    assert run["result"] == [["jax", "numba", "cuda"], "JaxBackend", "FusedCpuBackend"]


def test_a_backend_registered_before_the_built_ins_load_keeps_its_name():
    run = _fresh("from tangentless.kernels.backend import create_backend, register_backend\n"
                 "class Mine: pass\n"
                 "register_backend('jax', Mine)\n"
                 "result = type(create_backend('jax')).__name__")
    assert run["result"] == "Mine"
