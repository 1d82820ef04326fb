"""Block sources, BCD, PCG and Nystrom/FALKON against direct numpy/scipy solves.

Kernels: random PSD matrices with a chosen spectrum, and RBF kernels on scikit-learn's digits
(1,797 images of 64 pixels; the RBF width sets the conditioning).
"""
import warnings

import numpy as np
import pytest
import scipy.linalg
import zarr
from sklearn.datasets import load_digits
from sklearn.metrics.pairwise import rbf_kernel
from threadpoolctl import threadpool_limits

from tangentless.solvers.blocks import as_block_source, row_blocks
from tangentless.solvers.iterative import bcd, pcg
from tangentless.solvers.nystrom import nystrom_fit, uniform_centers

GAMMA, ALPHA = 5e-3, 1e-2  # digits RBF: cond(K + alpha I) ~ 1e2, BCD needs ~50 epochs


@pytest.fixture(scope="module", autouse=True)
def single_blas_thread():
    """Small BLAS calls on a shared 2-core machine run 20-50x slower with threads fighting."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def digits():
    x, labels = load_digits(return_X_y=True)
    return x, labels, np.eye(10)[labels]


@pytest.fixture(scope="module")
def digits_kernel(digits):
    x, _, y = digits
    k = rbf_kernel(x, gamma=GAMMA)
    return k, y, scipy.linalg.solve(k + ALPHA * np.eye(len(k)), y, assume_a="pos")


def random_psd(n, eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return (q * eigenvalues) @ q.T


def relative_error(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


# ----------------------------------------------------------------------------- block sources

def make_source(kind, k, tmp_path, x=None):
    """The same kernel as an array, a float64 memmap, a float32 Zarr array or a callable."""
    if kind == "array":
        return k
    if kind == "memmap":
        mm = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64,
                                       shape=k.shape)
        mm[:] = k
        mm.flush()
        return np.load(tmp_path / "k.npy", mmap_mode="r")
    if kind == "zarr":
        z = zarr.create_array(tmp_path / "k.zarr", shape=k.shape, chunks=(300, 1024),
                              dtype="float32")
        z[:] = k
        return zarr.open_array(tmp_path / "k.zarr", mode="r")
    return lambda rows, cols: rbf_kernel(x[rows], x[cols], gamma=GAMMA)


@pytest.mark.parametrize("kind", ["array", "memmap", "zarr", "callable"])
def test_sources_read_blocks_as_float64(kind, digits, digits_kernel, tmp_path):
    x, k = digits[0][:300], digits_kernel[0][:300, :300]
    source = as_block_source(make_source(kind, k, tmp_path, x), shape=(300, 300))
    expected = k.astype(np.float32).astype(np.float64) if kind == "zarr" else k
    assert source.in_memory == (kind == "array")  # a device may copy only these at once
    stored = source.rows(slice(0, 7), keep_float32=True)  # float32 storage read as stored
    assert stored.dtype == (np.float32 if kind == "zarr" else np.float64)
    np.testing.assert_array_equal(stored, expected[:7])
    cols = np.array([250, 3, 17])
    for got, want in [(source.rows(slice(100, 164)), expected[100:164]),
                      (source.block(slice(10, 20), cols), expected[10:20][:, cols]),
                      (source.block(np.array([5, 1]), slice(0, 300)), expected[[5, 1]]),
                      (source.diagonal(), np.diagonal(expected))]:
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_source_rejects_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        as_block_source(np.ones((3, 4)))
    with pytest.raises(ValueError, match="2-D"):
        as_block_source(np.ones((3, 3, 1)))
    with pytest.raises(ValueError, match="real numbers"):
        as_block_source(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="shape=\\(n, m\\)"):
        as_block_source(lambda r, c: np.ones((2, 2)))
    wrong = as_block_source(lambda r, c: np.ones((2, 2)), shape=(5, 5))
    with pytest.raises(ValueError, match=r"block K\[0:5, 0:5\] has shape \(2, 2\)"):
        wrong.rows(slice(0, 5))
    k = np.eye(6)
    k[4, 1] = np.nan
    source = as_block_source(k)
    source.rows(slice(0, 3))  # blocks without the NaN read fine
    with pytest.raises(ValueError, match=r"block K\[3:6, 0:6\] contains 1 NaN or inf entries "
                                         r"\(first at local row 1, column 1\)"):
        source.rows(slice(3, 6))
    assert source.rows(slice(0, 1)).shape == (1, 6)
    assert [(b.start, b.stop) for b in row_blocks(7, 3)] == [(0, 3), (3, 6), (6, 7)]


# ----------------------------------------------------------------------------- BCD

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["array", "memmap", "zarr", "callable"])
def test_bcd_converges_to_direct_solution(kind, digits, digits_kernel, tmp_path):
    x, _, y = digits
    k, _, ref = digits_kernel
    if kind == "zarr":  # float32 storage: the reference is the solve with the stored kernel
        k32 = k.astype(np.float32).astype(np.float64)
        ref = scipy.linalg.solve(k32 + ALPHA * np.eye(len(k)), y, assume_a="pos")
    source = as_block_source(make_source(kind, k, tmp_path, x), shape=k.shape)
    result = bcd(source, y, ALPHA, block_size=300, epochs=200, tol=1e-7)
    assert result.converged and result.epochs_run < 200
    assert result.residual_norms[0] == 1.0 and result.residual_norms[-1] <= 1e-7
    assert relative_error(result.coef, ref) < 1e-5


def test_bcd_decreases_error_and_reports_true_residual(digits_kernel):
    k, y, ref = digits_kernel
    a = k + ALPHA * np.eye(len(k))
    energy = []  # block Gauss-Seidel decreases the A-norm of the error at every step

    def record(epoch, coef, residual):
        energy.append(np.sum((coef - ref) * (a @ (coef - ref))))

    result = bcd(k, y, ALPHA, block_size=250, epochs=200, tol=1e-6, callback=record,
                 order="cyclic")
    assert result.converged and len(energy) == result.epochs_run
    assert np.all(np.diff(energy) < 0)
    norms = result.residual_norms  # not monotone epoch to epoch, but over a few epochs
    assert np.all(norms[5:] < norms[:-5])
    true = np.linalg.norm(y - a @ result.coef) / np.linalg.norm(y)
    assert true == pytest.approx(norms[-1], rel=1e-6)


def test_bcd_warm_start_and_stopping(digits_kernel):
    k, y, ref = digits_kernel
    result = bcd(k, y, ALPHA, coef0=ref, tol=1e-8)
    assert result.epochs_run == 0 and result.converged
    np.testing.assert_array_equal(result.coef, ref)
    with pytest.warns(RuntimeWarning, match="after 4 epochs"):  # stopped by the callback
        half = bcd(k, y, ALPHA, block_size=400, epochs=10, tol=0.0, seed=3,
                   callback=lambda epoch, coef, residual: epoch == 4)
    assert half.epochs_run == 4 and not half.converged
    resumed = bcd(k, y, ALPHA, block_size=400, epochs=200, tol=1e-7, coef0=half.coef)
    assert resumed.residual_norms[0] == pytest.approx(half.residual_norms[-1], rel=1e-8)
    assert resumed.converged and relative_error(resumed.coef, ref) < 1e-5
    with pytest.warns(RuntimeWarning, match="bcd: relative residual .* after 2 epochs"):
        bcd(k, y, ALPHA, block_size=400, epochs=2, tol=1e-12)


@pytest.mark.parametrize("block_size, order", [(37, "random"), (100, "cyclic"), (500, "random")])
def test_bcd_random_psd(block_size, order):
    n = 400
    k = random_psd(n, np.logspace(0, -6, n), seed=block_size)
    y = np.random.default_rng(1).standard_normal(n)  # one right-hand side, (n,)
    result = bcd(k, y, 1e-1, block_size=block_size, epochs=300, tol=1e-10, order=order)
    assert result.converged and result.coef.shape == (n, 1)
    np.testing.assert_allclose(result.coef[:, 0], np.linalg.solve(k + 0.1 * np.eye(n), y),
                               rtol=1e-7, atol=1e-9)
    if block_size >= n:  # a single block is one exact solve
        assert result.epochs_run == 1


# ----------------------------------------------------------------------------- PCG

@pytest.mark.parametrize("preconditioner", ["nystrom", None])
def test_pcg_converges_to_direct_solution(preconditioner, digits_kernel):
    k, y, ref = digits_kernel
    result = pcg(k, y, ALPHA, rank=100, tol=1e-10, preconditioner=preconditioner)
    assert result.converged.all() and result.residual_norms.shape == (result.iterations + 1, 10)
    assert result.residual_norms[-1].max() <= 1e-10
    assert relative_error(result.coef, ref) < 1e-8


def test_pcg_columns_converge_independently(digits_kernel):
    k, y, _ = digits_kernel
    a = k + ALPHA * np.eye(len(k))
    top = np.linalg.eigh(k)[1][:, -1]
    # column 0: an eigenvector (CG's Krylov space solves it in one step); column 1: zero
    targets = np.column_stack([top, np.zeros(len(k)), y[:, :3]])
    result = pcg(k, targets, ALPHA, tol=1e-9, preconditioner=None)
    norms = result.residual_norms
    assert norms[1, 0] <= 1e-9 and np.all(norms[1:, 0] == norms[1, 0])
    assert np.all(norms[:, 1] == 0) and result.iterations > 10
    np.testing.assert_allclose(result.coef, np.linalg.solve(a, targets), rtol=0, atol=1e-7)


def test_nystrom_preconditioner_reduces_iterations(digits):
    x, _, y = digits
    k = rbf_kernel(x[:1000], gamma=1e-4)  # smooth kernel: fast eigenvalue decay
    alpha = 1e-4
    assert np.linalg.cond(k + alpha * np.eye(1000)) > 1e5
    plain = pcg(k, y[:1000, :2], alpha, tol=1e-8, max_iter=3000, preconditioner=None)
    nys = pcg(k, y[:1000, :2], alpha, rank=100, tol=1e-8, max_iter=3000)
    assert plain.converged.all() and nys.converged.all()
    assert nys.iterations < plain.iterations / 4
    np.testing.assert_allclose(nys.coef, plain.coef, rtol=1e-4,
                               atol=1e-4 * np.abs(plain.coef).max())


def test_pcg_on_a_gram_engine_source():
    """A kernel computed on demand, block by block, by the Gram engine (never stored)."""
    from tangentless.kernels import Conv, GlobalAvgPool, Relu, project, serial
    x = load_digits().images[:48, :, :, None].astype(np.float32) / 16
    spec = serial(Conv(3), Relu(), Conv(3), Relu(), GlobalAvgPool(), project())
    source = as_block_source(lambda r, c: spec.gram(x[r], x[c], progress=False), shape=(48, 48))
    y = np.eye(3)[np.arange(48) % 3]
    result = pcg(source, y, 1e-2, rank=16, tol=1e-8, block_size=24)
    assert result.converged.all() and result.iterations < 20
    k = spec.gram(x, progress=False)  # blocks agree with the symmetric Gram to ~1e-7
    assert relative_error(result.coef, np.linalg.solve(k + 1e-2 * np.eye(48), y)) < 1e-3


def test_pcg_warns_when_not_converged(digits_kernel):
    k, y, _ = digits_kernel
    with pytest.warns(RuntimeWarning, match="pcg: 10 of 10 columns did not reach"):
        result = pcg(k, y, ALPHA, tol=1e-12, max_iter=3, preconditioner=None)
    assert result.iterations == 3 and not result.converged.any()


# ----------------------------------------------------------------------------- Nystrom

@pytest.mark.parametrize("solver", ["direct", "falkon"])
def test_nystrom_with_all_points_is_full_kernel_ridge(solver, digits_kernel):
    n = 300
    k = random_psd(n, np.logspace(1, -2, n), seed=5)
    y = np.random.default_rng(2).standard_normal((n, 3))
    coef = nystrom_fit(k, k, y, 1e-2, solver=solver, block_size=128)
    np.testing.assert_allclose(coef, np.linalg.solve(k + 1e-2 * np.eye(n), y), rtol=1e-6,
                               atol=1e-8)
    kd, yd, ref = digits_kernel  # near-singular K: compare predictions, not coefficients
    coef = nystrom_fit(kd, kd, yd, ALPHA, solver=solver)
    assert np.abs(kd @ coef - kd @ ref).max() < 1e-8


def test_nystrom_predictions_approach_full_solution(digits):
    x, _, y = digits
    train, test = slice(0, 1200), slice(1200, None)
    k_train = rbf_kernel(x[train], gamma=GAMMA)
    k_test = rbf_kernel(x[test], x[train], gamma=GAMMA)
    full = k_test @ np.linalg.solve(k_train + ALPHA * np.eye(1200), y[train])
    gaps = []
    for m in (50, 200, 800, 1200):
        centers = uniform_centers(1200, m, seed=m)
        on_demand = lambda r, c: rbf_kernel(x[train][r], x[train][centers][c], gamma=GAMMA)
        coef = nystrom_fit(on_demand, k_train[np.ix_(centers, centers)], y[train], ALPHA,
                           solver="falkon", block_size=256)
        direct = nystrom_fit(k_train[:, centers], k_train[np.ix_(centers, centers)], y[train],
                             ALPHA)
        assert relative_error(coef, direct) < 1e-6
        gaps.append(np.abs(k_test[:, centers] @ coef - full).max())
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-8


def test_uniform_centers():
    c = uniform_centers(100, 30, seed=4)
    assert c.shape == (30,) and np.unique(c).size == 30 and np.all(np.diff(c) > 0)
    np.testing.assert_array_equal(c, uniform_centers(100, 30, seed=4))
    with pytest.raises(ValueError, match="centers must be in"):
        uniform_centers(10, 11)


# ----------------------------------------------------------------------------- bad input

SOLVERS = {"bcd": lambda k, y, a: bcd(k, y, a, block_size=2),
           "pcg": lambda k, y, a: pcg(k, y, a, rank=2),
           "nystrom": lambda k, y, a: nystrom_fit(k, k, y, a)}


@pytest.mark.parametrize("solve", SOLVERS.values(), ids=SOLVERS.keys())
def test_solvers_reject_bad_input(solve):
    k, y = np.eye(5) + 0.1, np.ones(5)
    with pytest.raises(ValueError, match="must be square"):
        solve(np.ones((5, 4)), y, 0.1)
    with pytest.raises(ValueError, match="Y has 4 rows but the kernel has 5"):
        solve(k, y[:4], 0.1)
    with pytest.raises(ValueError, match="alphas must be finite and >= 0"):
        solve(k, y, -1.0)
    with pytest.raises(ValueError, match="single number"):
        solve(k, y, [0.1, 1.0])
    bad = k.copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="contains 1 NaN or inf entries"):
        solve(bad, y, 0.1)


def test_solver_specific_errors():
    k, y = np.eye(6) + 0.1, np.ones(6)
    with pytest.raises(ValueError, match=r"K\[0:3, 0:3\] \+ alpha I is not positive definite"):
        bcd(-k, y, 0.1, block_size=3)
    asym = k.copy()
    asym[0, 1] = 5.0
    with pytest.raises(ValueError, match=r"K\[0:3, 0:3\] is not symmetric"):
        bcd(asym, y, 0.1, block_size=3)
    with pytest.raises(ValueError, match="order must be"):
        bcd(k, y, 0.1, order="backwards")
    with pytest.raises(ValueError, match="coef0 has 5 rows"):
        bcd(k, y, 0.1, coef0=np.zeros(5))
    with pytest.raises(ValueError, match="preconditioner must be"):
        pcg(k, y, 0.1, preconditioner="jacobi")
    with pytest.raises(ValueError, match="not positive definite"):
        pcg(-k, y, 0.1, preconditioner=None)
    with pytest.raises(ValueError, match="K_mm has shape \\(6, 6\\) but K_nm has 3 columns"):
        nystrom_fit(k[:, :3], k, y, 0.1)
    with pytest.raises(ValueError, match="K_mm is not positive semi-definite"):
        nystrom_fit(k[:, :3], -k[:3, :3], y, 0.1)
    with pytest.raises(ValueError, match="solver must be 'direct' or 'falkon'"):
        nystrom_fit(k[:, :3], k[:3, :3], y, 0.1, solver="svd")


# ----------------------------------------------------------------------------- estimator

@pytest.mark.parametrize("solver, params", [
    ("bcd", {"block_size": 300, "epochs": 300, "tol": 1e-8}),
    ("cg", {"rank": 100, "tol": 1e-10}),
    ("nystrom", {}),
    ("nystrom", {"solver": "falkon"}),
])
def test_estimator_iterative_solvers_match_cholesky(solver, params, digits):
    from tangentless.solvers.estimators import KernelRidgeClassifier
    x, labels, _ = digits
    train, test = slice(0, 1200), slice(1200, None)
    k_train = rbf_kernel(x[train], gamma=GAMMA)
    k_test = rbf_kernel(x[test], x[train], gamma=GAMMA)
    exact = KernelRidgeClassifier(alphas=[ALPHA], solver="cholesky").fit(k_train, labels[train])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the iterative solvers must converge silently
        model = KernelRidgeClassifier(alphas=[ALPHA], solver=solver, n_centers=1200,
                                      solver_params=params).fit(k_train, labels[train])
    np.testing.assert_array_equal(model.predict(k_test), exact.predict(k_test))
    np.testing.assert_allclose(model.decision_function(k_test), exact.decision_function(k_test),
                               atol=1e-6)
    assert (exact.predict(k_test) == labels[test]).mean() > 0.9
