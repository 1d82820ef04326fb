"""Pairs per second, compile time and peak memory of ``myrtle(5|7|10).gram`` on 32x32x3 images.

Each configuration runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own.
Usage: python -m tangentless.benchmarks.kernel_throughput [--depths 5 7 10] [--rows 32 --cols 64]
Writes ``--out`` (default: benchmarks/results/kernel_throughput.json under the current directory),
with the machine description.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

from tangentless.benchmarks.datasets import resolve_data
from tangentless.kernels import ZCAWhitening

#: default folder of the benchmarks' result files, relative to the current directory
RESULTS = pathlib.Path("benchmarks", "results")
TARGETS = {5: 100.0, 7: None, 10: 60.0}  # pairs/s on the 2-core CI machine (issue 2)

# Each optimisation: what we predicted, what we measured (Myrtle5, 2-core AMD EPYC, float32 body).
NOTES = [
    "baseline: pad + 9 shifted slices per conv, reshape-mean pooling, whole (Bx, By) block per XLA "
    "call: 67 pairs/s (B=8). Prediction: memory-bound, each 4 MiB/pair pass costs ~1.2 ms at ~7 GB/s.",
    "per-op profile (1 pair): patch-matmul input conv 0.46-1.3 ms, ReLU with polynomial arccos "
    "0.54 ms (jnp.arccos: 6.9 ms, so the A&S 4.4.46 polynomial is kept), conv 0.63 ms, but ReLU fused "
    "into a reshape-mean pool 2.9-3.6 ms: XLA's reduce fusion is slow on CPU.",
    "AvgPool(2) as 16 strided slices instead of reshape-mean: predicted to remove ~2.8 ms/pair; "
    "measured relu+pool 3.6 -> 0.77 ms/pair.",
    "lax.map over the rows of x (one x image against the whole y block per step, so the 32x32 "
    "tensors of a step stay near the 32 MiB L3): predicted 2-3x from cache reuse; measured "
    "Myrtle5 111 -> 290 pairs/s (B=16..32, prototype); in the engine 263 (M5) and 67 (M10) pairs/s, "
    "and block sizes 4..32 all gave 64-66 pairs/s for M10: not DRAM-bound any more, but slow per pair.",
    "one image pair per lax.map step (4 MiB tensors) and ReLU as max(rho,0) + sqrt(1-|rho|) Q(|rho|) "
    "(one sqrt instead of two; the second sqrt made XLA materialize an extra 4 MiB tensor per ReLU): "
    "micro-benchmark conv+ReLU chain 3.3 -> 1.8 ms/pair; engine M5 263 -> 387, M10 67 -> 101 pairs/s.",
    "the optimized HLO showed each conv fusion recomputing the previous ReLU (and, through it, the "
    "chain before it): XLA rewrites the centre slice of pad(x) into x, so a deep stage recomputes a "
    "cascade. An optimization_barrier on the padded input stops it. Predicted: large gain for M10 "
    "(two conv-after-ReLU links per stage), small for M5; measured per pair 10.2 -> 5.4 ms (M10), "
    "3.1 -> 2.7 ms (M5); engine M10 101 -> 182 pairs/s, M5 unchanged within noise (~380).",
    "symmetric Gram, n=96: diagonal blocks are computed whole, so two blocks of 48 evaluate 6912 "
    "pairs for 4656 distinct ones (299 pairs/s). Tried: upper-triangle pair lists with gathered "
    "indices; predicted ~420 pairs/s, measured 298: the gathers cost ~1 ms/pair (5.2 vs 4.2 ms in an "
    "A/B), eating the saving; reverted. Instead: blocks of 16 at 32x32 (speed does not depend on "
    "the block since a step is one pair): 5376 evaluations, measured 413 pairs/s.",
    "peak memory: each configuration runs in a fresh process that loads prepared images; its peak is "
    "VmHWM (ru_maxrss also counted the parent's memory inherited through fork), i.e. the engine's: "
    "JAX runtime + compiled code + per-image infos + one pair's tensors.",
    "remaining gap to the arithmetic limit (~1500 M5 pairs/s at 190 GFLOP/s): 4 passes over a "
    "4-5 MiB tensor per conv+ReLU link that does not fit the 1 MiB L2; a fused per-offset-plane "
    "stage (the pixel-offset plane decomposition) would keep it in L2. Not done yet.",
]


def prepare_images(n: int, path: pathlib.Path, data: pathlib.Path | None = None) -> str:
    """Write n ZCA-whitened CIFAR-10 images (cifar10/train.npz of the data folder ``data``,
    :func:`~tangentless.benchmarks.datasets.resolve_data`; Gaussian noise where it is absent) to
    ``path`` (.npy) and say what they are. Done once, in the parent, so that the children's peak
    memory is the Gram engine's own."""
    cifar = resolve_data("cifar10/train.npz", data)
    if cifar.exists():
        with np.load(cifar) as arrays:
            train = arrays["images"].astype(np.float32)
        if n > len(train):
            raise ValueError(f"at most {len(train)} images in {cifar}, asked for {n}")
        np.save(path, ZCAWhitening().fit(train).transform(train[:n]))
        return "CIFAR-10 (exact subset), ZCA-whitened"
    np.save(path, np.random.default_rng(0).normal(size=(n, 32, 32, 3)).astype(np.float32))
    return "Gaussian noise"


def run_one(depth: int, rows: int, cols: int, block_size: int | None, symmetric: bool,
            images: str) -> dict:
    """One configuration in this process: compile time, steady throughput, peak memory."""
    from tangentless.benchmarks.machine import peak_rss_gib
    from tangentless.kernels import default_block_size, myrtle

    spec = myrtle(depth)
    block = block_size or default_block_size(32, 32)
    pixels = np.load(images, mmap_mode="r")
    x, y = np.array(pixels[:rows]), np.array(pixels[rows:rows + cols])
    # a warm-up call on one block of the same shapes compiles the self pass and the block function
    warm_y = None if symmetric else y[:min(cols, block)]
    start = time.perf_counter()
    spec.gram(x[:min(rows, block)], warm_y, block_size=block, progress=False)
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    spec.gram(x[:min(rows, block)], warm_y, block_size=block, progress=False)
    warm_call = time.perf_counter() - start
    start = time.perf_counter()
    if symmetric:
        k = spec.gram(x, block_size=block, progress=False)
        pairs = rows * (rows + 1) // 2
    else:
        k = spec.gram(x, y, block_size=block, progress=False)
        pairs = rows * cols
    seconds = time.perf_counter() - start
    assert np.isfinite(k).all()
    return {
        "depth": depth, "rows": rows, "cols": rows if symmetric else cols, "symmetric": symmetric,
        "block_size": block, "pairs": pairs, "seconds": round(seconds, 3),
        "pairs_per_second": round(pairs / seconds, 1),
        "compile_seconds": round(max(first_call - warm_call, 0.0), 2),
        "peak_rss_gib": peak_rss_gib(),
        "target_pairs_per_second": TARGETS[depth],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depths", type=int, nargs="+", default=[5, 7, 10])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=128)
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[0],
                        help="0 = the default block size")
    parser.add_argument("--memory-scaling", action="store_true",
                        help="also run Myrtle5 at 2x and 4x the rows (peak memory must not grow)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=pathlib.Path,
                        help="data folder holding cifar10/train.npz (default: $TANGENTLESS_DATA, else "
                             "~/.cache/tangentless)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "kernel_throughput.json")
    args = parser.parse_args(argv)
    if args.one:  # child process: one configuration, JSON on stdout
        print(json.dumps(run_one(**json.loads(args.one))))
        return

    from tangentless.benchmarks.machine import describe_machine

    configs = [dict(depth=d, rows=args.rows, cols=args.cols, block_size=b or None, symmetric=False)
               for d in args.depths for b in args.block_sizes]
    configs.append(dict(depth=5, rows=args.rows + args.cols, cols=0, block_size=None, symmetric=True))
    if args.memory_scaling:
        configs += [dict(depth=5, rows=args.rows * f, cols=args.cols, block_size=None, symmetric=False)
                    for f in (2, 4)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        images = pathlib.Path(tmp) / "images.npy"
        source = prepare_images(max(c["rows"] + c["cols"] for c in configs), images, args.data)
        for config in configs:
            results.append(_run_child(dict(config, images=str(images))))
            print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "kernel_throughput", "machine": describe_machine(),
                                    "images": source, "notes": NOTES, "results": results},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


def _run_child(config: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "tangentless.benchmarks.kernel_throughput",
                          "--one", json.dumps(config)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"benchmark configuration {config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
