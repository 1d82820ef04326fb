"""The kernel matrix of a training pool and a test set, K[pool + test, pool], in two resumable
Zarr stores (:mod:`tangentless.kernels.store`): an interrupted computation resumes block by block."""
from __future__ import annotations

import datetime
import pathlib

import numpy as np

from ...kernels.store import GramStore


def pool_test_pairs(pool: int, test: int, flip: bool) -> int:
    """Distinct kernel evaluations of K[pool + test, pool]: P (P + 1) / 2 + T P, twice with flips."""
    return (pool * (pool + 1) // 2 + test * pool) * (2 if flip else 1)


def selection_pairs(selection: dict, n: int, flip: bool) -> int:
    """Distinct kernel evaluations of the training kernels a selection record
    (:mod:`.selection`) scored: n (n + 1) / 2 for the plain kernel of each grid point's settings
    other than flips, plus as many for its mirror half where one of those points has flips (or
    else ``flip``): flips on and off share the plain half (``GramCache``; the small-data stores)."""
    halves: dict[tuple, set] = {}
    for point in selection["scores"] or [{}]:
        settings = tuple(sorted((k, repr(v)) for k, v in point.items() if k not in ("flip", "score")))
        halves.setdefault(settings, {False}).add(bool(point.get("flip", flip)))
    return n * (n + 1) // 2 * sum(len(kinds) for kinds in halves.values())


def _seconds(run: dict) -> float:
    start, end = (datetime.datetime.fromisoformat(run[key]) for key in ("started", "finished"))
    return (end - start).total_seconds()


def gram_block(spec, x: np.ndarray, y: np.ndarray | None, *, flip: bool, store: pathlib.Path,
               preprocessing: dict | None = None, progress: bool = True) -> np.ndarray:
    """K(x, y) float64 (K(x, x), symmetric, where y is None) in the resumable store ``store``
    (a ``.zarr`` path; a store made from other images or settings is refused)."""
    return np.asarray(spec.gram(x, y, store=store, flip=flip, progress=progress,
                                preprocessing=preprocessing))


def stores_cost(stores) -> dict:
    """``{"evaluations", "seconds", "pairs_per_second"}`` of the finished runs of the given
    stores (interrupted runs record no time; their finished blocks are kept): the engine's
    evaluations (diagonal blocks are computed whole), their wall time (1 s resolution), and
    ``pairs_per_second`` = evaluations / seconds, or None where no run took a measurable time."""
    runs = [run for store in stores if pathlib.Path(store).exists()
            for run in GramStore(store).runs() if "finished" in run and run["computed"]]
    evaluations = sum(run["evaluations"] for run in runs)
    seconds = sum(_seconds(run) for run in runs)
    return {"evaluations": evaluations, "seconds": seconds,
            "pairs_per_second": round(evaluations / seconds, 1) if seconds else None}


def pool_test_gram(spec, pool: np.ndarray, test: np.ndarray, *, flip: bool, folder: pathlib.Path,
                   preprocessing: dict | None = None, progress: bool = True) -> tuple[np.ndarray, dict]:
    """K (P + T, P) float64: rows 0..P-1 the symmetric pool kernel, rows P.. the test kernel.

    pool (P, H, W, C), test (T, H, W, C): preprocessed images (``preprocessing`` describes how,
    for the stores' records). The stores are ``folder/pool.zarr`` (K(pool, pool)) and
    ``folder/test.zarr`` (K(test, pool)) (:func:`gram_block`), so the caller puts a checksum of
    the images and settings into ``folder``'s name. Returns K and the cost ``{"pairs", **``
    :func:`stores_cost` ``}``: ``pairs`` the distinct pairs (:func:`pool_test_pairs`).
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    options = {"flip": flip, "progress": progress, "preprocessing": preprocessing}
    stores = [folder / "pool.zarr", folder / "test.zarr"]
    blocks = [gram_block(spec, pool, None, store=stores[0], **options),
              gram_block(spec, test, pool, store=stores[1], **options)]
    return np.concatenate(blocks), {"pairs": pool_test_pairs(len(pool), len(test), flip),
                                    **stores_cost(stores)}
