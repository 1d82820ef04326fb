"""The Gram engine: orchestration only. Given validated images, a :class:`~.layout.BlockLayout`,
a compute backend (:class:`~.backend.Backend`), an executor (:mod:`.executors`: in this process,
or :class:`~tangentless.kernels.distributed.DaskExecutor`) and a sink (:class:`MemorySink`, or a
:class:`~tangentless.kernels.store.GramStore`), it asks the sink which blocks are still to do,
has the executor compute them, hands each result to the sink and shows progress.

It imports none of those parts' implementations and knows nothing of layer semantics.
:func:`tangentless.kernels.gram` builds the parts from its options; to assemble them yourself::

    from tangentless.kernels.engine import MemorySink, compute
    from tangentless.kernels.executors import InProcess
    from tangentless.kernels.gram import prepare_images
    from tangentless.kernels.jax_backend import JaxBackend
    from tangentless.kernels.layout import BlockLayout

    x, y = prepare_images(spec, images)  # validated, in spec.input_dtype; y is x: K(x, x)
    layout = BlockLayout.split(len(x), len(y), block_size=64, symmetric=True, flip=False)
    k = compute(spec, x, y, layout=layout, backend=JaxBackend(), executor=InProcess(),
                sink=MemorySink(layout))

Any object with the methods of :class:`~.executors.Executor` or :class:`Sink` can stand in for
the built-in ones (e.g. a sink that streams blocks to another format).
"""
from __future__ import annotations

import contextlib
import datetime
import uuid
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from .executors import Executor, InProcess
from .layout import BlockLayout

__all__ = ["Sink", "MemorySink", "compute", "new_run_id"]


class Sink(Protocol):
    """Where the engine's blocks go."""

    def start_run(self, run: str) -> tuple[list[tuple[int, int]], object]:
        """(blocks still to compute, the writer the executor's tasks call with each block, or
        None for :meth:`accept` to receive the blocks themselves)."""

    def accept(self, index: tuple[int, int], result) -> None:
        """Take the executor's result for block ``index`` (the block, or the writer's return)."""

    def finish_run(self, run: str, computed: list[tuple[int, int]]):
        """Record the blocks ``computed``; return the Gram matrix."""


class MemorySink:
    """K as a float64 numpy array of shape (n, m), both triangles of K(x, x) filled."""

    def __init__(self, layout: BlockLayout):
        self.layout = layout
        self.out = np.empty((layout.n, layout.m))

    def start_run(self, run: str):
        return self.layout.pairs, None

    def accept(self, index: tuple[int, int], result: np.ndarray) -> None:
        rows, cols = self.layout.extent(*index)
        self.out[rows, cols] = result
        if self.layout.symmetric:
            self.out[cols, rows] = result.T

    def finish_run(self, run: str, computed) -> np.ndarray:
        return self.out


def new_run_id() -> str:
    """A unique, time-sortable name for one Gram computation (Dask task keys, store run records)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S.%f}-{uuid.uuid4().hex[:8]}"


def compute(spec, x: np.ndarray, y: np.ndarray, *, layout: BlockLayout, backend,
            executor: Executor | None = None, sink: Sink | None = None, progress: bool = True):
    """K (layout.n, layout.m) of ``spec`` between images x and y (N, H, W, C), y is x for the
    symmetric layout: the blocks the sink still lacks, computed by ``executor`` (default
    :class:`~.executors.InProcess`) on ``backend``, into ``sink`` (default :class:`MemorySink`);
    returns what the sink's ``finish_run`` returns."""
    executor = InProcess() if executor is None else executor
    sink = MemorySink(layout) if sink is None else sink
    run = new_run_id()
    pending, writer = sink.start_run(run)
    results = executor.blocks(backend, spec, layout, layout.image_blocks(x, y), pending, writer, run)
    return sink.finish_run(run, _collect(results, layout, pending, sink, progress))


def _collect(results, layout: BlockLayout, pending, sink: Sink, progress: bool):
    """Consume the generator ``results`` ((i, j), result) under a progress bar over all pairs,
    handing each result to ``sink``; closes it on error. Returns the (i, j) of the blocks done, in
    completion order."""
    total = sum(layout.evaluations(i, j) for i, j in layout.pairs)
    todo = sum(layout.evaluations(i, j) for i, j in pending)
    done = []
    with contextlib.closing(results), tqdm(total=total, initial=total - todo, unit="pair",
                                            disable=not progress, desc="gram") as bar:
        for index, result in results:
            sink.accept(index, result)
            done.append(index)
            bar.update(layout.evaluations(*index))
    return done
