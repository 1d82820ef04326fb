"""tangentless: theory-grounded baselines for image classification (compositional kernels,
scattering and the solvers that fit them).

Packages: :mod:`tangentless.kernels` (kernels and the Gram engine), :mod:`tangentless.solvers`,
:mod:`tangentless.scattering`, :mod:`tangentless.benchmarks` (datasets, experiments and the
``tangentless`` command) and :mod:`tangentless.csrc` (CUDA sources). ``tangentless.__version__`` is
the installed distribution's version, whose one source is pyproject.toml; it is read on first access
(importing :mod:`importlib.metadata` costs more than the command line's parser).

This file is the folder ``toplevel/`` of the repository, not ``tangentless/``, so that a checkout's
root never shadows an installed tangentless on ``sys.path``.
"""


def __getattr__(name: str):
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import version
    globals()["__version__"] = value = version(__name__)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"__version__"})
