"""Compositional convolutional kernels: layer algebra, Myrtle architectures, ZCA and the Gram engine.

Gram engine modules (imports run one way, see docs/scaling.md): ``layout`` (block layout, numpy
only) and ``backend`` (the compute-backend protocol and registry) are leaves; ``executors``
(in-process blocks) and ``engine`` (orchestration) build on the layout; ``jax_backend`` and
``cuda`` are the compute backends, ``store`` the Zarr sink and ``distributed`` the Dask executor;
``gram`` is the :func:`gram` front door, which ``layers`` imports for ``Layer.gram``;
``precision`` (numpy only) says which dtype a spec computes in, the pixel range that carries and
the kernel's PSD tolerance (``spec.psd_rtol``, recorded in stores, read by the solvers).
"""
from ._shared.images import validate_images
from .architectures import myrtle
from .backend import Backend, CudaFallbackWarning, register_backend
from .cuda import CudaBackend
from .executors import NonFiniteBlockError
from .gram import gram
from .jax_backend import JaxBackend
from .layers import (AvgPool, Cast, Conv, DirectSum, Gaussian, GlobalAvgPool, Layer, Normalize,
                     Polynomial, Relu, Serial, project, serial)
from .layout import BlockLayout, default_block_size
from .network import empirical_kernel, network
from .preprocess import ZCAWhitening

__all__ = [
    "AvgPool", "Backend", "BlockLayout", "Cast", "Conv", "CudaBackend", "CudaFallbackWarning",
    "DirectSum", "Gaussian", "GlobalAvgPool", "JaxBackend", "Layer", "NonFiniteBlockError", "Normalize", "Polynomial", "Relu",
    "Serial", "ZCAWhitening", "default_block_size", "empirical_kernel", "gram", "myrtle", "network",
    "project", "register_backend", "serial", "validate_images",
]
