"""neural-tangents' Myrtle NNGP on the same images, for kernel_throughput's side-by-side ratio.

Run by kernel_throughput in a Python that has neural-tangents (0.6.5 needs jax 0.4.30 and
numpy < 2, so it lives in its own venv); imports nothing of tangentless, and neural-tangents
only when run. Usage:
    python nt_reference.py IMAGES.npy ROWS COLS DEPTH BATCH  ->  one JSON line on stdout
with the kernel itself (to check against tangentless') and pairs/s of the call after a warm-up
call of the same shapes (compilation excluded).
"""
import json
import math
import sys
import time

import numpy as np

STAGES = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}


def myrtle_nngp(depth: int):
    """stax Myrtle: conv 3x3 (W_std^2 = 2, no bias) + ReLU repeats, AvgPool(2) between stages, a
    global average pool, a dense readout: tangentless' myrtle(depth, head="linear") / channels."""
    from neural_tangents import stax
    layers = []
    for stage, repeats in enumerate(STAGES[depth]):
        for _ in range(repeats):
            layers += [stax.Conv(1, (3, 3), W_std=math.sqrt(2.0), b_std=None, padding="SAME"),
                       stax.Relu()]
        layers.append(stax.AvgPool((2, 2), strides=(2, 2)) if stage < 2 else stax.GlobalAvgPool())
    layers.append(stax.Dense(1, W_std=1.0, b_std=None))
    return stax.serial(*layers)[2]


def main(path, rows, cols, depth, batch):
    import jax
    import neural_tangents as nt
    images = np.load(path)
    x, y = images[:rows], images[rows:rows + cols]
    kernel_fn = nt.batch(myrtle_nngp(depth), batch_size=batch, store_on_device=False)
    np.asarray(kernel_fn(x, y, "nngp"))  # compile
    start = time.perf_counter()
    k = np.asarray(kernel_fn(x, y, "nngp"))
    seconds = time.perf_counter() - start
    print(json.dumps({"library": f"neural-tangents {nt.__version__}", "jax": jax.__version__,
                      "depth": depth, "rows": rows, "cols": cols, "batch_size": batch,
                      "pairs": rows * cols, "seconds": round(seconds, 3),
                      "pairs_per_second": round(rows * cols / seconds, 3),
                      "kernel": k.tolist()}))


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:6]))
