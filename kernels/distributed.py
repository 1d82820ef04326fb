"""Gram blocks as Dask tasks: the :class:`DaskExecutor` of ``gram(..., scheduler=...)``.

Each padded image block travels once, in a task that returns it (Dask can recompute that if the
worker holding it dies, which scattered data would not survive); one task per image block computes
its self infos (returned as numpy); one task per Gram block computes the block with the backend
and, with a store, writes its chunk(s) and then its marker and returns only the checksums (without
a store it returns the block). A worker that dies mid-block leaves no marker, so its block is never counted
as done; Dask reruns the task elsewhere (up to ``distributed.scheduler.allowed-failures`` worker
deaths per task, 3 by default) and ``retries`` covers tasks that raise. If the run fails anyway,
rerunning the same call resumes from the store.

Compute backends: a registered one ("jax", "cuda") is rebuilt on each worker by name with default
options (once per process), so a CUDA worker uses its visible GPU; another backend object is
pickled to the workers. With the
CUDA backend, tasks ask for ``resources={"GPU": 1}`` when some worker declares a GPU resource
(then only those workers get Gram tasks, one at a time each); when none does, no resources are
asked for (give each GPU worker one thread).

One host with several GPUs (dask-cuda starts one worker per GPU, each seeing only its own)::

    from dask_cuda import LocalCUDACluster
    from dask.distributed import Client
    with LocalCUDACluster(threads_per_worker=1, resources={"GPU": 1}) as cluster, \\
            Client(cluster) as client:
        k = spec.gram(x, backend="cuda", store="k.zarr", scheduler=client)

A cluster: ``dask scheduler`` on one host, then on every GPU host ``dask cuda worker
tcp://head:8786 --nthreads 1 --resources GPU=1`` (or ``dask worker ... --nthreads 1`` per CPU
core), with the store on a filesystem all hosts share; the client calls
``spec.gram(x, store="/shared/k.zarr", scheduler="tcp://head:8786")``.
"""
from __future__ import annotations

import contextlib
import functools
import os

import jax
import numpy as np
from dask.distributed import Client, LocalCluster, as_completed

from .backend import backend_name, create_backend
from .executors import block_task
from .layout import BlockLayout

__all__ = ["DaskExecutor", "connect", "portable", "task_resources"]


@contextlib.contextmanager
def connect(scheduler, workers: int | None = None):
    """A ``dask.distributed.Client`` for ``gram``'s ``scheduler``: the Client itself, a Client of
    a scheduler address, or, for "local", of a LocalCluster of ``workers`` single-threaded
    processes (default: one per CPU core); what this opens, it closes."""
    if isinstance(scheduler, Client):
        yield scheduler
    elif scheduler == "local":
        count = (os.cpu_count() or 1) if workers is None else workers
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        with LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
    elif isinstance(scheduler, str):
        with Client(scheduler) as client:
            yield client
    else:
        raise TypeError(f"scheduler must be None, a dask.distributed.Client, a scheduler address or "
                        f"'local'; got {type(scheduler).__name__}")


def portable(backend):
    """What a task carries to name ``backend``: the registered name of a registered backend
    (rebuilt on the worker), else the object itself (pickled)."""
    return backend_name(backend) or backend


@functools.cache
def _registered(name: str):
    """The worker's backend object of the registered ``name`` (one per process)."""
    return create_backend(name)


def _worker_backend(ref):
    return _registered(ref) if isinstance(ref, str) else ref


def task_resources(ref, workers: dict) -> dict | None:
    """{"GPU": 1} for CUDA tasks when some worker of ``scheduler_info()["workers"]`` declares a
    GPU resource, else None."""
    has_gpus = any(w.get("resources", {}).get("GPU") for w in workers.values())
    return {"GPU": 1} if ref == "cuda" and has_gpus else None


def _hold(images: np.ndarray) -> np.ndarray:
    """A task whose result is its argument: unlike scattered data, Dask can recompute it (the
    images travel in the task) when the worker holding it dies."""
    return images


def _info_task(ref, spec, images):
    return jax.tree.map(np.asarray, _worker_backend(ref).self_info(spec, images))


def _block_task(ref, spec, *arguments):
    return block_task(_worker_backend(ref), spec, *arguments)


class DaskExecutor:
    """Computes the Gram blocks as tasks on the Dask ``client`` (see the module docstring), each
    retried ``retries`` times on errors."""

    def __init__(self, client, retries: int = 3):
        self.client, self.retries = client, retries

    def blocks(self, backend, spec, layout: BlockLayout, images: dict, pairs, writer, run: str):
        """Yield ((i, j), :func:`~tangentless.kernels.executors.block_task` result) for the
        blocks ``pairs`` as their tasks complete; a failed task raises (the rest are cancelled).
        ``run`` names the tasks."""
        client, ref = self.client, portable(backend)
        options = {"retries": self.retries,
                   "resources": task_resources(ref, client.scheduler_info()["workers"])}
        keys = layout.needed(pairs)
        held = {k: client.submit(_hold, images[k], key=f"gram-images-{run}-{k[0]}-{k[1]}")
                for k in keys}
        infos = {k: client.submit(_info_task, ref, spec, held[k],
                                  key=f"gram-info-{run}-{k[0]}-{k[1]}", **options) for k in keys}
        futures = {client.submit(_block_task, ref, spec, *layout.task_arguments(i, j, held, infos),
                                 writer, (i, j), key=f"gram-block-{run}-{i}-{j}", **options): (i, j)
                   for i, j in pairs}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            client.cancel([*futures, *infos.values(), *held.values()])
