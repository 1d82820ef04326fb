"""Pairs per second, compile time and peak memory of ``myrtle(5|7|10).gram`` on 32x32x3 images,
per Gram backend ("numba": the fused CPU kernel; "jax"), and neural-tangents' NNGP side by side.

Each configuration runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own.
Usage: python -m tangentless.benchmarks.kernel_throughput [--depths 5 7 10] [--rows 32 --cols 64]
[--backends numba jax] [--nt-python VENV/bin/python]
``--nt-python``: a Python with neural-tangents (benchmarks/nt_reference.py; 0.6.5 needs jax 0.4.30
and numpy < 2: its own venv); it computes the Myrtle NNGP of the same images in the same run, checked
against ours, and the JSON gets the ratio. Without it (or where it fails) the JSON says why.
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
from tangentless.benchmarks.report import write_json
from tangentless.kernels import ZCAWhitening

#: default folder of the benchmarks' result files, relative to the current directory
RESULTS = pathlib.Path("benchmarks", "results")
#: pairs/s on the 2-core machine of this JSON: the fused CPU kernel's (issue 14); the JAX path's (issue 2)
TARGETS = {"numba": {5: 1000.0, 7: None, 10: 500.0}, "jax": {5: 100.0, 7: None, 10: 60.0}}
#: neural-tangents ratio target (fused kernel / neural-tangents, Myrtle5, same run)
NT_RATIO_TARGET = 200.0

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
    "stage (the pixel-offset plane decomposition) would keep it in L2.",
    "issue 14, backend 'numba' (compiled CPU kernel). First try: per offset plane (3969 planes of "
    "<= 32x32 at 32x32, each stage run plane by plane in L1 buffers, 2-D indexing). Predicted "
    "1000-1500 M5 pairs/s (~45 MFLOP per pair in stage 1, all in L1); measured 45-50 pairs/s (2 "
    "threads), 40 ms per pair: the planes' inner loops are ~16 long, and numba's 2-D indexing "
    "(with its negative-index handling) kept LLVM from vectorizing: a flat 3-tap box over a parent "
    "array measured 1.6 ns/entry, the same loop over 0-based views 0.10 ns.",
    "slabs instead of planes: one slab per row offset d1 holds, for every x row, the full (i2, k2) "
    "matrix with a zero border, so the conv's diagonal box is a flat offset (w + 3) and every inner "
    "loop is a contiguous view (32-1088 long); two slab buffers (157 KiB float32) stay in L2. "
    "Predicted ~1000 M5 pairs/s; measured (quick test, 32 x 16 random images, same run) numba 496 / "
    "JAX 210 (M5), 418 / 93 (M10); one pair, one thread: 2.3 ms, of which stage 1 2.16 ms (input "
    "0.48, each conv ~0.35, each ReLU ~0.4, pool ~0.3).",
    "RGB products in one pass (3 FMA per entry instead of 3 loops): predicted input 0.48 -> ~0.2 "
    "ms/pair; measured 0.19 ms; block of 16 x 16, 2 threads 645 -> 722 pairs/s.",
    "zeroing the box's border columns with strided views (2 loops per slab row instead of 32) and "
    "pooling through flat row-pair sums (17 loops per slab row instead of 48): predicted 10-20% "
    "from fewer short loops; an interleaved A/B in one process (8 x 2 blocks of 16 x 16) measured "
    "783 vs 771 pairs/s medians, within the +-15% this machine's repeats spread: loop overhead is "
    "not the limit. Kept (simpler loops).",
    "roofline (this JSON's 'roofline' and 'rates', same run): per M5 pair 73 MFLOP (stage 1 95%), "
    "70 MB of slab passes (L2); float32 matrix products ~195 GFLOP/s -> ~2660 pairs/s if the kernel "
    "ran at BLAS speed; the ReLU dual alone (7.4-8.7e9 entries/s, 2 threads, L2-resident, "
    "square-root bound) and the box (1.7-1.8e10) bound M5 at ~1830-2060 pairs/s with every other op "
    "free. The engine runs at 37-50% of that bound (56-66 GFLOP/s, two runs); the rest is the input, the pool's scatter into the 512 KiB "
    "float64 next-stage tensor, and L2 traffic between the passes (each op is its own pass over a "
    "slab: fusing ReLU into the next conv's first pass is the next step).",
    "tried after this JSON's run: each matrix's nonlinearity (or input) followed at once by the "
    "next conv's diagonal sums while the matrix is in L1 (one L2 round trip less per conv). "
    "Predicted 10-20%; an interleaved A/B (8 x 2 blocks, while a CI run shared the cores) measured "
    "504 vs 569 pairs/s medians, slower in all 8 pairs: reverted, cause not found.",
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
            images: str, backend: str) -> dict:
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
    options = dict(block_size=block, progress=False, backend=backend)
    spec.gram(x[:min(rows, block)], warm_y, **options)
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    spec.gram(x[:min(rows, block)], warm_y, **options)
    warm_call = time.perf_counter() - start
    start = time.perf_counter()
    if symmetric:
        k = spec.gram(x, **options)
        pairs = rows * (rows + 1) // 2
    else:
        k = spec.gram(x, y, **options)
        pairs = rows * cols
    seconds = time.perf_counter() - start
    assert np.isfinite(k).all()
    return {
        "backend": backend, "depth": depth, "rows": rows, "cols": rows if symmetric else cols, "symmetric": symmetric,
        "block_size": block, "pairs": pairs, "seconds": round(seconds, 3),
        "pairs_per_second": round(pairs / seconds, 1),
        "compile_seconds": round(max(first_call - warm_call, 0.0), 2),
        "peak_rss_gib": peak_rss_gib(),
        "target_pairs_per_second": TARGETS[backend][depth],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depths", type=int, nargs="+", default=[5, 7, 10])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=128)
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[0],
                        help="0 = the default block size")
    parser.add_argument("--backends", nargs="+", default=["numba", "jax"])
    parser.add_argument("--nt-python", type=pathlib.Path,
                        help="a Python with neural-tangents, for the same-run comparison")
    parser.add_argument("--nt-rows", type=int, default=16)
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

    configs = [dict(depth=d, rows=args.rows, cols=args.cols, block_size=b or None, symmetric=False,
                    backend=backend)
               for backend in args.backends for d in args.depths for b in args.block_sizes]
    configs += [dict(depth=5, rows=args.rows + args.cols, cols=0, block_size=None, symmetric=True,
                     backend=backend) for backend in args.backends]
    if args.memory_scaling:
        configs += [dict(depth=5, rows=args.rows * f, cols=args.cols, block_size=None, symmetric=False,
                         backend=args.backends[0]) for f in (2, 4)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        images = pathlib.Path(tmp) / "images.npy"
        source = prepare_images(max(c["rows"] + c["cols"] for c in configs), images, args.data)
        for config in configs:
            results.append(_run_child(dict(config, images=str(images))))
            print(json.dumps(results[-1]), flush=True)
        peer = neural_tangents_side_by_side(args.nt_python, images, args.nt_rows, results)
        print(json.dumps(peer), flush=True)
    rates = measured_rates()
    print(json.dumps(rates), flush=True)
    write_json(args.out, {"benchmark": "kernel_throughput", "machine": describe_machine(),
                          "images": source, "notes": NOTES, "results": results,
                          "ratios": backend_ratios(results), "neural_tangents": peer,
                          "rates": rates, "roofline": roofline(results, rates)})
    print(f"wrote {args.out}")


#: FLOP per tensor entry of each op of the fused kernel (float32; a square root counted as one):
#: input 2C (C = 3), conv 3x3 separable 4 adds + 1 scale, ReLU 2 products + clip 2 + |.| + degree-8
#: Horner 16 + sqrt + max + add + 2 products, AvgPool(2) 1 add + 1/4 scale
FLOP_PER_ENTRY = {"input": 6, "conv": 5, "pointwise": 25, "pool": 1.25}


def stage_counts(depth: int) -> list[dict]:
    """Per stage of myrtle(depth) on 32x32x3 images: entries of a pair's tensor, FLOP by op, and
    the bytes one pass over it moves (a float32 slab read and written: 8 B per entry)."""
    from tangentless.kernels import myrtle
    from tangentless.kernels.fused_cpu import fused_program
    program = fused_program(myrtle(depth), (32, 32, 3))
    rows = []
    for h, w, pool, _, wide, lo, hi, _ in program.stages.tolist():
        entries = (h * w) ** 2
        codes = program.ops[lo:hi, 0].astype(int).tolist()
        ops = {"input": 1, "conv": codes.count(0), "pointwise": len(codes) - codes.count(0),
               "pool": int(pool > 0)}
        flop = {op: ops[op] * FLOP_PER_ENTRY[op] * entries for op in ops}
        passes = ops["input"] + 2 * ops["conv"] + ops["pointwise"] + ops["pool"]
        rows.append({"size": [h, w], "float64": bool(wide), "entries": entries, "ops": ops,
                     "flop": flop, "flop_total": sum(flop.values()), "bytes": 8 * passes * entries})
    return rows


def measured_rates() -> dict:
    """This CPU's ceilings, same run: float32 matrix products (numpy's BLAS, all cores), and, in
    numba on all cores over L2-resident arrays, the ReLU dual's and the diagonal box's entries/s."""
    import numba
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    a @ a
    times = []
    for _ in range(3):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    matmul = 2 * 2048 ** 3 / min(times)

    @numba.njit(parallel=True, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})
    def relu(chunks, repeats):
        one, zero = np.float32(1.0), np.float32(0.0)
        q = np.float32(0.1)
        for c in numba.prange(chunks.shape[0]):
            v = chunks[c]
            for _ in range(repeats):
                for f in range(v.shape[0]):
                    rho = min(max(v[f] * q, -one), one)
                    m = abs(rho)
                    poly = (((((((q * m + q) * m + q) * m + q) * m + q) * m + q) * m + q) * m + q) * m + q
                    v[f] = max(rho, zero) + np.sqrt(one - m) * poly

    @numba.njit(parallel=True, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})
    def box(chunks, out, repeats):
        step = 35
        for c in numba.prange(chunks.shape[0]):
            n = chunks.shape[1] - 2 * step
            left, mid, right = chunks[c, :n], chunks[c, step:step + n], chunks[c, 2 * step:]
            o = out[c, step:step + n]
            for _ in range(repeats):
                for f in range(n):
                    o[f] = left[f] + mid[f] + right[f]

    chunks = np.random.default_rng(1).random((numba.get_num_threads(), 32 * 1024)).astype(np.float32)
    out = np.zeros_like(chunks)
    relu(chunks, 1)
    box(chunks, out, 1)
    repeats = 2000
    start = time.perf_counter()
    relu(chunks, repeats)
    relu_rate = chunks.size * repeats / (time.perf_counter() - start)
    start = time.perf_counter()
    box(chunks, out, repeats)
    box_rate = chunks.size * repeats / (time.perf_counter() - start)
    return {"matmul_float32_gflop_per_s": round(matmul / 1e9, 1),
            "relu_dual_entries_per_s": round(relu_rate), "box_entries_per_s": round(box_rate),
            "threads": numba.get_num_threads()}


def roofline(results: list[dict], rates: dict) -> list[dict]:
    """Per depth: FLOP and bytes per pair by stage, the pairs/s the matrix-product peak would
    allow, the pairs/s the measured ReLU and box rates allow (every other op free), and where the
    fused backend sits."""
    rows = []
    for depth in sorted({r["depth"] for r in results}):
        stages = stage_counts(depth)
        flop = sum(s["flop_total"] for s in stages)
        relu_entries = sum(s["ops"]["pointwise"] * s["entries"] for s in stages)
        box_entries = sum(2 * s["ops"]["conv"] * s["entries"] for s in stages)
        elementwise_seconds = (relu_entries / rates["relu_dual_entries_per_s"]
                               + box_entries / rates["box_entries_per_s"])
        fused = [r["pairs_per_second"] for r in results
                 if r["depth"] == depth and r["backend"] == "numba" and not r["symmetric"]]
        row = {"depth": depth, "stages": stages, "flop_per_pair": flop,
               "bytes_per_pair": sum(s["bytes"] for s in stages),
               "matmul_bound_pairs_per_s": round(rates["matmul_float32_gflop_per_s"] * 1e9 / flop),
               "elementwise_bound_pairs_per_s": round(1 / elementwise_seconds)}
        if fused:
            row["fused_pairs_per_s"] = max(fused)
            row["fused_fraction_of_elementwise_bound"] = round(max(fused) * elementwise_seconds, 2)
            row["fused_gflop_per_s"] = round(max(fused) * flop / 1e9, 1)
        rows.append(row)
    return rows


def backend_ratios(results: list[dict]) -> list[dict]:
    """Per (depth, shape): each backend's pairs/s over the JAX backend's, same run."""
    base = {(r["depth"], r["rows"], r["cols"], r["symmetric"]): r["pairs_per_second"]
            for r in results if r["backend"] == "jax" and r["block_size"] == results[0]["block_size"]}
    return [{"backend": r["backend"], "depth": r["depth"], "rows": r["rows"], "cols": r["cols"],
             "symmetric": r["symmetric"],
             "over_jax": round(r["pairs_per_second"] / base[key], 2)}
            for r in results if r["backend"] != "jax"
            and (key := (r["depth"], r["rows"], r["cols"], r["symmetric"])) in base]


def neural_tangents_side_by_side(python: pathlib.Path | None, images: pathlib.Path, rows: int,
                                 results: list[dict], depth: int = 5) -> dict:
    """neural-tangents' Myrtle NNGP of ``rows`` x ``rows`` images in ``python`` (nt_reference.py),
    checked against myrtle(depth, head="linear") / channels here, and the ratio of this run's
    fastest backend to it; or {"skipped": why}."""
    if python is None:
        return {"skipped": "no --nt-python given (neural-tangents 0.6.5 needs jax 0.4.30, numpy < 2: "
                           "a venv of its own)"}
    script = pathlib.Path(__file__).with_name("nt_reference.py")
    out = subprocess.run([str(python), str(script), str(images), str(rows), str(rows), str(depth),
                          str(rows)], capture_output=True, text=True)
    if out.returncode:
        return {"skipped": f"neural-tangents failed: {out.stderr.strip().splitlines()[-1:]}"}
    peer = json.loads(out.stdout.strip().splitlines()[-1])
    from tangentless.kernels import myrtle
    pixels = np.load(images)
    ours = myrtle(depth, head="linear").gram(pixels[:rows], pixels[rows:2 * rows], progress=False)
    theirs = np.asarray(peer.pop("kernel")) * pixels.shape[-1]
    peer["max_relative_difference"] = float(np.abs(ours - theirs).max() / np.abs(ours).max())
    fastest = max((r for r in results if r["depth"] == depth and not r["symmetric"]),
                  key=lambda r: r["pairs_per_second"])
    peer["ratio"] = {"backend": fastest["backend"], "pairs_per_second": fastest["pairs_per_second"],
                     "over_neural_tangents": round(fastest["pairs_per_second"]
                                                   / peer["pairs_per_second"], 1),
                     "target": NT_RATIO_TARGET}
    return peer


def _run_child(config: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "tangentless.benchmarks.kernel_throughput",
                          "--one", json.dumps(config)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"benchmark configuration {config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
