"""Kernel ridge solvers: direct (Cholesky), the eigen regularization path with exact leave-one-out,
block coordinate descent and preconditioned CG over block sources (arrays, memmaps, Zarr, kernels
computed on demand), Nystrom / FALKON, and scikit-learn estimators: kernel ridge classification
and regression on precomputed kernels, the compositional kernel as a transformer (images in,
kernel out: ``CompositionalKernel``, for Pipelines) and a classifier on images; they save and load
themselves (``est.save(path)``, ``Cls.load(path)``, arrays + JSON, no pickle). Each solver takes ``backend``: "scipy" (host), "jax" (float64 on JAX's default device)
or None (``default_backend()``: JAX where it sees a GPU, else scipy)."""
from ._backend import default_backend
from .blocks import BlockSource, as_block_source
from .compositional import CompositionalKernel, CompositionalKernelClassifier
from .direct import JitterWarning, NotPositiveDefiniteError, solve_cholesky
from .eigen import EigenPath, eigen_path, loo_errors, psd_eigh
from .estimators import KernelRidgeClassifier, KernelRidgeRegressor, NystromRidgeClassifier
from .iterative import BCDResult, CGResult, bcd, pcg
from .nystrom import nystrom_fit, uniform_centers

__all__ = ["BCDResult", "BlockSource", "CGResult", "CompositionalKernel",
           "CompositionalKernelClassifier", "EigenPath", "JitterWarning", "KernelRidgeClassifier",
           "KernelRidgeRegressor", "NystromRidgeClassifier", "NotPositiveDefiniteError", "as_block_source",
           "bcd", "default_backend", "eigen_path", "loo_errors", "nystrom_fit", "pcg", "psd_eigh",
           "solve_cholesky", "uniform_centers"]
