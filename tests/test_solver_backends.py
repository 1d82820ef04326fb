"""backend="jax" (the GPU path where JAX sees a GPU; here JAX's CPU device) against backend="scipy"
and brute-force numpy solves: the same numbers, the same errors, and really computed by JAX."""
import warnings

import jax
import numpy as np
import pytest
import scipy.linalg
import zarr
from sklearn.datasets import load_digits
from sklearn.metrics.pairwise import rbf_kernel
from threadpoolctl import threadpool_limits

from tangentless.solvers import (JitterWarning, KernelRidgeClassifier, NotPositiveDefiniteError,
                                 bcd, default_backend, eigen_path, nystrom_fit, pcg, psd_eigh,
                                 solve_cholesky)
from tangentless.solvers import _backend
from tangentless.solvers.blocks import BlockSource, as_block_source
from tangentless.solvers.iterative import kernel_matmul, nystrom_preconditioner
from spectra import with_spectrum

BACKENDS = ("scipy", "jax")
GAMMA, ALPHA = 0.3, 0.1  # digits RBF: cond(K + ALPHA I) ~ 150, BCD needs ~350 epochs
N, BLOCK = 240, 64  # one size and block size throughout: JAX compiles once per shape


@pytest.fixture(scope="module", autouse=True)
def single_blas_thread():
    """Small BLAS calls on a shared 2-core machine run 20-50x slower with threads fighting."""
    with threadpool_limits(1):
        yield


def random_psd(n, seed=0):
    """Q diag(logspace(0, -3)) Q^T: a PSD kernel with cond(K + 0.1 I) ~ 10."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    k = (q * np.logspace(0, -3, n)) @ q.T
    return (k + k.T) / 2


@pytest.fixture(scope="module")
def digits():
    """The first N digits (pixels / 16), their RBF kernel, one-hot labels and labels."""
    x, labels = load_digits(return_X_y=True)
    x = x[:N] / 16.0
    return x, rbf_kernel(x, gamma=GAMMA), np.eye(10)[labels[:N]], labels[:N]


@pytest.fixture(scope="module", params=["random", "digits"])
def problem(request, digits):
    """(K, Y, brute-force (K + ALPHA I)^-1 Y) on a random PSD kernel or the digits RBF kernel."""
    if request.param == "random":
        k, y = random_psd(N), np.random.default_rng(1).standard_normal((N, 3))
    else:
        k, y = digits[1], digits[2]
    return k, y, np.linalg.solve(k + ALPHA * np.eye(len(k)), y)


def relative_error(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


SOLVERS = {
    "cholesky": lambda k, y, **kw: solve_cholesky(k, y, ALPHA, **kw),
    "bcd": lambda k, y, **kw: bcd(k, y, ALPHA, block_size=BLOCK, epochs=1000, tol=1e-13,
                                  **kw).coef,
    "pcg": lambda k, y, **kw: pcg(k, y, ALPHA, rank=20, tol=1e-13, block_size=BLOCK,
                                  **kw).coef,
    "nystrom": lambda k, y, **kw: nystrom_fit(k, k, y, ALPHA, block_size=BLOCK, **kw),
    "falkon": lambda k, y, **kw: nystrom_fit(k, k, y, ALPHA, solver="falkon", block_size=BLOCK,
                                             tol=1e-13, **kw),
}


@pytest.mark.slow
@pytest.mark.parametrize("solver", SOLVERS)
def test_backends_agree_with_each_other_and_a_dense_solve(solver, problem):
    k, y, ref = problem
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged, no jitter
        coefs = {b: SOLVERS[solver](k, y, backend=b) for b in BACKENDS}
    assert coefs["jax"].dtype == np.float64 and coefs["jax"].shape == ref.shape
    assert relative_error(coefs["jax"], coefs["scipy"]) < 1e-10
    assert relative_error(coefs["jax"], ref) < 1e-10


def make_source(kind, k, x, tmp_path):
    """K as stored by one kind of source: (the source, K as the solvers read it, float64)."""
    if kind == "array":
        return k, k
    if kind == "array32":
        return k.astype(np.float32), k.astype(np.float32).astype(np.float64)
    if kind == "memmap":
        np.save(tmp_path / "k.npy", k)
        return np.load(tmp_path / "k.npy", mmap_mode="r"), k
    if kind == "zarr":
        z = zarr.create_array(tmp_path / "k.zarr", shape=k.shape, chunks=(BLOCK, k.shape[1]),
                              dtype="float32")
        z[:] = k
        return zarr.open_array(tmp_path / "k.zarr", mode="r"), k.astype(np.float32).astype(float)
    stored = rbf_kernel(x, gamma=GAMMA).astype(np.float32)  # float32 blocks on demand
    return (lambda rows, cols: rbf_kernel(x[rows], x[cols], gamma=GAMMA).astype(np.float32),
            stored.astype(np.float64))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["array", "array32", "memmap", "zarr", "callable"])
def test_sources_on_both_backends(kind, digits, tmp_path):
    x, k, y, _ = digits
    obj, stored = make_source(kind, k, x, tmp_path)
    source = as_block_source(obj, shape=k.shape)
    ref = np.linalg.solve(stored + ALPHA * np.eye(len(k)), y)
    products = [kernel_matmul(source, y, BLOCK, backend=b) for b in BACKENDS]
    assert relative_error(products[1], products[0]) < 1e-13
    assert relative_error(products[1], stored @ y) < 1e-13
    solves = {"bcd": lambda b: SOLVERS["bcd"](source, y, backend=b),
              "pcg": lambda b: SOLVERS["pcg"](source, y, backend=b),
              "nystrom": lambda b: nystrom_fit(obj, stored, y, ALPHA, block_size=BLOCK,
                                               backend=b)}
    for name, solve in solves.items():
        coefs = [solve(b) for b in BACKENDS]
        assert relative_error(coefs[1], coefs[0]) < 1e-10, name
        assert relative_error(coefs[1], ref) < 1e-10, name


class Reads:
    """A block source over ``k`` that records the shape and dtype of every block it serves."""

    def __init__(self, k, in_memory):
        self.k, self.log = k, []
        self.source = BlockSource(self.read, k.shape, in_memory=in_memory)

    def read(self, rows, cols):
        block = self.k[rows][:, cols]
        self.log.append((block.shape, block.dtype))
        return block


def test_device_reads_blocks_one_at_a_time_or_an_in_memory_kernel_once():
    k = random_psd(N).astype(np.float32)
    y = np.ones((N, 2))
    streamed, whole = Reads(k, in_memory=False), Reads(k, in_memory=True)
    expected = np.linalg.solve(k.astype(np.float64) + ALPHA * np.eye(N), y)
    for reads in (streamed, whole):
        coef = pcg(reads.source, y, ALPHA, rank=20, tol=1e-12, block_size=BLOCK,
                   backend="jax").coef
        assert relative_error(coef, expected) < 1e-10
    # blocks cross as stored (float32 is cast on the device), never more than block_size rows
    assert len(streamed.log) > 10 and {s for s, _ in streamed.log} == {(BLOCK, N), (N % BLOCK, N)}
    assert all(dtype == np.float32 for _, dtype in streamed.log)
    assert len(whole.log) == 1 and whole.log[0] == ((N, N), np.float32)  # crossed once


@pytest.fixture
def scipy_forbidden(monkeypatch):
    """Make scipy's linear algebra fail and record what the jax backend hands back to numpy."""
    def forbidden(*args, **kwargs):
        raise AssertionError("scipy.linalg called on the jax backend")
    for name in ("cho_factor", "cho_solve", "cholesky", "solve_triangular", "eigh", "eigvalsh",
                 "svd", "solve"):
        monkeypatch.setattr(scipy.linalg, name, forbidden)
    converted = []
    to_numpy = _backend.JaxOps.to_numpy

    def recording(x):
        converted.append(type(x))
        return to_numpy(x)
    monkeypatch.setattr(_backend.JaxOps, "to_numpy", staticmethod(recording))
    return converted


@pytest.mark.parametrize("solver", SOLVERS)
def test_jax_backend_computes_with_jax(solver, scipy_forbidden):
    k, y = random_psd(N), np.ones((N, 2))
    SOLVERS[solver](k, y, backend="jax")
    assert scipy_forbidden and all(issubclass(t, jax.Array) for t in scipy_forbidden)


def test_default_backend_picks_jax_where_jax_sees_a_gpu(monkeypatch, scipy_forbidden):
    assert default_backend() == ("jax" if jax.default_backend() == "gpu" else "scipy")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert default_backend() == "jax"
    k = random_psd(N)
    np.testing.assert_allclose(solve_cholesky(k, np.ones(N), ALPHA),
                               np.linalg.solve(k + ALPHA * np.eye(N), np.ones((N, 1))),
                               rtol=1e-10)
    assert scipy_forbidden  # None went to JAX


def test_preconditioner_works_on_host_arrays_after_the_call():
    k = random_psd(N)
    source, r = as_block_source(k), np.random.default_rng(3).standard_normal((N, 2))
    applied = [nystrom_preconditioner(source, 20, ALPHA, block_size=BLOCK, backend=b)(r)
               for b in BACKENDS]
    assert not jax.config.jax_enable_x64  # float64 was enabled only inside the calls
    assert isinstance(applied[1], np.ndarray) and applied[1].dtype == np.float64
    assert relative_error(applied[1], applied[0]) < 1e-12


# ----------------------------------------------------------------------------- failures

def test_indefinite_kernel_gives_the_same_report():
    k = with_spectrum(np.r_[-0.5, np.linspace(1, 10, 29)])
    messages = []
    for backend in BACKENDS:
        with pytest.raises(NotPositiveDefiniteError) as err:
            solve_cholesky(k, np.ones(30), 0.0, backend=backend)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "-5.000e-01 = -5.00e-02 x the largest (1.000e+01)" in messages[1]


def test_jitter_escalates_the_same_way():
    values = np.r_[-1e-8, np.linspace(0.5, 119.5, 29)]
    k = with_spectrum(values * 60 / values.sum())  # mean diagonal 2
    y = np.random.default_rng(2).standard_normal((30, 2))
    with pytest.raises(NotPositiveDefiniteError, match="jitter=True"):
        solve_cholesky(k, y, 0.0, backend="jax")
    messages, coefs = [], []
    for backend in BACKENDS:
        with pytest.warns(JitterWarning) as record:
            coefs.append(solve_cholesky(k, y, 0.0, jitter=True, backend=backend))
        messages.append(str(record[0].message))
    assert messages[0] == messages[1] and "1e-08 x the mean diagonal" in messages[1]
    expected = np.linalg.solve(k + 1e-8 * np.mean(np.diag(k)) * np.eye(30), y)
    np.testing.assert_allclose(coefs[1], expected, rtol=1e-6)
    with pytest.raises(NotPositiveDefiniteError, match="jitter up to 0.01 x the mean diagonal"):
        solve_cholesky(with_spectrum(np.r_[-1.0, np.ones(19)]), np.ones(20), 0.0, jitter=True,
                       backend="jax")


def test_iterative_solver_errors_on_jax():
    k, y = np.eye(6) + 0.1, np.ones(6)
    with pytest.raises(ValueError, match=r"K\[0:3, 0:3\] \+ alpha I is not positive definite"):
        bcd(-k, y, 0.1, block_size=3, backend="jax")
    asym = k.copy()
    asym[0, 1] = 5.0
    with pytest.raises(ValueError, match=r"K\[0:3, 0:3\] is not symmetric"):
        bcd(asym, y, 0.1, block_size=3, backend="jax")
    with pytest.raises(ValueError, match="not positive definite"):
        pcg(-k, y, 0.1, backend="jax")
    with pytest.raises(ValueError, match="K_mm is not positive semi-definite"):
        nystrom_fit(k[:, :3], -k[:3, :3], y, 0.1, backend="jax")
    bad = k.copy()
    bad[3, 0] = np.inf
    for solve in (bcd, pcg):
        with pytest.raises(ValueError, match="contains 1 NaN or inf entries"):
            solve(bad, y, 0.1, backend="jax")


@pytest.mark.parametrize("call", [
    lambda k, y, b: solve_cholesky(k, y, ALPHA, backend=b),
    lambda k, y, b: psd_eigh(k, backend=b),
    lambda k, y, b: eigen_path(k, y, [ALPHA], backend=b),
    lambda k, y, b: bcd(k, y, ALPHA, backend=b),
    lambda k, y, b: pcg(k, y, ALPHA, backend=b),
    lambda k, y, b: nystrom_fit(k, k, y, ALPHA, backend=b),
    lambda k, y, b: kernel_matmul(as_block_source(k), y, backend=b),
    lambda k, y, b: nystrom_preconditioner(as_block_source(k), 2, ALPHA, backend=b),
    lambda k, y, b: KernelRidgeClassifier(backend=b).fit(k, np.arange(10) % 2),
], ids=["cholesky", "psd_eigh", "eigen_path", "bcd", "pcg", "nystrom", "kernel_matmul",
        "nystrom_preconditioner", "estimator"])
def test_bad_backend_name(call):
    with pytest.raises(ValueError, match="backend must be 'scipy', 'jax' or None .* got 'cupy'"):
        call(np.eye(10), np.ones((10, 1)), "cupy")


# ----------------------------------------------------------------------------- estimator

@pytest.mark.slow
@pytest.mark.parametrize("solver, params", [
    ("auto", None), ("cholesky", None),
    ("bcd", {"block_size": BLOCK, "epochs": 1000, "tol": 1e-12}),
    ("cg", {"rank": 20, "tol": 1e-12}), ("nystrom", {"solver": "falkon", "tol": 1e-12})])
def test_classifier_on_jax_matches_scipy(solver, params, digits):
    _, k, _, labels = digits
    train, test = slice(0, 160), slice(160, None)
    fits = {b: KernelRidgeClassifier(alphas=(0.1, 1.0), solver=solver, n_centers=100,
                                     solver_params=params, backend=b).fit(k[train, train],
                                                                          labels[train])
            for b in BACKENDS}
    assert fits["jax"].backend_ == "jax" and fits["scipy"].backend_ == "scipy"
    assert fits["jax"].alpha_ == fits["scipy"].alpha_
    np.testing.assert_array_equal(fits["jax"].predict(k[test, train]),
                                  fits["scipy"].predict(k[test, train]))
    assert relative_error(fits["jax"].coef_, fits["scipy"].coef_) < 1e-9
    np.testing.assert_array_equal(fits["jax"].centers_, fits["scipy"].centers_)
    assert KernelRidgeClassifier().fit(k[train, train], labels[train]).backend_ == \
        default_backend()


def test_classifier_rejects_backend_in_solver_params(digits):
    _, k, _, labels = digits
    with pytest.raises(ValueError, match=r"KernelRidgeClassifier\(backend=...\)"):
        KernelRidgeClassifier(solver="cg", solver_params={"backend": "jax"}).fit(k, labels)
