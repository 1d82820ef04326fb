"""The API reference: pdoc builds it from the docstrings of the four packages without a warning, and
every public name (each package's ``__all__``) has a docstring on its page, so an undocumented or
unimportable public name fails the suite. Build it yourself with
``python -m pdoc tangentless.kernels tangentless.solvers tangentless.scattering tangentless.benchmarks -o api``."""
import importlib
import inspect
import warnings

import pytest

pdoc = pytest.importorskip("pdoc", reason="pdoc is a test dependency: pip install -e '.[test]'")

PACKAGES = ("tangentless.kernels", "tangentless.solvers", "tangentless.scattering", "tangentless.benchmarks")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*PACKAGES, output_directory=out)
    return out, [w for w in caught if "pdoc" in w.filename]


def test_the_reference_builds_without_warnings(built):
    out, caught = built
    assert not caught, "\n".join(f"{w.category.__name__}: {w.message}" for w in caught)
    assert (out / "index.html").is_file()
    for package in PACKAGES:
        assert (out / (package.replace(".", "/") + ".html")).is_file(), package


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented_on_its_page(built, package):
    out, _ = built
    page = (out / (package.replace(".", "/") + ".html")).read_text()
    module = importlib.import_module(package)
    assert inspect.getdoc(module), f"{package} has no docstring"
    for name in getattr(module, "__all__", []):
        value = getattr(module, name)
        if inspect.ismodule(value):
            continue
        assert inspect.getdoc(value), f"{package}.{name} has no docstring"
        assert f'id="{name}"' in page, f"{package}.{name} is not on its page"
