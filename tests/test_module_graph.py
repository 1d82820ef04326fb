"""The architecture's one-way rule, checked on the source: every ``import`` (module-level or inside a
function) of every module, read with ``ast``, forms a graph with no cycle; packages depend only
downwards (kernels <- solvers <- scattering <- benchmarks); the internal base ``kernels._shared``
imports nothing else of tangentless; function-local imports in ``kernels`` exist only to keep an
optional dependency out of ``import tangentless.kernels``, and that import really loads none."""
from __future__ import annotations

import ast
import functools
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: package order: a package may import itself and the ones before it
ORDER = ("tangentless.kernels", "tangentless.solvers", "tangentless.scattering", "tangentless.benchmarks")
#: the dependencies that ``import tangentless.kernels`` must not load
OPTIONAL = ("cupy", "dask", "dask_cuda", "distributed", "numba", "zarr")


def _modules() -> dict[str, pathlib.Path]:
    """{module name: source file} of every tangentless module, from pyproject's package-dir."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir = config["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in package_dir.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


MODULES = _modules()


def _package_of(module: str) -> str:
    return module if module in MODULES and MODULES[module].stem == "__init__" else module.rpartition(".")[0]


@functools.cache
def _imports(module: str) -> list[tuple[str, bool]]:
    """[(imported name, inside a function)] for every import statement of ``module``; relative
    imports resolved, ``from pkg import sub`` resolved to the submodule where it is one."""
    tree = ast.parse(MODULES[module].read_text())
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in local) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(module).split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else target, id(node) in local))
    return found


@functools.cache
def _internal_edges() -> dict[str, set[str]]:
    """{module: tangentless modules it imports}, the implicit parent-package imports left out."""
    edges = {}
    for module in MODULES:
        targets = set()
        for name, _ in _imports(module):
            while name and name not in MODULES:  # "tangentless.kernels.layers.Serial" -> the module
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        edges[module] = targets
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_module_graph_has_no_cycle():
    assert len(MODULES) > 30, "the source walk found too few modules"
    assert _cycle(_internal_edges()) is None, " -> ".join(_cycle(_internal_edges()))


def test_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(edges) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _rank(module: str) -> int:
    return next(i for i, p in enumerate(ORDER) if module == p or module.startswith(p + "."))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_packages_depend_only_downwards(module):
    if module.startswith("tangentless.csrc"):
        return
    upward = sorted(t for t in _internal_edges()[module]
                    if not t.startswith("tangentless.csrc") and _rank(t) > _rank(module))
    assert not upward, f"{module} imports {upward}, above it in {ORDER}"


def test_shared_base_imports_nothing_else_of_tangentless():
    for module, targets in _internal_edges().items():
        if module.startswith("tangentless.kernels._shared"):
            outside = sorted(t for t in targets if not t.startswith("tangentless.kernels._shared"))
            assert not outside, f"{module} imports {outside}"


def _loads_optional(module: str) -> bool:
    """Whether ``module`` imports an optional dependency at its top level."""
    return any(name.split(".")[0] in OPTIONAL for name, inside in _imports(module) if not inside)


def test_function_local_imports_in_kernels_only_defer_optional_dependencies():
    for module in MODULES:
        if not module.startswith("tangentless.kernels"):
            continue
        for name, inside in _imports(module):
            if not inside:
                continue
            target = name
            while target and target not in MODULES and target.startswith("tangentless"):
                target = target.rpartition(".")[0]
            optional = (name.split(".")[0] in OPTIONAL
                        or (target in MODULES and _loads_optional(target)))
            assert optional, (f"{module} imports {name} inside a function; only imports that keep "
                              f"{', '.join(OPTIONAL)} out of `import tangentless.kernels` may be local")


def test_importing_kernels_loads_no_optional_dependency():
    code = ("import sys, tangentless.kernels; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import tangentless.kernels loaded {out.stdout.strip()}"
