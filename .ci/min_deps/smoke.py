"""Smoke test of an installed tangentless (run by .ci/min_deps/run in the venv of the declared
minimum dependencies, see pins.py): every module imports, the kernels agree with a closed form
written here, a Myrtle5 Gram matrix is a kernel matrix, the image and kernel classifiers fit and
predict the bundled digits, a Gram store round trips through Zarr, in process and through Dask,
the scattering classifier and a CNN train (kymatio, optax), an image folder decodes (Pillow) and
a report plot is written (matplotlib).

Each check prints one line; any failure raises, so the script exits non-zero. Run it from
outside the checkout (``python /path/to/smoke.py PYPROJECT``) so that the installed package is
the one under test.
"""
from __future__ import annotations

import importlib
import pathlib
import pkgutil
import sys
import tempfile
import time
import tomllib

import numpy as np

START = time.perf_counter()
#: images per Gram block in every Myrtle5 call below: all blocks are 16 x 16, so JAX compiles once
BLOCK = 16


def ok(what: str) -> None:
    print(f"ok  {time.perf_counter() - START:6.1f} s  {what}", flush=True)


def import_everything(pyproject: pathlib.Path) -> None:
    """Every module of every package that pyproject.toml ships; CUDA-only modules import without
    CuPy (they load it on first use)."""
    packages = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["packages"]
    names = []
    for package in packages:
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.iter_modules(module.__path__, package + "."):
            if not info.ispkg and not info.name.endswith(".__main__"):  # __main__ runs the CLI
                importlib.import_module(info.name)
                names.append(info.name)
    import tangentless
    ok(f"imported {len(names)} modules of {len(packages)} packages; tangentless {tangentless.__version__}")


def relu_gap_reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """K(x_a, y_b) of serial(Conv(1), Relu(), GlobalAvgPool()) from the formulas alone: pixel kernel
    s = <x_p, y_q> (sum over channels), He-scaled arc-cosine of degree 1,
    sqrt(s_pp s_qq) (sin t + (pi - t) cos t) / pi with cos t = s_pq / sqrt(s_pp s_qq), averaged over
    all pixel pairs (p of x_a, q of y_b). An AvgPool before the global pool leaves it unchanged."""
    px, py = x.reshape(len(x), -1, x.shape[-1]), y.reshape(len(y), -1, y.shape[-1])
    s = np.einsum("apc,bqc->abpq", px, py)
    nx, ny = np.sqrt(np.einsum("apc,apc->ap", px, px)), np.sqrt(np.einsum("bqc,bqc->bq", py, py))
    norms = nx[:, None, :, None] * ny[None, :, None, :]
    t = np.arccos(np.clip(s / norms, -1.0, 1.0))
    return (norms * (np.sin(t) + (np.pi - t) * np.cos(t)) / np.pi).mean(axis=(2, 3))


def check_kernels(images: np.ndarray) -> np.ndarray:
    from tangentless.kernels import AvgPool, Cast, Conv, GlobalAvgPool, Relu, myrtle, serial

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 4, 4, 2))
    spec = serial(Cast("float64"), Conv(1), Relu(), GlobalAvgPool())
    np.testing.assert_allclose(spec.gram(x, y, progress=True), relu_gap_reference(x, y), rtol=1e-10)
    pooled = serial(Cast("float64"), Conv(1), Relu(), AvgPool(4), GlobalAvgPool())  # einops' mean
    np.testing.assert_allclose(pooled.gram(x, y, progress=False), relu_gap_reference(x, y), rtol=1e-10)
    ok("serial(Conv(1), Relu(), [AvgPool(4),] GlobalAvgPool()) equal their closed form (float64; "
       "with a progress bar)")

    k = np.asarray(myrtle(5).gram(images, block_size=BLOCK, progress=False))
    assert k.shape == (len(images),) * 2 and k.dtype == np.float64, (k.shape, k.dtype)
    np.testing.assert_allclose(k, k.T, rtol=0, atol=0)
    np.testing.assert_allclose(np.diag(k), 1.0, rtol=1e-5)  # the normalized head: k(x, x) = 1
    eigenvalues = np.linalg.eigvalsh(k)
    assert eigenvalues.min() > -1e-5 * eigenvalues.max(), eigenvalues
    cross = np.asarray(myrtle(5).gram(images[:BLOCK], images, block_size=BLOCK, progress=False))
    np.testing.assert_allclose(cross, k[:BLOCK], rtol=1e-6)
    ok(f"Myrtle5 Gram of {len(images)} 8x8 digits: symmetric, unit diagonal, PSD, cross = symmetric rows")
    return k


def check_classifiers(images, labels, test_images, test_labels) -> None:
    from tangentless.kernels import myrtle
    from tangentless.solvers import CompositionalKernelClassifier, KernelRidgeClassifier, pcg

    model = CompositionalKernelClassifier(arch="myrtle5", flip=False, alphas=(1e-6, 1e-3),
                                          block_size=BLOCK)
    accuracy = model.fit(images, labels).score(test_images, test_labels)
    assert accuracy > 0.8, accuracy
    ok(f"CompositionalKernelClassifier fit + predict: {accuracy:.1%} on {len(test_labels)} digits "
       f"({len(labels)} training)")

    spec = myrtle(5)
    k_train = spec.gram(images, block_size=BLOCK, progress=False)
    k_test = spec.gram(test_images, images, block_size=BLOCK, progress=False)
    scores = {}
    for backend in ("scipy", "jax"):
        ridge = KernelRidgeClassifier(alphas=(1e-6, 1e-3), backend=backend).fit(k_train, labels)
        scores[backend] = ridge.score(k_test, test_labels)
        assert scores[backend] > 0.8, (backend, scores[backend])
    ok(f"KernelRidgeClassifier fit + predict on precomputed kernels (scipy, jax): {scores}")

    targets, alpha = np.eye(10)[labels], 1e-3
    result = pcg(k_train, targets, alpha, rank=20, progress=True)
    residual = k_train @ result.coef + alpha * result.coef - targets
    assert result.converged.all() and np.linalg.norm(residual) < 1e-6 * np.linalg.norm(targets)
    ok(f"preconditioned CG solves (K + alpha I) coef = Y in {result.iterations} passes")


def check_store(images: np.ndarray, k: np.ndarray) -> None:
    import zarr
    from dask.distributed import Client, LocalCluster

    from tangentless.kernels import myrtle
    from tangentless.kernels.store import GramStore
    from tangentless.solvers.blocks import as_block_source

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "k.zarr"
        stored = myrtle(5).gram(images, block_size=BLOCK, progress=False, store=path)
        np.testing.assert_array_equal(np.asarray(stored[...]), k)
        np.testing.assert_array_equal(zarr.open_array(path, mode="r")[...], k)
        assert GramStore(path).config["psd_rtol"] > 0
        resumed = myrtle(5).gram(images, block_size=BLOCK, progress=False, store=path)
        np.testing.assert_array_equal(np.asarray(resumed[...]), k)
        np.testing.assert_array_equal(as_block_source(str(path)).rows(slice(0, BLOCK)), k[:BLOCK])
        ok("Zarr Gram store: written, read back by zarr and the solvers, resumed: equal to the "
           "in-memory matrix")

        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            distributed = myrtle(5).gram(images, block_size=BLOCK, progress=False,
                                         store=pathlib.Path(tmp) / "dask.zarr", scheduler=client)
            np.testing.assert_array_equal(np.asarray(distributed[...]), k)
        ok("Dask-scheduled Gram into a store: equal to the in-memory matrix")


def check_scattering(images, labels, test_images, test_labels) -> None:
    from tangentless.scattering import ScatteringFeatures, SparseScatteringClassifier

    features = ScatteringFeatures(J=1, L=4, progress=False).fit_transform(images[:4])
    assert features.shape == (4, 80) and np.isfinite(features).all(), features.shape  # 5 x 4 x 4
    model = SparseScatteringClassifier(J=1, L=4, projection=16, dictionary_size=32, n_iter=2,
                                       epochs=10, batch_size=16, lr=0.05)
    accuracy = model.fit(images, labels).score(test_images, test_labels)
    assert accuracy > 0.8, accuracy
    ok(f"ScatteringFeatures {features.shape}; SparseScatteringClassifier (optax) fit + predict: "
       f"{accuracy:.1%}")


def check_cnn(images, labels, test_images, test_labels) -> None:
    from tangentless.benchmarks.cnn import CNNClassifier

    model = CNNClassifier(arch="myrtle5", width=16, epochs=20, augment=False)
    accuracy = model.fit(images, labels).score(test_images, test_labels)
    assert accuracy > 0.7, accuracy
    ok(f"CNNClassifier (Myrtle5 network, optax SGD, one-cycle schedule) fit + predict: {accuracy:.1%}")


def check_images_and_plot() -> None:
    from PIL import Image

    from tangentless.benchmarks.datasets import load_folder_arrays
    from tangentless.benchmarks.report import plot_accuracy_vs_n

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        pixels = np.random.default_rng(0).integers(0, 256, (2, 12, 16, 3), dtype=np.uint8)
        for label, name in enumerate(("cat", "dog")):
            (root / "folder" / name).mkdir(parents=True)
            Image.fromarray(pixels[label]).save(root / "folder" / name / "a.png")
        images, labels = load_folder_arrays(root / "folder", size=8, resize=8)
        assert images.shape == (2, 8, 8, 3) and list(labels) == [0, 1], (images.shape, labels)
        summary = [{"method": "kernel", "n": 10, "mean": 0.9, "std": 0.01, "trials": 3},   # as summarize gives
                   {"method": "kernel", "n": 20, "mean": 0.92, "std": None, "trials": 1}]
        png = plot_accuracy_vs_n(summary, root / "plot.png", chance=0.1, title="smoke")
        with Image.open(png) as plot:
            assert plot.size[0] > 100, plot.size
    ok("image folder decoded (Pillow); accuracy plot written (matplotlib)")


def check_corruptions() -> None:
    from tangentless.benchmarks import corruptions
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    for name in corruptions.SHIFTS:
        out = corruptions.corrupt_images(images, name, 3, seed=0)
        assert out.dtype == np.uint8 and out.shape == images.shape, name
    ok(f"{len(corruptions.SHIFTS)} shifts applied (imagecorruptions, scikit-image, OpenCV)")


def main(pyproject: str) -> None:
    import_everything(pathlib.Path(pyproject))
    from tangentless.benchmarks.datasets import load_digits_images

    images, labels = load_digits_images()
    k = check_kernels(images[:2 * BLOCK])
    check_classifiers(images[:80], labels[:80], images[80:128], labels[80:128])
    check_store(images[:2 * BLOCK], k)
    check_scattering(images[:160], labels[:160], images[160:260], labels[160:260])
    check_cnn(images[:160], labels[:160], images[160:260], labels[160:260])
    check_images_and_plot()
    check_corruptions()
    ok("smoke test passed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: smoke.py PATH/TO/pyproject.toml")
    main(sys.argv[1])
