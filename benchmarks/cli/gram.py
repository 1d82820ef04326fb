"""The ``tangentless gram`` command: the Myrtle kernel matrix of a set of images and its cost."""
from __future__ import annotations

import contextlib
import json
import pathlib
import time

import numpy as np

from ...kernels._shared.atomic import atomic_write
from ...kernels._shared.defaults import MYRTLE_NAMES
from .arguments import output_file


#: seconds ``gram --scheduler ADDRESS`` waits for the Dask scheduler to answer
SCHEDULER_TIMEOUT = 5


def _connect(stack: contextlib.ExitStack, scheduler: str | None):
    """``--scheduler`` for ``gram``: None and "local" as given; a scheduler address as a Dask
    Client connected here (closed with ``stack``), ValueError where none answers within
    :data:`SCHEDULER_TIMEOUT` seconds."""
    if scheduler in (None, "local"):
        return scheduler
    from dask.distributed import Client  # optional dependency
    try:
        return stack.enter_context(Client(scheduler, timeout=SCHEDULER_TIMEOUT))
    except OSError as err:  # TimeoutError, ConnectionRefusedError, ...
        raise ValueError(f"--scheduler {scheduler}: no Dask scheduler answered within "
                         f"{SCHEDULER_TIMEOUT} s ({type(err).__name__}: {err})") from None


def run_gram(args) -> int:
    """The ``gram`` command: a Myrtle kernel matrix of images, its cost printed as JSON."""
    from ...kernels import ZCAWhitening, myrtle
    from ...kernels.architectures import myrtle_depth
    from ..datasets import load_digits_images, load_npz_images
    output_file(args, "--out", (".npy", ".zarr"), folder_suffixes=(".zarr",))
    if args.images is None:
        images, _ = load_digits_images()
        source = "scikit-learn digits (8x8x1)"
    else:
        images, _ = load_npz_images(args.images)
        source = str(args.images)
    if args.n is not None:
        if args.n < 1:
            raise ValueError(f"--n must be >= 1, got {args.n}")
        images = images[: args.n]
    images = images.astype(np.float32)
    if args.zca:
        images = ZCAWhitening(bias=args.zca_bias).fit_transform(images)
    spec = myrtle(myrtle_depth(args.arch), nonlinearity=args.nonlinearity, head=args.head,
                  precision=args.precision)
    to_store = args.out is not None and args.out.suffix == ".zarr"
    options = {"flip": args.flip, "block_size": args.block_size, "progress": not args.quiet,
               "scheduler": args.scheduler, "workers": args.workers}
    if to_store:
        options.update(store=args.out, preprocessing={"zca_bias": args.zca_bias if args.zca else None})
    # compilation first, timed on its own: the rate below is the engine's, not the compiler's
    start = time.perf_counter()
    spec.gram(images[:2], flip=args.flip, progress=False)
    compile_seconds = time.perf_counter() - start
    with contextlib.ExitStack() as stack:
        options["scheduler"] = _connect(stack, args.scheduler)
        start = time.perf_counter()
        k = spec.gram(images, **options)
        seconds = time.perf_counter() - start
    n = len(images)
    summary = {
        "source": source, "images": n, "image_shape": list(images.shape[1:]), "arch": args.arch,
        "nonlinearity": args.nonlinearity, "head": args.head, "precision": args.precision,
        "flip": args.flip, "zca": args.zca, "compile_seconds": round(compile_seconds, 3),
        "seconds": round(seconds, 3),
        "pairs": n * (n + 1) // 2 * (2 if args.flip else 1),   # distinct pairs, x2 with flips
        "evaluations": layout_evaluations(spec, images, args.block_size, args.flip),
    }
    if to_store:
        summary.update(_store_summary(args.out, k, seconds))
    else:
        summary.update(evaluations_per_second=round(summary["evaluations"] / seconds, 1),
                       min_eigenvalue=float(np.linalg.eigvalsh(k).min()),
                       diagonal_range=[float(np.diag(k).min()), float(np.diag(k).max())])
        if args.out is not None:
            out = atomic_write(args.out, lambda f: np.save(f, k))  # never half-written at --out
            summary["out"] = str(out)
    print(json.dumps(summary, indent=2))
    return 0


def layout_evaluations(spec, images: np.ndarray, block_size: int | None, flip: bool) -> int:
    """The pair evaluations the engine does for K(images, images), as its progress bar counts them:
    every block of the upper triangle whole (diagonal blocks included), x2 with flips."""
    from ...kernels.backend import resolve_backend
    from ...kernels.gram import block_layout
    backend = resolve_backend(None, spec, images.shape[1:])
    layout = block_layout(spec, images, images, backend, block_size, True, flip)
    return sum(layout.evaluations(i, j) for i, j in layout.pairs)


def _store_summary(path: pathlib.Path, k, seconds: float) -> dict:
    """This run's record of a Zarr store: blocks reused, found corrupt and computed, and the pair
    evaluations per second of what it computed (no eigenvalue: K stays on disk)."""
    from ...kernels.store import GramStore
    run = GramStore(path).runs()[-1]
    diagonal = k.vindex[np.arange(k.shape[0]), np.arange(k.shape[0])]
    return {"out": str(path), "blocks": run["blocks"], "blocks_reused": run["reused"],
            "blocks_corrupt": run["corrupt"], "blocks_computed": run["computed"],
            "evaluations_per_second": round(run["evaluations"] / seconds, 1),
            "diagonal_range": [float(diagonal.min()), float(diagonal.max())]}


def add_command(subparsers) -> None:
    """Add ``gram`` to an ``add_subparsers()`` object."""
    g = subparsers.add_parser(
        "gram", help="compute a Myrtle kernel matrix of a set of images",
        description="Compute the symmetric Myrtle kernel matrix K(x, x) of a set of images and print "
                    "its cost. Without --images it uses scikit-learn's bundled 8x8 digits.")
    g.add_argument("--images", type=pathlib.Path,
                   help=".npz file with 'images' (N, H, W, C); H, W divisible by 4 (default: digits)")
    g.add_argument("--n", type=int, help="use only the first N images")
    g.add_argument("--arch", choices=sorted(MYRTLE_NAMES), default="myrtle5")
    g.add_argument("--nonlinearity", choices=["relu", "gaussian"], default="relu")
    g.add_argument("--head", choices=["project", "linear"], default="project")
    g.add_argument("--precision", choices=["mixed", "float32", "float64"], default="mixed")
    g.add_argument("--flip", action="store_true", help="flip-symmetrized kernel K(x,y) + K(x,Fy)")
    g.add_argument("--no-zca", dest="zca", action="store_false",
                   help="skip ZCA whitening (fitted on the same images)")
    g.add_argument("--zca-bias", type=float, default=1e-5)
    g.add_argument("--block-size", type=int, help="images per block (bounds memory)")
    g.add_argument("--out", type=pathlib.Path,
                   help="write the matrix to this .npy file, or to a resumable Zarr store if it ends "
                        "in .zarr (rerunning the same command after an interruption computes only "
                        "the unfinished blocks)")
    g.add_argument("--scheduler",
                   help="compute the blocks on Dask: 'local' (a local cluster of --workers "
                        "processes) or a scheduler address such as tcp://host:8786")
    g.add_argument("--workers", type=int,
                   help="processes of the --scheduler local cluster (default: one per CPU core)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(run=run_gram, parser=g)
