"""The fused CPU backend "numba": a whole image pair's kernel in cache, one pair per thread.

Between two pools a conv only couples tensor entries with the same pixel offset, so the
(h, w, h, w) tensor of a pair splits along the row offset d1 = k1 - i1 into 2h - 1 independent
*slabs*: for each x row i1, the (i2, k2) matrix K[i1, i2, i1 + d1, k2]. Inside a matrix the
conv's box runs along the diagonal (a fixed flat offset when the matrix has a zero border),
across a slab's rows over neighbouring rows. This backend runs a whole stage (pixel products or
the previous stage's pooled tensor -> convs -> nonlinearities -> pool) slab by slab in two
slab-sized buffers (157 KiB at 32x32 in float32: in L2, every inner loop contiguous) and adds
each slab's pool into the next stage's tensor (512 KiB at 16x16 in float64). The JAX backend's
one-pair-per-step path instead makes several passes over 4 MiB tensors per stage.
:mod:`._fused_cpu_kernels` has the kernels.

Compiled with numba (``parallel=True``: one image pair per thread; ``cache=True``: compiled once
per installation, ~30 s). It runs serial specs of Conv, Relu, Gaussian, Polynomial, Normalize,
AvgPool, GlobalAvgPool and Casts at stage boundaries (every Myrtle architecture);
:meth:`FusedCpuBackend.unsupported` names what else a spec holds (the default backend choice
then takes the JAX backend). Per-image infos (the per-pixel variances) come from the JAX
backend, so both backends see the same norms; float32 stages use the JAX backend's one-square-
root polynomial arc-cosine, float64 stages the exact formula.
"""
from __future__ import annotations

import functools
import importlib.util

import jax
import numpy as np

from ._fused_ops import CONV, GAUSSIAN, NORMALIZE, POLYNOMIAL, RELU
from .backend import register_backend
from .jax_backend import JaxBackend
from .layers import AvgPool, Cast, Conv, Gaussian, GlobalAvgPool, Normalize, Polynomial, Relu, Serial
from .layout import default_block_size

__all__ = ["FusedCpuBackend", "fused_program", "available"]


def available() -> bool:
    """Whether numba imports here and JAX computes on the CPU (the per-image infos' device)."""
    if importlib.util.find_spec("numba") is None:
        return False
    return jax.default_backend() == "cpu"


class FusedProgram:
    """A spec as stages for the fused kernel.

    stages: int64 (S, 8) rows (h, w, pool_h, pool_w, float64?, first op, end op, conv radius);
    pool (0, 0) for the last stage, whose size must be 1x1. ops: float64 (O, 3) rows (code,
    parameter, map slot). slots: per pointwise layer, (layer index in the spec, h, w, offset in
    the per-image maps).
    """

    def __init__(self, stages, ops, slots):
        self.stages = np.asarray(stages, dtype=np.int64).reshape(-1, 8)
        self.ops = np.asarray(ops, dtype=np.float64).reshape(-1, 3)
        self.slots = tuple(slots)


def _pointwise_code(layer) -> tuple[int, float]:
    """(op code, parameter) of a nonlinearity or Normalize."""
    if isinstance(layer, Gaussian):
        return GAUSSIAN, float(layer.gamma)
    if isinstance(layer, Polynomial):
        return POLYNOMIAL, float(layer.degree)
    return (RELU if isinstance(layer, Relu) else NORMALIZE), 0.0


def _flat_layers(spec):
    return spec.layers if isinstance(spec, Serial) else (spec,)


@functools.lru_cache(maxsize=64)
def fused_program(spec, image_shape: tuple[int, int, int]) -> FusedProgram | str:
    """The :class:`FusedProgram` of ``spec`` on images of shape (H, W, C), or why it has none."""
    h, w = image_shape[:2]
    dtype = spec.input_dtype
    stages: list = []
    ops: list = []
    slots: list = []
    stage_ops: list[tuple[float, float, float]] = []
    offset = 0

    def close(pool_h, pool_w):
        radius = max([int(p) for c, p, _ in stage_ops if c == CONV], default=0)
        stages.append((h, w, pool_h, pool_w, dtype == "float64", len(ops), len(ops) + len(stage_ops),
                       radius))
        ops.extend(stage_ops)
        stage_ops.clear()

    for index, layer in enumerate(_flat_layers(spec)):
        if isinstance(layer, Cast):
            if stage_ops:
                return "a Cast inside a stage (fused kernel: Casts only at the start or right after a pool)"
            dtype = layer.dtype
        elif isinstance(layer, Conv):
            if layer.size > 1:
                stage_ops.append((CONV, layer.size // 2, -1))
        elif isinstance(layer, (Relu, Gaussian, Polynomial, Normalize)):
            stage_ops.append((*_pointwise_code(layer), len(slots)))
            slots.append((index, h, w, offset))
            offset += h * w
        elif isinstance(layer, (AvgPool, GlobalAvgPool)):
            pool_h, pool_w = (h, w) if isinstance(layer, GlobalAvgPool) else (layer.window,) * 2
            if h % pool_h or w % pool_w:
                return f"AvgPool({pool_h}) of a {h}x{w} map"
            close(pool_h, pool_w)
            h, w = h // pool_h, w // pool_w
        else:
            return f"a {type(layer).__name__} layer (fused kernel: serial Conv, Relu, Gaussian, " \
                   "Polynomial, Normalize, AvgPool, GlobalAvgPool, Cast)"
    if (h, w) != (1, 1):
        return f"the spec ends at {h}x{w} maps, not 1x1"
    close(0, 0)
    return FusedProgram(stages, ops, slots)


def image_maps(program: FusedProgram, infos, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(sqrt(n), 1/sqrt(n) or 0 where n = 0), each (count, total map entries) float64, from the JAX
    backend's infos of ``count`` images (per layer; variances (count, 1, h, w) for the pointwise
    layers)."""
    columns = [np.zeros((count, 0))]
    for index, h, w, _ in program.slots:
        n = np.asarray(infos[index], dtype=np.float64).reshape(-1, h * w)
        columns.append(n)
    n = np.concatenate(columns, axis=1)
    positive = n > 0
    root = np.sqrt(np.where(positive, n, 0.0))
    inverse = np.where(positive, 1.0 / np.where(positive, root, 1.0), 0.0)
    return root, inverse


class FusedCpuBackend:
    """Gram backend "numba": the fused offset-slab kernel on the CPU (module docstring)."""
    name = "numba"

    def __init__(self):
        self._jax = JaxBackend()

    def unsupported(self, spec, image_shape) -> str | None:
        if importlib.util.find_spec("numba") is None:
            return "numba is not installed"
        program = fused_program(spec, tuple(image_shape))
        return program if isinstance(program, str) else None

    def self_info(self, spec, x: np.ndarray):
        program = _supported_program(spec, x.shape[1:])
        root, inverse = image_maps(program, self._jax.self_info(spec, x), len(x))
        return {"root64": root, "inverse64": inverse, "root32": root.astype(np.float32),
                "inverse32": inverse.astype(np.float32)}

    def compute_block(self, spec, x, y, info_x, info_y) -> np.ndarray:
        from ._fused_cpu_kernels import fused_block
        program = _supported_program(spec, x.shape[1:])
        out = np.empty((len(x), len(y)))
        channels_first = lambda images: np.ascontiguousarray(np.moveaxis(images, -1, 1))  # noqa: E731
        fused_block(channels_first(x), channels_first(y), info_x["root32"], info_x["inverse32"],
                    info_y["root32"], info_y["inverse32"], info_x["root64"], info_x["inverse64"],
                    info_y["root64"], info_y["inverse64"], program.stages, program.ops,
                    _slot_offsets(program), out)
        return out

    def preferred_block_size(self, spec, image_shape) -> int:
        return default_block_size(*image_shape[:2])


def _supported_program(spec, image_shape) -> FusedProgram:
    """The :class:`FusedProgram` of ``spec`` on images (H, W, C); ValueError with the reason when
    the numba backend cannot compute it."""
    program = fused_program(spec, tuple(image_shape))
    if isinstance(program, str):
        raise ValueError(f"the numba backend cannot compute this spec: {program}")
    return program


def _slot_offsets(program: FusedProgram) -> np.ndarray:
    return np.asarray([offset for *_, offset in program.slots] or [0], dtype=np.int64)


register_backend("numba", FusedCpuBackend, available=available, priority=0.5)
