"""Executors: where the Gram engine's blocks are computed. An executor's ``blocks(backend, spec,
layout, images, pairs, writer, run)`` yields ((i, j), :func:`block_task` result) for the blocks
``pairs`` in any order; :class:`InProcess` computes them here, in order, and
:class:`tangentless.kernels.distributed.DaskExecutor` as Dask tasks. A block with a NaN or inf
never reaches a sink or a store's writer: :func:`block_task` raises :class:`NonFiniteBlockError`.
"""
from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np

from .layout import BlockLayout

__all__ = ["Executor", "InProcess", "NonFiniteBlockError", "require_finite", "block_task"]


class NonFiniteBlockError(ValueError):
    """A Gram block holds NaN or inf values (a backend fault, or a kernel beyond its precision's
    range); it is neither returned nor stored, so a store's resume computes it again."""


def require_finite(block: np.ndarray, index: tuple[int, int] | None, extent: tuple[slice, slice],
                   advice: str = "the backend computed them: check the images and the backend") -> None:
    """:class:`NonFiniteBlockError` naming block ``index`` and its ``extent`` (rows, columns of
    K), followed by ``advice``, unless every value of ``block`` is finite."""
    bad = ~np.isfinite(block)
    if bad.any():
        rows, cols = extent
        raise NonFiniteBlockError(
            f"Gram block {index} (rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}) "
            f"has {int(bad.sum())} NaN or inf values, so it is not kept; {advice}")


def block_task(backend, spec, x_block, y_blocks, info_x, info_ys, extent: tuple[slice, slice],
               diagonal: bool, writer=None, index: tuple[int, int] | None = None):
    """One block of K, rows and columns ``extent``: the sum over ``y_blocks`` (one, or two with
    flip) of the backend's (length, length) blocks, cropped to the extent; ``diagonal``: a
    diagonal block of K(x, x), made exactly symmetric from its upper triangle. Returns the float64
    block, or with a ``writer`` what ``writer(index, block)`` returns (a store's checksums);
    :class:`NonFiniteBlockError` where it holds a NaN or inf (then the writer is not called)."""
    rows, cols = extent
    block = sum(backend.compute_block(spec, x_block, y, info_x, info_y)
                for y, info_y in zip(y_blocks, info_ys))[: rows.stop - rows.start,
                                                          : cols.stop - cols.start]
    if diagonal:
        block = np.triu(block) + np.triu(block, 1).T
    require_finite(block, index, extent)
    return block if writer is None else writer(index, block)


class Executor(Protocol):
    def blocks(self, backend, spec, layout: BlockLayout, images: dict, pairs, writer,
               run: str) -> Iterator[tuple[tuple[int, int], object]]:
        """((i, j), :func:`block_task` result) for each block of ``pairs``; ``images`` maps
        image-block keys to padded images (:meth:`BlockLayout.image_blocks`), ``writer`` is the
        sink's block writer or None, ``run`` names the run."""


class InProcess:
    """Computes the blocks in this process, in order: the self infos of the image blocks they
    read first, then one :func:`block_task` per block."""

    def blocks(self, backend, spec, layout: BlockLayout, images: dict, pairs, writer, run: str):
        infos = {key: backend.self_info(spec, images[key]) for key in layout.needed(pairs)}
        for i, j in pairs:
            yield (i, j), block_task(backend, spec, *layout.task_arguments(i, j, images, infos),
                                     writer, (i, j))
