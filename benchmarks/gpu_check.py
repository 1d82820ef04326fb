"""GPU check of the CUDA Gram backend: build, correctness against the JAX path, and speed.

On a machine with an NVIDIA GPU, CuPy and JAX with CUDA (e.g. the device tool's H200), from the
repository root:
    pip install -q --no-deps --no-build-isolation -e .
    python3 -m tangentless.benchmarks.gpu_check [--quick]
1. prints the device; builds csrc/ through CuPy (timed; a fresh process, so a real build unless
   CuPy's disk cache already holds it);
2. checks the CUDA backend against the JAX path on the same GPU, fresh random 32x32x3 inputs each
   run: Myrtle5 and Myrtle10 (paper's mixed precision), fused and unfused, rectangular,
   flip-symmetrized and symmetric, relative error < 1e-5; outputs poisoned with NaN beforehand
   (CuPy's pool is filled with NaN, so an unwritten element shows); a DirectSum spec must warn and
   fall back to JAX; a zero-copy DLPack exchange JAX -> CuPy;
3. times pairs/s (median of repeats after warm-up; CUDA events and host clock) and FLOP/s
   (:meth:`Plan.flop_per_pair`: 1.33e8 / 1.79e8 FLOP per Myrtle5 / Myrtle10 pair, the plan's cost
   model) of one block of the CUDA backend, fused and unfused, the 32x32 fused stage alone, the JAX
   path on the same GPU at its GPU setting (``pairs_per_step`` for the device, a block of at least
   one step; recorded), and a whole symmetric ``gram`` (self pass included);
4. compares with the targets (issue 5): fused stage >= 40% of the float32 rate (67 TFLOP/s, H200
   datasheet), >= 20x the JAX path, full CIFAR-10 Myrtle10 (1.75e9 pairs) < 3 hours.
Writes ``--out`` (default: benchmarks/results/gpu_check.json under the current directory), and a
copy to $OUT/gpu_check.json when OUT is set, with the machine description. Exit status: 0 when
every correctness check passed (speed targets are reported, not enforced), 1 when a check failed
or a section raised, 2 without a usable GPU.
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to CuPy too

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from .kernel_throughput import RESULTS  # noqa: E402

FP32_PEAK = 67e12  # H200 SXM float32 (non-tensor) rate, datasheet
CIFAR_PAIRS = 1.75e9  # 50k^2 / 2 + 10k * 50k
TARGETS = {"fused_stage_fraction_of_fp32_peak": 0.40, "speedup_over_jax": 20.0,
           "cifar10_myrtle10_hours": 3.0}
TOLERANCE = 1e-5
#: (images per timed block, timed repeats, images per JAX-path block) for a full and a quick run
SIZES = {"full": (64, 5, 16), "quick": (32, 3, 8)}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def device_description(cupy) -> dict:
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return {"name": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "multiprocessors": props["multiProcessorCount"],
            "memory_gib": round(props["totalGlobalMem"] / 2 ** 30, 1),
            "l2_mib": round(props["l2CacheSize"] / 2 ** 20, 1),
            "shared_per_block_optin_kib": props.get("sharedMemPerBlockOptin", 0) // 1024,
            "driver": cupy.cuda.runtime.driverGetVersion(),
            "runtime": cupy.cuda.runtime.runtimeGetVersion(), "cupy": cupy.__version__}


def poison(cupy, nbytes: int = 2 << 30) -> None:
    """Fill free blocks of CuPy's memory pool with NaN, so that later uninitialized allocations
    (xp.empty) read NaN wherever a kernel fails to write."""
    cupy.get_default_memory_pool().free_all_blocks()
    filler = cupy.full(nbytes // 4, np.nan, np.float32)
    del filler
    cupy.cuda.Device().synchronize()


def relative_error(out, reference) -> float:
    return float(np.linalg.norm(out - reference) / np.linalg.norm(reference))


def check(name, out, reference, results) -> bool:
    error = relative_error(out, reference)
    spread = float(np.linalg.norm(out - reference) / np.linalg.norm(reference - reference.mean()))
    ok = bool(np.isfinite(out).all() and error < TOLERANCE)
    results.append({"check": name, "relative_error": error, "error_over_spread": spread, "ok": ok})
    log(f"  {'ok  ' if ok else 'FAIL'} {name}: relative error {error:.2e} "
        f"(over the spread {spread:.2e})")
    return ok


def correctness(cupy, depths, rng, results) -> None:
    from tangentless.kernels import (AvgPool, Conv, CudaBackend, CudaFallbackWarning, DirectSum,
                                     Gaussian, GlobalAvgPool, Relu, gram, myrtle, serial)
    x, y = (rng.normal(size=(6, 32, 32, 3)).astype(np.float32) for _ in range(2))
    for depth in depths:
        spec = myrtle(depth)
        t = time.perf_counter()
        references = {"rectangular": gram(spec, x, y, block_size=8, progress=False, backend="jax"),
                      "flip": gram(spec, x, y, flip=True, block_size=8, progress=False, backend="jax"),
                      "symmetric": gram(spec, x, block_size=8, progress=False, backend="jax")}
        log(f"Myrtle{depth}: JAX references in {time.perf_counter() - t:.1f} s")
        for fused in (True, False):
            backend = CudaBackend(fused=fused)
            for kind, reference in references.items():
                poison(cupy)
                out = gram(spec, x, None if kind == "symmetric" else y, flip=kind == "flip",
                           block_size=8, progress=False, backend=backend)
                check(f"myrtle{depth} {'fused' if fused else 'unfused'} {kind}", out, reference, results)
    spec = serial(Conv(3), DirectSum(Relu(), Gaussian()), AvgPool(2), Conv(3), Relu(), GlobalAvgPool())
    reference = gram(spec, x, y, block_size=8, progress=False, backend="jax")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = gram(spec, x, y, block_size=8, progress=False, backend="cuda")
    warned = any(issubclass(w.category, CudaFallbackWarning) and "DirectSum" in str(w.message)
                 for w in caught)
    ok = warned and bool(np.array_equal(out, reference))
    results.append({"check": "DirectSum falls back to JAX with a warning", "warned": warned, "ok": ok})
    log(f"  {'ok  ' if ok else 'FAIL'} DirectSum fallback (warned: {warned})")


def dlpack_zero_copy(cupy) -> dict:
    import jax.numpy as jnp

    from tangentless.kernels.cuda import CupyLauncher
    a = jnp.arange(1024, dtype=jnp.float32)
    b = CupyLauncher().from_jax(a)
    same = b.data.ptr == a.unsafe_buffer_pointer()
    return {"check": "DLPack JAX -> CuPy is zero-copy", "ok": bool(same and float(b[7]) == 7.0)}


def event_times(cupy, fn, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """(device seconds by CUDA events, host seconds) of fn() after warm-up."""
    for _ in range(warmup):
        fn()
    cupy.cuda.Device().synchronize()
    device, host = [], []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        t = time.perf_counter()
        start.record()
        fn()
        end.record()
        end.synchronize()
        host.append(time.perf_counter() - t)
        device.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return device, host


def speed(cupy, depth, images, jax_images, repeats, rng) -> dict:
    """Pairs/s of one CUDA block (fused, unfused), of the fused 32x32 stage, and of the JAX path."""
    import jax

    from tangentless.kernels import CudaBackend, JaxBackend, gram, myrtle
    from tangentless.kernels.cuda import norms_from_infos, run_stage
    spec = myrtle(depth)
    fused = CudaBackend(fused=True)
    plan = fused.plan(spec, (32, 32, 3))
    flop = plan.flop_per_pair()
    out = {"depth": depth, "spec": repr(spec), "flop_per_pair": flop,
           "stages": [("fused " if st.fused else "") + "+".join(s.kind for s in st.steps)
                      + f" @{st.steps[0].h} {st.steps[0].dtype}" for st in plan.stages]}
    x, *ys = [rng.normal(size=(images, 32, 32, 3)).astype(np.float32) for _ in range(3)]
    variants = (("fused", fused, images), ("unfused", CudaBackend(fused=False), images // 2))
    for name, backend, rows in variants:
        info_x = backend.self_info(spec, x[:rows])
        rotation = itertools.cycle([(y[:rows], backend.self_info(spec, y[:rows])) for y in ys])

        def block():
            y, info_y = next(rotation)
            return backend.compute_block(spec, x[:rows], y, info_x, info_y)

        device, host = event_times(cupy, block, 2, repeats)
        pairs = rows * rows
        rate = pairs / statistics.median(host)
        out[name] = {"pairs_per_block": pairs, "device_s": device, "host_s": host,
                     "pairs_per_s": rate, "tflop_per_s": rate * flop / 1e12,
                     "device_pairs_per_s": pairs / statistics.median(device)}
        log(f"Myrtle{depth} {name}: {rate:,.0f} pairs/s, {rate * flop / 1e12:.2f} TFLOP/s "
            f"({pairs} pairs per block)")

    stage = plan.stages[0]
    launcher = fused.launcher
    info_x, info_y = fused.self_info(spec, x), fused.self_info(spec, ys[0])
    with launcher.context():
        xs, yd = launcher.from_jax(info_x["images"]), launcher.from_jax(info_y["images"])
        nx, ny = (norms_from_infos(plan, launcher, i["infos"]) for i in (info_x, info_y))
        device, _ = event_times(cupy, lambda: run_stage(launcher, stage, None, xs, yd, nx, ny),
                                2, repeats)
    stage_flop = plan.flop_per_pair(stage.steps) * images * images
    stage_rate = stage_flop / statistics.median(device)
    out["fused_stage"] = {"steps": [s.kind for s in stage.steps],
                          "flop_per_pair": stage_flop / images ** 2,
                          "device_s": device, "tflop_per_s": stage_rate / 1e12,
                          "fraction_of_fp32_peak": stage_rate / FP32_PEAK,
                          "share_of_block_time": statistics.median(device) / statistics.median(
                              out["fused"]["device_s"])}
    log(f"Myrtle{depth} fused 32x32 stage: {stage_rate / 1e12:.2f} TFLOP/s = "
        f"{stage_rate / FP32_PEAK:.1%} of {FP32_PEAK / 1e12:.0f}")

    from tangentless.kernels.jax_backend import pairs_per_step
    step = pairs_per_step(32, 32)  # the JAX path at its setting for this device
    jax_images = min(len(x), max(jax_images, math.isqrt(step)))  # a block of at least one step
    jax_backend = JaxBackend()
    xj, yj = x[:jax_images], ys[0][:jax_images]
    ixj, iyj = jax_backend.self_info(spec, xj), jax_backend.self_info(spec, yj)
    jax_backend.compute_block(spec, xj, yj, ixj, iyj)  # compile
    host = []
    for _ in range(max(2, repeats // 2)):
        t = time.perf_counter()
        jax_backend.compute_block(spec, xj, yj, ixj, iyj)
        host.append(time.perf_counter() - t)
    jax_rate = jax_images ** 2 / statistics.median(host)
    out["jax"] = {"device": str(jax.devices()[0]), "pairs_per_step": step,
                  "pairs_per_block": jax_images ** 2, "host_s": host,
                  "pairs_per_s": jax_rate}
    out["speedup_over_jax"] = out["fused"]["pairs_per_s"] / jax_rate
    log(f"Myrtle{depth} JAX path: {jax_rate:,.0f} pairs/s on {jax.devices()[0]}; "
        f"CUDA fused is {out['speedup_over_jax']:.1f}x")

    n = 2 * images
    grams = rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
    gram(spec, grams[:images], block_size=images, progress=False, backend=fused)  # warm the shapes
    t = time.perf_counter()
    gram(spec, grams, block_size=images, progress=False, backend=fused)
    seconds = time.perf_counter() - t
    out["gram_end_to_end"] = {"images": n, "block_size": images, "seconds": seconds,
                              "distinct_pairs_per_s": n * (n + 1) / 2 / seconds}
    log(f"Myrtle{depth} symmetric gram of {n} images: {seconds:.2f} s "
        f"({n * (n + 1) / 2 / seconds:,.0f} distinct pairs/s, self pass included)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="time blocks of 32 images (not 64) with 3 repeats (not 5)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "gpu_check.json")
    args = parser.parse_args(argv)
    try:
        import cupy
    except ImportError as err:
        print(f"gpu_check: CuPy is not importable ({err}); install it with pip install "
              "'tangentless[gpu]' and run on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    from tangentless.kernels import cuda
    if not cuda.available():
        print("gpu_check: CuPy sees no CUDA GPU here; run this on a machine with an NVIDIA GPU",
              file=sys.stderr)
        return 2
    import jax

    from tangentless.benchmarks.machine import describe_machine
    seed = int(np.random.SeedSequence().entropy % 2 ** 63)
    rng = np.random.default_rng(seed)
    report = {"machine": describe_machine(), "device": device_description(cupy), "seed": seed,
              "quick": args.quick, "targets": TARGETS, "fp32_peak_flop_per_s": FP32_PEAK,
              "jax_devices": [str(d) for d in jax.devices()], "checks": [], "speed": [], "errors": []}
    log(f"device: {report['device']}; JAX: {report['jax_devices']}")

    sections = [("build", lambda: report.update(build_s=timed(cuda.CupyLauncher().build))),
                ("dlpack", lambda: report["checks"].append(dlpack_zero_copy(cupy))),
                ("correctness", lambda: correctness(cupy, (5, 10), rng, report["checks"]))]
    images, repeats, jax_images = SIZES["quick" if args.quick else "full"]
    sections += [(f"speed myrtle{d}", lambda d=d: report["speed"].append(
        speed(cupy, d, images, jax_images, repeats, rng))) for d in (5, 10)]
    for name, run in sections:
        log(f"== {name}")
        try:
            run()
        except Exception:
            report["errors"].append({"section": name, "traceback": traceback.format_exc()})
            log(f"ERROR in {name}:\n{traceback.format_exc()}")
            if name == "build":
                break
    summarize(report)
    write(report, args.out)
    passed = report["checks"] and all(c["ok"] for c in report["checks"]) and not report["errors"]
    return 0 if passed else 1


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t
    log(f"built csrc/ in {seconds:.1f} s")
    return seconds


def summarize(report: dict) -> None:
    """The targets against the measurements, as a short table (printed last)."""
    rows = [f"correctness: {sum(c['ok'] for c in report['checks'])}/{len(report['checks'])} checks "
            f"passed; {len(report['errors'])} section errors"]
    verdicts = {}
    for entry in report["speed"]:
        d = entry["depth"]
        fraction = entry["fused_stage"]["fraction_of_fp32_peak"]
        verdicts[f"myrtle{d}_fused_stage_fraction"] = fraction
        verdicts[f"myrtle{d}_speedup_over_jax"] = entry["speedup_over_jax"]
        rows.append(f"Myrtle{d}: {entry['fused']['pairs_per_s']:>12,.0f} pairs/s fused "
                    f"({entry['fused']['tflop_per_s']:.1f} TFLOP/s), "
                    f"{entry['unfused']['pairs_per_s']:,.0f} "
                    f"unfused, JAX {entry['jax']['pairs_per_s']:,.0f}: {entry['speedup_over_jax']:.1f}x "
                    f"(target >= {TARGETS['speedup_over_jax']:.0f}x); "
                    f"fused stage {fraction:.1%} of fp32 peak "
                    f"(target >= {TARGETS['fused_stage_fraction_of_fp32_peak']:.0%})")
        if d == 10:
            hours = CIFAR_PAIRS / entry["fused"]["pairs_per_s"] / 3600
            verdicts["cifar10_myrtle10_hours"] = hours
            rows.append(f"full CIFAR-10 Myrtle10 ({CIFAR_PAIRS:.2e} pairs): {hours:.2f} h projected "
                        f"(target < {TARGETS['cifar10_myrtle10_hours']:.0f} h)")
    report["summary"] = verdicts
    print("\n".join(["", "== summary", *rows]), flush=True)


def write(report: dict, out: pathlib.Path) -> None:
    """The report to ``out``, and a copy to $OUT/gpu_check.json when OUT is set."""
    text = json.dumps(report, indent=2, default=str)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out]
    if os.environ.get("OUT"):
        paths.append(pathlib.Path(os.environ["OUT"]) / "gpu_check.json")
    for path in paths:
        path.write_text(text)
        log(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
