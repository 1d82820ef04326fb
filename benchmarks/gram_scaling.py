"""Throughput of a store-backed Myrtle5 Gram K(x, x) on 32x32 images: in this process, and on Dask
local clusters of 1, 2, ... single-threaded worker processes.

Every configuration writes a fresh Zarr store (``gram(store=..., scheduler=...)``) and must give
the in-process store's matrix bit for bit. Compilation is kept out of the timings: each process
first computes one block of the same shape (that call, compilation included, is reported as
``warm_up_seconds``); cluster start-up is not timed either. Pairs are distinct image pairs,
n (n + 1) / 2.
Usage: python -m tangentless.benchmarks.gram_scaling [--n 128] [--block-size 16] [--workers 1 2]
Writes ``--out`` (default: benchmarks/results/gram_scaling.json under the current directory), with
the machine description.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import numpy as np

from .kernel_throughput import RESULTS, prepare_images
from .report import write_json


def _warm_up(spec, block: np.ndarray) -> float:
    """Seconds of a first one-block Gram in this process (compiles the self pass and the block)."""
    start = time.perf_counter()
    spec.gram(block, block_size=len(block), progress=False)
    return time.perf_counter() - start


def _timed(spec, x, block_size: int, store: pathlib.Path, scheduler=None) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    k = spec.gram(x, block_size=block_size, progress=False, store=store, scheduler=scheduler)
    return time.perf_counter() - start, k[:]


def _row(mode: str, workers: int, seconds: float, pairs: int, warm_up_seconds: list[float]) -> dict:
    return {"mode": mode, "workers": workers, "seconds": round(seconds, 3), "pairs": pairs,
            "pairs_per_second": round(pairs / seconds, 1),
            "warm_up_seconds": [round(c, 2) for c in warm_up_seconds]}


def run(n: int, block_size: int, worker_counts: list[int], images: pathlib.Path,
        tmp: pathlib.Path) -> list[dict]:
    """One row per configuration: in-process first (the reference matrix), then each cluster."""
    from dask.distributed import Client, LocalCluster

    from tangentless.kernels import myrtle

    spec, x = myrtle(5), np.load(images)
    pairs = n * (n + 1) // 2
    warm_up = _warm_up(spec, x[:block_size])
    seconds, reference = _timed(spec, x, block_size, tmp / "in_process.zarr")
    rows = [_row("in-process", 0, seconds, pairs, [warm_up])]
    for count in worker_counts:
        with LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            warm_ups = list(client.run(_warm_up, spec, x[:block_size]).values())
            seconds, k = _timed(spec, x, block_size, tmp / f"dask_{count}.zarr", client)
        if not np.array_equal(k, reference):
            raise AssertionError(f"the {count}-worker matrix differs from the in-process one")
        rows.append(_row("dask", count, seconds, pairs, warm_ups))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=128,
                        help="images (the Gram is n x n; 128 at blocks of 16: 36 blocks, ~8k pairs)")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "gram_scaling.json")
    args = parser.parse_args(argv)

    from tangentless.benchmarks.machine import describe_machine

    with tempfile.TemporaryDirectory() as tmp:
        images = pathlib.Path(tmp) / "images.npy"
        source = prepare_images(args.n, images)
        rows = run(args.n, args.block_size, args.workers, images, pathlib.Path(tmp))
    for row in rows:
        print(json.dumps(row), flush=True)
    by_workers = {r["workers"]: r["pairs_per_second"] for r in rows if r["mode"] == "dask"}
    result = {"benchmark": "gram_scaling", "machine": describe_machine(), "images": source,
              "spec": "myrtle(5), precision='mixed', 32x32x3", "n": args.n,
              "block_size": args.block_size, "bit_identical": True, "results": rows,
              "speedup_over_one_worker": {w: round(p / by_workers[1], 2) for w, p in by_workers.items()}
              if 1 in by_workers else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
