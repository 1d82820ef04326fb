"""Compute backends of the Gram engine: the :class:`Backend` protocol and the one registry of
backends by name.

In ``tangentless.kernels`` a *backend* is the object that evaluates Gram blocks: "jax"
(:class:`~tangentless.kernels.jax_backend.JaxBackend`), "cuda"
(:class:`~tangentless.kernels.cuda.CudaBackend`), "numba"
(:class:`~tangentless.kernels.fused_cpu.FusedCpuBackend`), or any object with the protocol's
methods. (The solvers' ``backend=`` is another thing: the linear-algebra library they run on.)

Backends register themselves here when their module is imported. The built-in ones
(:data:`BUILT_IN`) import JAX, which ``import tangentless.kernels`` leaves out: the registry imports
their modules by name when it is first read, so a name resolves however the caller came here (a
submodule imported directly, or a Dask worker unpickling a task); no module here imports them.
"""
from __future__ import annotations

import dataclasses
import importlib
import threading
import warnings
from typing import Any, Callable, Protocol

import numpy as np

__all__ = ["Backend", "CudaFallbackWarning", "FALLBACK_BACKEND", "register_backend",
           "backend_names", "create_backend", "backend_name", "backend_label", "resolve_backend"]

#: the registered backend that runs every spec, used where another one cannot
FALLBACK_BACKEND = "jax"


class CudaFallbackWarning(UserWarning):
    """A backend (in practice the CUDA one) cannot run a spec: the Gram engine used the JAX
    backend instead; the message says why."""


class Backend(Protocol):
    """What the Gram engine asks of a compute backend.

    ``self_info`` and ``compute_block`` are required. ``name`` (recorded in stores; a registered
    name lets Dask workers rebuild the backend instead of unpickling it), ``unsupported`` (None:
    runs every spec) and ``preferred_block_size`` (None: :func:`~.layout.default_block_size`)
    are optional for backends passed as objects; the built-in ones have all five.
    """
    name: str

    def self_info(self, spec: Any, x: np.ndarray) -> Any:
        """Per-image information for the images x (B, H, W, C): any pytree (the engine passes it
        back to ``compute_block`` unchanged)."""

    def compute_block(self, spec: Any, x: np.ndarray, y: np.ndarray, info_x: Any, info_y: Any) -> np.ndarray:
        """The (Bx, By) float64 kernel block of images x (Bx, H, W, C) and y (By, H, W, C)."""

    def unsupported(self, spec: Any, image_shape: tuple[int, int, int]) -> str | None:
        """Why this backend cannot run ``spec`` on images of shape (H, W, C), or None."""

    def preferred_block_size(self, spec: Any, image_shape: tuple[int, int, int]) -> int:
        """Images per block on this backend for ``spec`` and images of shape (H, W, C)."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    factory: type
    available: Callable[[], bool]
    priority: float


_REGISTRY: dict[str, _Entry] = {}
#: the built-in backends' modules, in registration order; each registers its backend on import
BUILT_IN = (".jax_backend", ".fused_cpu", ".cuda")
_built_in_loaded = False
_LOADING = threading.RLock()


def _registry() -> dict[str, _Entry]:
    """The registry, with the built-in backends (their modules imported on the first call). A name
    registered before that call keeps its entry, as it would over an already-registered built-in."""
    global _built_in_loaded
    with _LOADING:
        if not _built_in_loaded:
            earlier = dict(_REGISTRY)
            for module in BUILT_IN:
                importlib.import_module(module, __package__)
            _REGISTRY.update(earlier)
            _built_in_loaded = True
    return _REGISTRY


def register_backend(name: str, factory: type, *, available: Callable[[], bool] = lambda: True,
                     priority: float = 0) -> None:
    """Make ``backend=name`` build ``factory()`` (the backend's class, called without arguments;
    its objects are then recorded and sent to Dask workers by ``name``). The default backend
    (``backend=None``) is the available one of highest ``priority``; ``available()`` says whether
    it can run here."""
    _REGISTRY[name] = _Entry(factory, available, priority)


def backend_names() -> list[str]:
    """The registered backend names, in registration order."""
    return list(_registry())


def create_backend(name: str):
    """A new backend object for the registered ``name``; ValueError naming the choices otherwise."""
    registry = _registry()
    if not isinstance(name, str) or name not in registry:
        choices = ", ".join(repr(n) for n in registry)
        raise ValueError(f"backend must be None, {choices} or a backend object; got {name!r}")
    return registry[name].factory()


def backend_name(backend) -> str | None:
    """The registered name of a backend object of a registered class, else None."""
    return next((name for name, entry in _registry().items() if type(backend) is entry.factory), None)


def backend_label(backend) -> str:
    """How stores record a backend: its registered name, else its class's qualified name."""
    return backend_name(backend) or f"{type(backend).__module__}.{type(backend).__qualname__}"


def _default_backend(spec, image_shape):
    """The available registered backend of highest priority that runs ``spec`` (the JAX one runs
    every spec)."""
    ranked = sorted(((entry.priority, name) for name, entry in _registry().items()
                     if entry.available()), reverse=True)
    for _, name in ranked:
        backend = create_backend(name)
        check = getattr(backend, "unsupported", None)
        if check is None or not check(spec, tuple(image_shape)):
            return backend
    return create_backend(FALLBACK_BACKEND)


def resolve_backend(backend, spec, image_shape):
    """The backend object for ``gram``'s ``backend=``: None (the default: the available registered
    backend of highest priority that runs the spec: "cuda" where CuPy sees a GPU, "numba" on a
    CPU for the specs its fused kernel runs, else "jax"), a registered name, or a backend object.
    A named or given backend whose ``unsupported(spec, image_shape)`` gives a reason is replaced
    by the JAX backend, with a :class:`CudaFallbackWarning` that says why."""
    if backend is None:
        return _default_backend(spec, image_shape)
    if isinstance(backend, str):
        backend = create_backend(backend)
    check = getattr(backend, "unsupported", None)
    reason = check(spec, tuple(image_shape)) if check is not None else None
    if reason:
        warnings.warn(f"{type(backend).__name__} cannot run this spec ({reason}); using the JAX backend",
                      CudaFallbackWarning, stacklevel=3)
        return create_backend(FALLBACK_BACKEND)
    return backend
