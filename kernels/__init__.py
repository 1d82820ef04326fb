"""Compositional convolutional kernels: layer algebra, Myrtle architectures, ZCA and the Gram engine.

Gram engine modules (imports run one way, see docs/scaling.md): ``layout`` (block layout, numpy
only) and ``backend`` (the compute-backend protocol and registry) are leaves; ``executors``
(in-process blocks) and ``engine`` (orchestration) build on the layout; ``jax_backend`` and
``cuda`` are the compute backends, ``store`` the Zarr sink and ``distributed`` the Dask executor;
``gram`` is the :func:`gram` front door, which ``layers`` imports for ``Layer.gram``;
``precision`` (numpy only) says which dtype a spec computes in, the pixel range that carries and
the kernel's PSD tolerance (``spec.psd_rtol``, recorded in stores, read by the solvers);
``cache`` (:class:`GramCache`) keeps kernel values in memory by image content, for searches that
ask for overlapping Gram matrices.

The package is lazy (PEP 562): ``import tangentless.kernels`` (and so every import of a submodule,
e.g. ``tangentless.kernels._shared.defaults`` for the command line's parser) loads neither JAX nor
scikit-learn; each public name imports the submodule that defines it on first access
(``from tangentless.kernels import myrtle``, ``tangentless.kernels.gram``). The built-in backends
register themselves when the registry is first read (:mod:`.backend`).
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

#: each public name -> the submodule (relative to this package) that defines it
_EXPORTS = {
    "validate_images": "._shared.images",
    "myrtle": ".architectures",
    "Backend": ".backend", "CudaFallbackWarning": ".backend", "register_backend": ".backend",
    "GramCache": ".cache",
    "CudaBackend": ".cuda",
    "NonFiniteBlockError": ".executors",
    "gram": ".gram",
    "JaxBackend": ".jax_backend",
    **dict.fromkeys(["AvgPool", "Cast", "Conv", "DirectSum", "Gaussian", "GlobalAvgPool", "Layer",
                     "Normalize", "Polynomial", "Relu", "Serial", "project", "serial"], ".layers"),
    "BlockLayout": ".layout", "default_block_size": ".layout",
    "empirical_kernel": ".network", "network": ".network",
    "ZCAWhitening": ".preprocess",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # the same names for type checkers and editors, which do not run __getattr__
    from ._shared.images import validate_images
    from .architectures import myrtle
    from .backend import Backend, CudaFallbackWarning, register_backend
    from .cache import GramCache
    from .cuda import CudaBackend
    from .executors import NonFiniteBlockError
    from .gram import gram
    from .jax_backend import JaxBackend
    from .layers import (AvgPool, Cast, Conv, DirectSum, Gaussian, GlobalAvgPool, Layer, Normalize,
                         Polynomial, Relu, Serial, project, serial)
    from .layout import BlockLayout, default_block_size
    from .network import empirical_kernel, network
    from .preprocess import ZCAWhitening


def __getattr__(name: str):
    """A public name, imported from its submodule on first access (then a plain attribute)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This package's module type. ``gram`` and ``network`` name both a submodule and the function
    it defines; importing the submodule binds the module to the package's attribute of that name,
    which here keeps the function, as an eager ``from .gram import gram`` did."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == f".{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
