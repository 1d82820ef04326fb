"""How a Gram matrix is cut into blocks (numpy only; the leaf every other engine part imports).

K (n, m) is split into blocks of row_length x col_length images; each block is one backend call,
one task of an executor and one chunk of a store.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["BlockLayout", "MIRROR", "FLIPS", "check_flip", "default_block_size", "block_length",
           "block_spans", "pad_rows", "flip_images"]

#: the ``flip`` that makes K(x, flip y) alone, the mirror half of the flip-symmetrized kernel
MIRROR = "mirror"
#: the values ``flip`` takes: the plain kernel, the flip-symmetrized one, its mirror half
FLIPS = (False, True, MIRROR)


def check_flip(flip):
    """``flip`` itself if it is one of :data:`FLIPS` (numpy bools as bools), else ValueError."""
    if isinstance(flip, (bool, np.bool_)):
        return bool(flip)
    if isinstance(flip, str) and flip == MIRROR:
        return MIRROR
    raise ValueError(f"flip must be False, True or {MIRROR!r}; got {flip!r}")


def default_block_size(height: int, width: int) -> int:
    """Images per block: 16 at 32x32, more for smaller images (a block is one XLA call; memory
    is set by the JAX backend's :func:`~tangentless.kernels.jax_backend.pairs_per_step`, not by
    the block). Smaller blocks waste less on the diagonal blocks of a symmetric Gram, which are
    computed whole."""
    return int(min(256, max(16, 16 * 1024 // (height * width))))


def block_length(n: int, block_size: int) -> int:
    """The most even split of n rows into blocks of at most block_size."""
    return math.ceil(n / math.ceil(n / block_size))


def block_spans(n: int, length: int) -> list[tuple[int, int]]:
    """[(start, stop)] of consecutive blocks of ``length`` rows (the last one may be shorter)."""
    return [(s, min(s + length, n)) for s in range(0, n, length)]


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """Repeat the last image so that every block has the same shape (one compilation)."""
    return x if len(x) == rows else np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


def flip_images(x: np.ndarray) -> np.ndarray:
    """Horizontal mirror images of NHWC images (N, H, W, C)."""
    return x[:, :, ::-1, :]


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """How the engine splits K (n, m) into blocks of row_length x col_length images.

    Block (i, j) is K[row block i, column block j]. symmetric: K(x, x); only blocks i <= j are
    computed, the others are their transposes. flip: True, a block is K(x, y) + K(x, flip y);
    :data:`MIRROR`, it is K(x, flip y) alone (symmetric too: K(x_a, F x_b) = K(x_b, F x_a) for
    kernels that commute with the flip F), so the flip-symmetrized kernel is the plain one plus
    the mirror one and a search over flips off and on computes the plain kernel once.
    Image blocks are keyed (source, b), source "x", "y" or "flip" (flipped y, or flipped x when
    symmetric), and padded to full length by repeating the last image (one compilation).
    """
    n: int
    m: int
    row_length: int
    col_length: int
    symmetric: bool
    flip: bool | str

    @classmethod
    def split(cls, n: int, m: int, block_size: int, symmetric: bool, flip: bool | str) -> BlockLayout:
        """The layout of K (n, m) in the most even blocks of at most ``block_size`` images a side."""
        if not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
        return cls(n, m, block_length(n, int(block_size)), block_length(m, int(block_size)),
                   bool(symmetric), check_flip(flip))

    @property
    def row_blocks(self) -> list[tuple[int, int]]:
        return block_spans(self.n, self.row_length)

    @property
    def col_blocks(self) -> list[tuple[int, int]]:
        return block_spans(self.m, self.col_length)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The blocks the engine computes, (i, j) in row-major order."""
        return [(i, j) for i in range(len(self.row_blocks)) for j in range(len(self.col_blocks))
                if not self.symmetric or i <= j]

    def extent(self, i: int, j: int) -> tuple[slice, slice]:
        """Rows and columns of K covered by block (i, j)."""
        (r0, r1), (c0, c1) = self.row_blocks[i], self.col_blocks[j]
        return slice(r0, r1), slice(c0, c1)

    def evaluations(self, i: int, j: int) -> int:
        """Image pairs in block (i, j), counted twice with flip=True (the backend's work)."""
        rows, cols = self.extent(i, j)
        return (rows.stop - rows.start) * (cols.stop - cols.start) * (2 if self.flip is True else 1)

    def inputs(self, i: int, j: int) -> list[tuple[str, int]]:
        """Keys of the image blocks that block (i, j) reads: the x block, then one y block per term."""
        own = [] if self.flip == MIRROR else ["x" if self.symmetric else "y"]
        terms = own + (["flip"] if self.flip else [])
        return [("x", i)] + [(t, j) for t in terms]

    def needed(self, pairs: Iterable[tuple[int, int]]) -> list[tuple[str, int]]:
        """Sorted keys of the image blocks that the blocks ``pairs`` read."""
        return sorted({key for i, j in pairs for key in self.inputs(i, j)})

    def image_blocks(self, x: np.ndarray, y: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
        """{(source, b): (length, H, W, C) padded images} for every image block."""
        sources = {"x": (x, len(self.row_blocks), self.row_length)}
        if not self.symmetric and self.flip != MIRROR:
            sources["y"] = (y, len(self.col_blocks), self.col_length)
        if self.flip:
            sources["flip"] = (flip_images(y), len(self.col_blocks), self.col_length)
        parts = {}
        for name, (images, count, length) in sources.items():
            padded = pad_rows(images, count * length)
            parts.update({(name, b): padded[b * length:(b + 1) * length] for b in range(count)})
        return parts

    def task_arguments(self, i: int, j: int, images: dict, infos: dict
                       ) -> tuple[Any, list, Any, list, tuple[slice, slice], bool]:
        """The arguments of :func:`~tangentless.kernels.executors.block_task` between ``spec``
        and ``writer`` for block (i, j); ``images`` and ``infos`` map image-block keys to arrays,
        or to Dask futures of them."""
        kx, *kys = self.inputs(i, j)
        return (images[kx], [images[k] for k in kys], infos[kx], [infos[k] for k in kys],
                self.extent(i, j), self.symmetric and i == j)
