"""The CUDA Gram backend: a layer spec compiled into launches of the kernels in ``csrc/``.

Pipeline of one block of image pairs (Bx x By pairs, pair p = a * By + b, tensors (pairs, h, w, h, w)):

1. :func:`plan` cuts a Serial spec into stages. With ``fused=True`` each maximal float32 run of
   convolutions and pointwise layers (the first one starting from the pixels) becomes one
   ``tl_fused_stage`` launch that keeps every pixel-offset plane in shared memory and writes only the
   pooled result; everything else (float64 layers after ``Cast("float64")``, pools that cannot fuse)
   runs as one unfused kernel per layer. Layers the kernels cannot express give a :class:`Fallback`
   with the reason, and ``gram(..., backend="cuda")`` then warns and runs the JAX backend.
2. :func:`execute` runs a plan through a *launcher*: :class:`CupyLauncher` (the GPU, kernels built
   from ``csrc/`` by CuPy at first use) or :class:`HarnessLauncher` (the same kernel bodies run
   serially on the CPU by csrc's host harness, for tests without a GPU).
3. :class:`CudaBackend` is the compute backend "cuda" of the Gram engine (:mod:`.backend`). Per-image infos come from the JAX self pass
   (n images, not n^2 pairs) together with the images themselves, both on JAX's device: the engine
   slices them per block on the device, and CuPy reads them through DLPack without a copy.

Transfers and streams: the images go to the device once, in the self pass, so the block loop makes
no image or info transfers at all; per block only the (Bx, By) result comes back (at most 128 KiB,
after the block's kernels, which it must wait for) and each fused stage sends its op list (a few
bytes). With nothing sizeable left to move, the kernels run on one stream (CuPy's current one), and
a second stream for overlapping copies would have nothing to overlap. A block of 64 x 64 Myrtle10
pairs is ~7e11 FLOP (tens of ms of GPU work) against ~1-2 ms of Python per block.
JAX preallocates 75% of GPU memory by default; with CuPy in the same process, set
XLA_PYTHON_CLIENT_PREALLOCATE=false before JAX starts (benchmarks/gpu_check.py does).
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import importlib.resources
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .backend import CudaFallbackWarning, register_backend
from .jax_backend import self_infos
from .layers import (AvgPool, Cast, Conv, Gaussian, GlobalAvgPool, Layer, Normalize,
                     Polynomial, Relu, Serial)

__all__ = ["plan", "Plan", "Stage", "Step", "Fallback", "CudaFallbackWarning", "execute",
           "CudaBackend", "CupyLauncher", "HarnessLauncher", "available", "csrc_path"]

#: ABI codes of the pointwise ops (``tl_pointwise``'s and ``tl_fused_stage``'s ``op``).
POINTWISE_OPS = {Relu: 0, Gaussian: 1, Polynomial: 2, Normalize: 3}
#: ``tl_fused_stage`` encodes a conv of size s as this + s.
CONV_OP = 100
#: Largest dynamic shared memory a launch may ask for without raising the kernel's limit.
SHARED_LIMIT = 48 * 1024
#: Largest grid y (the pair index of most kernels): larger blocks run in row chunks.
MAX_GRID_Y = 65535
#: FLOP charged per tensor entry to each pointwise layer in :meth:`Plan.flop_per_pair`.
POINTWISE_FLOP = 30
INSTALL_HINT = "pip install 'tangentless[gpu]'"


# ----------------------------------------------------------------------------------------- plan

@dataclasses.dataclass(frozen=True)
class Step:
    """One kernel-level operation, acting on a (pairs, h, w, h, w) tensor of ``dtype``.

    kind: "pixel_conv" (from the images), "conv", "pointwise", "pool", "global_pool" or "widen"
    (float32 -> float64). size: conv size or pool window; op, param: the pointwise ABI code and its
    parameter (gamma, degree); layer: the pointwise layer's position in the spec (its infos).
    """
    kind: str
    h: int
    w: int
    dtype: str
    size: int = 0
    op: int = -1
    param: float = 0.0
    layer: int = -1

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.kind == "pool":
            return self.h // self.size, self.w // self.size
        return (1, 1) if self.kind == "global_pool" else (self.h, self.w)


@dataclasses.dataclass(frozen=True)
class Stage:
    """Steps run as one ``tl_fused_stage`` launch (fused) or a single step run unfused."""
    steps: tuple[Step, ...]
    fused: bool


@dataclasses.dataclass(frozen=True)
class Plan:
    """The stages of a spec on images of ``image_shape`` (H, W, C)."""
    stages: tuple[Stage, ...]
    image_shape: tuple[int, int, int]

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(s for stage in self.stages for s in stage.steps)

    def flop_per_pair(self, steps=None) -> float:
        """Cost model per image pair of ``steps`` (default: all), per entry of each step's input
        tensor (h w)^2: pixel conv 2 s^2 C (as a patch Gram), conv s^2, pointwise
        :data:`POINTWISE_FLOP`, pool 1. Myrtle5 / Myrtle10 at 32x32x3: 1.33e8 / 1.79e8."""
        channels = self.image_shape[2]
        per_entry = {"pixel_conv": lambda s: 2 * s.size ** 2 * channels, "conv": lambda s: s.size ** 2,
                     "pointwise": lambda s: POINTWISE_FLOP, "pool": lambda s: 1,
                     "global_pool": lambda s: 1, "widen": lambda s: 0}
        return float(sum(per_entry[s.kind](s) * (s.h * s.w) ** 2
                         for s in (self.steps if steps is None else steps)))

    def bytes_per_pair(self) -> int:
        """Device memory per pair of the largest stage: its input and output tensors (a pixel
        stage counts its output twice, for the float64 patch Gram's temporary)."""
        def tensor(hw, dtype):
            return (hw[0] * hw[1]) ** 2 * np.dtype(dtype).itemsize

        def stage_bytes(stage):
            first, last = stage.steps[0], stage.steps[-1]
            out = tensor(last.out_hw, "float64" if last.kind == "widen" else last.dtype)
            return out + (out if first.kind == "pixel_conv" else tensor((first.h, first.w), first.dtype))

        return max(stage_bytes(stage) for stage in self.stages)


@dataclasses.dataclass(frozen=True)
class Fallback:
    """A spec the CUDA kernels cannot run, and why."""
    reason: str


class _Unsupported(Exception):
    pass


def plan(spec: Layer, image_shape, fused: bool = True) -> Plan | Fallback:
    """Compile ``spec`` for images of shape (H, W, C) into a :class:`Plan`, or a :class:`Fallback`."""
    h, w, c = (int(v) for v in image_shape)
    try:
        steps = _steps(spec, (h, w, c))
    except _Unsupported as err:
        return Fallback(str(err))
    return Plan(_stages(steps, fused), (h, w, c))


def _steps(spec: Layer, image_shape: tuple[int, int, int]) -> list[Step]:
    """The spec as a list of kernel-level steps; raises _Unsupported with the reason."""
    layers = spec.layers if isinstance(spec, Serial) else (spec,)
    h, w, _ = image_shape
    dtype, start = "float32", 0
    while start < len(layers) and isinstance(cast_layer := layers[start], Cast):
        dtype, start = cast_layer.dtype, start + 1
    if start < len(layers) and isinstance(conv := layers[start], Conv):
        steps, start = [Step("pixel_conv", h, w, dtype, size=conv.size)], start + 1
    else:  # the pixels' linear kernel, then the first layer
        steps = [Step("pixel_conv", h, w, dtype, size=1)]
    for index, layer in enumerate(layers[start:], start):
        if isinstance(layer, Conv):
            if layer.size > 1:  # Conv(1) is the identity
                steps.append(Step("conv", h, w, dtype, size=layer.size))
        elif type(layer) in POINTWISE_OPS:
            steps.append(Step("pointwise", h, w, dtype, op=POINTWISE_OPS[type(layer)],
                              param=float(getattr(layer, "gamma", getattr(layer, "degree", 0.0))),
                              layer=index))
        elif isinstance(layer, AvgPool):
            if h % layer.window or w % layer.window:
                raise _Unsupported(f"AvgPool({layer.window}) at layer {index} does not divide the "
                                   f"{h}x{w} maps")
            if layer.window > 1:
                steps.append(Step("pool", h, w, dtype, size=layer.window))
                h, w = h // layer.window, w // layer.window
        elif isinstance(layer, GlobalAvgPool):
            steps.append(Step("global_pool", h, w, dtype))
            h = w = 1
        elif isinstance(layer, Cast):
            if layer.dtype != dtype:
                if layer.dtype != "float64":
                    raise _Unsupported(f"Cast({layer.dtype!r}) at layer {index} narrows float64 back; "
                                       "the CUDA kernels only widen float32 to float64")
                steps.append(Step("widen", h, w, dtype))
                dtype = "float64"
        else:
            raise _Unsupported(f"{type(layer).__name__} at layer {index} has no CUDA kernel")
    if (h, w) != (1, 1):
        raise _Unsupported(f"the spec ends with {h}x{w} maps, not 1x1 (end it with GlobalAvgPool)")
    return steps


def _fusable(step: Step) -> bool:
    """Whether a step can join a fused float32 stage (as an op, or as its closing pool)."""
    if step.dtype != "float32" or _geometry_fused(1, step.h, step.w)[2] > SHARED_LIMIT:
        return False
    if step.kind == "pool":
        return step.size < min(step.h, step.w) or step.size == step.h == step.w
    return step.kind in ("pixel_conv", "conv", "pointwise") or (
        step.kind == "global_pool" and step.h == step.w)


def _stages(steps: list[Step], fused: bool) -> tuple[Stage, ...]:
    """Group steps: maximal fusable op runs, each closed by a fusable pool, become fused stages."""
    if not fused:
        return tuple(Stage((s,), False) for s in steps)
    stages, run = [], []
    for step in steps:
        if _fusable(step) and step.kind in ("pixel_conv", "conv", "pointwise"):
            run.append(step)
            continue
        if run and _fusable(step):  # a pool closes the run
            stages.append(Stage((*run, step), True))
        else:
            if run:
                stages.append(Stage(tuple(run), True))
            stages.append(Stage((step,), False))
        run = []
    if run:
        stages.append(Stage(tuple(run), True))
    return tuple(stages)


# ----------------------------------------------------------------------------- launch geometry
# One function per kernel: (grid, threads per block, dynamic shared bytes), as csrc/README.md states.

THREADS = 256
CAST_CHUNK = 4096  # TL_CAST_CHUNK: elements per block of tl_cast_f64


def _geometry_pixel_conv(pairs, h, w, c, size):
    """Block (i * h + k, pair) stages `size` padded rows of both images: 2 size (w + 2r) c floats."""
    return (h * h, pairs), THREADS, 2 * size * (w + 2 * (size // 2)) * c * 4


def _geometry_rows(pairs, h, w):
    """tl_conv*, tl_pointwise*: block (i * w + j, pair) does the (h, w) slice at pixel (i, j)."""
    return (h * w, pairs), THREADS, 0


def _geometry_pool(pairs, h, w, p):
    """tl_pool*: block (I * (w/p) + J, pair) writes one pooled row."""
    return ((h // p) * (w // p), pairs), THREADS, 0


def _geometry_global_pool(pairs, itemsize):
    """tl_global_pool*: one block per pair, one scratch value per thread."""
    return (pairs,), THREADS, THREADS * itemsize


def _geometry_cast(n):
    """tl_cast_f64: block x converts elements [x, x + 1) * CAST_CHUNK."""
    return (max(1, math.ceil(n / CAST_CHUNK)),), THREADS, 0


def _geometry_fused(pairs, h, w):
    """tl_fused_stage: block (pixel-offset plane, pair); two h x w float32 planes in shared memory."""
    return ((2 * h - 1) * (2 * w - 1), pairs), THREADS, 2 * h * w * 4


# ------------------------------------------------------------------------------------ executor

def _i32(v):
    return np.int32(v)


def _suffix(dtype: str) -> str:
    return "_f64" if dtype == "float64" else ""


def execute(plan: Plan, launcher, x, y, norms_x: dict, norms_y: dict):
    """The (Bx, By) kernel block, on the launcher's device, in the plan's final dtype.

    x (Bx, H, W, C), y (By, H, W, C): launcher arrays; norms_x / norms_y: {layer position: (B, h, w)
    launcher array in the step's dtype} for every pointwise step (the layer's per-pixel variances).
    Runs in chunks of rows of x so that no grid has more than MAX_GRID_Y pairs.
    """
    if len(y) > MAX_GRID_Y:
        raise ValueError(f"at most {MAX_GRID_Y} images of y per block; got {len(y)}")
    rows = MAX_GRID_Y // len(y)
    if len(x) > rows:
        return launcher.xp.concatenate([
            execute(plan, launcher, x[s:s + rows], y, {k: v[s:s + rows] for k, v in norms_x.items()},
                    norms_y) for s in range(0, len(x), rows)])
    k: Any = None
    for stage in plan.stages:
        k = run_stage(launcher, stage, k, x, y, norms_x, norms_y)
    return k.reshape(len(x), len(y))


def run_stage(launcher, stage: Stage, k, x, y, norms_x: dict, norms_y: dict):
    """One stage on tensor k (pairs, h, w, h, w) (None before the first); returns the next tensor."""
    if stage.fused:
        return _run_fused(launcher, stage.steps, k, x, y, norms_x, norms_y)
    return _run_step(launcher, stage.steps[0], k, x, y, norms_x, norms_y)


def _run_fused(launcher, steps, k, x, y, norms_x, norms_y):
    xp, first, last = launcher.xp, steps[0], steps[-1]
    ops = [s for s in steps if s.kind in ("pixel_conv", "conv", "pointwise")]
    pointwise = [s for s in ops if s.kind == "pointwise"]
    bx, by, (h, w), c = len(x), len(y), (first.h, first.w), x.shape[3]
    pool = last.size if last.kind == "pool" else h if last.kind == "global_pool" else 1
    out_h, out_w = last.out_hw
    out = (xp.zeros if pool > 1 else xp.empty)((bx * by, out_h, out_w, out_h, out_w), np.float32)
    codes = xp.asarray([CONV_OP + s.size if s.kind != "pointwise" else s.op for s in ops], np.int32)
    params = xp.asarray([s.param for s in ops], np.float32)
    nx = xp.stack([norms_x[s.layer] for s in pointwise]) if pointwise else None
    ny = xp.stack([norms_y[s.layer] for s in pointwise]) if pointwise else None
    from_pixels = first.kind == "pixel_conv"
    xs, ys = (_contiguous(xp, t, np.float32) for t in (x, y)) if from_pixels else (None, None)
    launcher.launch("tl_fused_stage", *_geometry_fused(bx * by, h, w),
                    (xs, ys, None if from_pixels else k, out, nx, ny, codes, params, _i32(len(ops)),
                     _i32(bx), _i32(by), _i32(h), _i32(w), _i32(c), _i32(pool)))
    return out


def _run_step(launcher, step, k, x, y, norms_x, norms_y):
    xp, h, w = launcher.xp, step.h, step.w
    bx, by = len(x), len(y)
    pairs, dtype, sfx = bx * by, np.dtype(step.dtype), _suffix(step.dtype)
    if step.kind == "pixel_conv":
        geometry = _geometry_pixel_conv(pairs, h, w, x.shape[3], step.size)
        if step.dtype == "float64" or geometry[2] > SHARED_LIMIT:
            return _pixel_conv_matmul(xp, x.astype(dtype), y.astype(dtype), step.size)
        out = xp.empty((pairs, h, w, h, w), np.float32)
        launcher.launch("tl_pixel_conv", *geometry,
                        (_contiguous(xp, x, np.float32), _contiguous(xp, y, np.float32), out,
                         _i32(bx), _i32(by), _i32(h), _i32(w), _i32(x.shape[3]), _i32(step.size)))
        return out
    if step.kind == "conv":
        out = xp.empty_like(k)
        launcher.launch("tl_conv" + sfx, *_geometry_rows(pairs, h, w),
                        (k, out, _i32(pairs), _i32(h), _i32(w), _i32(step.size)))
        return out
    if step.kind == "pointwise":
        launcher.launch("tl_pointwise" + sfx, *_geometry_rows(pairs, h, w),
                        (k, norms_x[step.layer], norms_y[step.layer], _i32(bx), _i32(by), _i32(h),
                         _i32(w), _i32(step.op), dtype.type(step.param)))
        return k
    if step.kind == "pool":
        p = step.size
        out = xp.empty((pairs, h // p, w // p, h // p, w // p), dtype)
        launcher.launch("tl_pool" + sfx, *_geometry_pool(pairs, h, w, p),
                        (k, out, _i32(pairs), _i32(h), _i32(w), _i32(p)))
        return out
    if step.kind == "global_pool":
        out = xp.empty((pairs, 1, 1, 1, 1), dtype)
        launcher.launch("tl_global_pool" + sfx, *_geometry_global_pool(pairs, dtype.itemsize),
                        (k, out, _i32(pairs), _i32(h), _i32(w)))
        return out
    assert step.kind == "widen", step.kind
    out = xp.empty(k.shape, np.float64)
    launcher.launch("tl_cast_f64", *_geometry_cast(k.size), (k, out, np.int64(k.size)))
    return out


def _contiguous(xp, a, dtype):
    return xp.ascontiguousarray(a, dtype=dtype)


def _pixel_conv_matmul(xp, x, y, size: int):
    """Conv(size) on pixels as a Gram of zero-padded patches (any dtype): -> (Bx By, h, w, h, w)."""
    (bx, h, w, _), by, r = x.shape, len(y), size // 2

    def patches(t):
        t = xp.pad(t, ((0, 0), (r, r), (r, r), (0, 0)))
        return xp.concatenate([t[:, a:a + h, b:b + w] for a in range(size) for b in range(size)],
                              axis=-1).reshape(len(t) * h * w, -1)

    k = (patches(x) @ patches(y).T).reshape(bx, h * w, by, h * w).transpose(0, 2, 1, 3)
    return xp.ascontiguousarray(k).reshape(bx * by, h, w, h, w) / size ** 2


# ------------------------------------------------------------------------------------ launchers

def csrc_path() -> pathlib.Path:
    """The CUDA sources: the installed ``tangentless.csrc`` package data, else the repository's csrc/."""
    try:
        return pathlib.Path(str(importlib.resources.files("tangentless.csrc")))
    except (ModuleNotFoundError, TypeError):
        return pathlib.Path(__file__).resolve().parents[1] / "csrc"


def _import_cupy():
    try:
        import cupy
    except ImportError as err:
        raise ImportError(f"backend='cuda' needs CuPy and a CUDA GPU; CuPy is not importable ({err}). "
                          f"Install it with: {INSTALL_HINT}") from None
    return cupy


def _gpu_count(cupy) -> int:
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # CUDARuntimeError without a driver or device
        return 0


@functools.cache
def available() -> bool:
    """Whether CuPy is importable and sees a CUDA GPU (the default ``gram`` backend is then CUDA)."""
    try:
        cupy = _import_cupy()
    except ImportError:
        return False
    return _gpu_count(cupy) > 0


@functools.cache
def _raw_module(source_dir: str):
    """The CuPy RawModule of csrc/ (every .cu but the host harness), built once per process. CuPy
    caches the binary on disk keyed by the code, so the code names a hash of all the sources."""
    import cupy
    files = sorted(p for p in pathlib.Path(source_dir).iterdir() if p.suffix in (".cu", ".cuh"))
    sources = [p for p in files if p.suffix == ".cu" and p.name != "harness.cu"]
    if not sources:
        raise FileNotFoundError(f"no CUDA sources (*.cu) in {source_dir}")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()
    code = f"// sources sha256 {digest}\n" + "".join(f'#include "{p.name}"\n' for p in sources)
    module = cupy.RawModule(code=code, options=("-std=c++17", f"-I{source_dir}"))
    module.get_function("tl_fused_stage")  # compiles now: errors surface here, and builds are timed
    return module


class CupyLauncher:
    """Launches the csrc kernels on a CUDA GPU through CuPy (``xp`` is cupy)."""

    def __init__(self, device: int | None = None):
        cupy = _import_cupy()
        if _gpu_count(cupy) == 0:
            raise RuntimeError("backend='cuda': CuPy is installed but sees no CUDA GPU (no device, or "
                               "no driver); use backend='jax' or run on a machine with a GPU")
        self.xp = cupy
        self.device = cupy.cuda.Device(device)
        self._functions: dict[str, Any] = {}

    def build(self):
        """Compile csrc/ (at first use; later calls return the cached module)."""
        with self.device:
            return _raw_module(str(csrc_path()))

    def context(self):
        return self.device

    def launch(self, name: str, grid, block: int, shared_bytes: int, args) -> None:
        if name not in self._functions:
            self._functions[name] = self.build().get_function(name)
        self._functions[name](tuple(grid), (block,), tuple(args), shared_mem=shared_bytes)

    def from_jax(self, a):
        """A JAX array as a cupy array: zero-copy through DLPack when it lives on this GPU."""
        devices = getattr(a, "devices", lambda: set())()
        if len(devices) == 1:
            (dev,) = devices
            if dev.platform == "gpu" and dev.local_hardware_id == self.device.id:
                return self.xp.from_dlpack(a)
        return self.xp.asarray(np.asarray(a))

    def to_numpy(self, a) -> np.ndarray:
        return self.xp.asnumpy(a)

    def memory_budget(self) -> int:
        """Bytes a block may use: a quarter of the free device memory, at most 4 GiB."""
        free, _ = self.xp.cuda.runtime.memGetInfo()
        return min(free // 4, 4 << 30)


_C_SCALARS = {np.int32: ctypes.c_int, np.int64: ctypes.c_longlong, np.float32: ctypes.c_float,
              np.float64: ctypes.c_double}


class HarnessLauncher:
    """Runs the kernel bodies serially on the CPU through csrc's host harness (``xp`` is numpy).

    path: the shared library built by ``nvcc -shared -Xcompiler -fPIC -o libtl_harness.so
    csrc/harness.cu``; kernel ``tl_<name>`` is its ``tl_host_<name>(grid_x, grid_y, block,
    shared_bytes, <the kernel's arguments>)``.
    """
    xp = np

    def __init__(self, path):
        self.library = ctypes.CDLL(str(path))

    def context(self):
        return contextlib.nullcontext()

    def launch(self, name: str, grid, block: int, shared_bytes: int, args) -> None:
        function = getattr(self.library, "tl_host_" + name.removeprefix("tl_"))
        function.restype = None
        grid_x, grid_y = (*grid, 1)[:2]
        function(ctypes.c_int(grid_x), ctypes.c_int(grid_y), ctypes.c_int(block),
                 ctypes.c_size_t(shared_bytes), *(_c_argument(a) for a in args))

    def from_jax(self, a) -> np.ndarray:
        return np.asarray(a)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def memory_budget(self) -> int:
        return 256 << 20


def _c_argument(a):
    """A kernel argument for ctypes: arrays as pointers (C-contiguous only), typed scalars."""
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, np.ndarray):
        if not a.flags.c_contiguous:
            raise ValueError(f"kernel arguments must be C-contiguous arrays; got strides {a.strides}")
        return ctypes.c_void_p(a.ctypes.data)
    return _C_SCALARS[type(a)](a)


# ------------------------------------------------------------------------------------- backend

class CudaBackend:
    """Gram compute backend "cuda": the csrc kernels (see the module docstring).

    fused: run float32 conv/pointwise runs as fused stages (False: one kernel per layer, for checks);
    device: the CUDA device ordinal (default: CuPy's current device); launcher: a launcher object
    instead of the GPU's (e.g. :class:`HarnessLauncher`). Without CuPy, ImportError; without a GPU,
    RuntimeError, both naming the problem.
    Infos: ``{"images": (B, H, W, C), "infos": the JAX self pass's infos}``, arrays on JAX's device.
    """

    name = "cuda"

    def __init__(self, fused: bool = True, device: int | None = None, launcher: Any = None) -> None:
        self.fused = fused
        self.launcher = CupyLauncher(device) if launcher is None else launcher

    def plan(self, spec: Layer, image_shape: tuple[int, int, int]) -> Plan | Fallback:
        return plan(spec, image_shape, self.fused)

    def unsupported(self, spec: Layer, image_shape: tuple[int, int, int]) -> str | None:
        """Why this backend cannot run ``spec`` on images of ``image_shape``, or None."""
        compiled = self.plan(spec, image_shape)
        return compiled.reason if isinstance(compiled, Fallback) else None

    def preferred_block_size(self, spec: Layer, image_shape: tuple[int, int, int]) -> int:
        """Images per block: as many as the launcher's memory budget allows, 16 to 128."""
        compiled = self.plan(spec, image_shape)
        if isinstance(compiled, Fallback):
            raise ValueError(f"the CUDA backend cannot run this spec: {compiled.reason}")
        pairs = self.launcher.memory_budget() // compiled.bytes_per_pair()
        return int(min(128, max(16, math.isqrt(pairs))))

    def self_info(self, spec: Layer, x: np.ndarray) -> dict[str, Any]:
        """{"images": x, "infos": the JAX self pass's infos}, on JAX's default device."""
        with jax.enable_x64(True):
            images = jnp.asarray(x)
            return {"images": images, "infos": self_infos(spec, images)}

    def compute_block(self, spec: Layer, x: np.ndarray, y: np.ndarray, info_x: dict[str, Any],
                      info_y: dict[str, Any]) -> np.ndarray:
        """(Bx, By) float64 block; x, y are only used for their shape (the images ride in the infos)."""
        compiled = self.plan(spec, x.shape[1:])
        if isinstance(compiled, Fallback):
            raise ValueError(f"the CUDA backend cannot run this spec: {compiled.reason}")
        jax.block_until_ready((info_x, info_y))
        launcher = self.launcher
        with launcher.context():
            images = [launcher.from_jax(info["images"]) for info in (info_x, info_y)]
            norms = [norms_from_infos(compiled, launcher, info["infos"]) for info in (info_x, info_y)]
            block = execute(compiled, launcher, images[0], images[1], *norms)
            return launcher.to_numpy(block).astype(np.float64)


def norms_from_infos(compiled: Plan, launcher, infos) -> dict:
    """{layer position: (B, h, w) variances in the step's dtype} from the JAX infos (B, 1, h, w)."""
    xp = launcher.xp
    return {s.layer: _contiguous(xp, launcher.from_jax(infos[s.layer]).reshape(-1, s.h, s.w), s.dtype)
            for s in compiled.steps if s.kind == "pointwise"}


register_backend("cuda", CudaBackend, available=available, priority=1)
