"""Direct (Cholesky) solves and the eigen regularization path against independent numpy/scipy
references: dense solves, brute-force leave-one-out refits, and the GCV definition."""
import re
import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.linalg
from sklearn.datasets import load_digits
from sklearn.metrics.pairwise import rbf_kernel

from tangentless.solvers import (JitterWarning, NotPositiveDefiniteError, eigen_path, loo_errors,
                                 psd_eigh, solve_cholesky)
from tangentless.solvers import eigen
from spectra import with_spectrum

ALPHAS = np.array([1e-6, 1e-3, 1e-1, 1.0])


def random_psd(n, rank=None, seed=0):
    """X X^T with X (n, rank): PSD, singular when rank < n."""
    x = np.random.default_rng(seed).standard_normal((n, rank or 2 * n))
    return x @ x.T / x.shape[1]


@pytest.fixture(scope="module")
def digits_kernel():
    """RBF kernel of 300 digits (pixels / 16) and their labels."""
    x, y = load_digits(return_X_y=True)
    return rbf_kernel(x[:300] / 16.0, gamma=0.02), y[:300]


def peak_in_matrices(fn, *args, **kwargs):
    """Peak memory numpy allocates during fn(*args), in units of the first argument's size."""
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1] / args[0].nbytes
    finally:
        tracemalloc.stop()


def brute_force_loo(k, y, alpha):
    """Residuals y_i - f_{-i}(x_i): refit without point i, predict it (n, c)."""
    out = np.empty_like(y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = np.linalg.solve(k[np.ix_(keep, keep)] + alpha * np.eye(len(y) - 1), y[keep])
        out[i] = y[i] - k[i, keep] @ coef
    return out


# --- solve_cholesky ---------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 1e-8, 1e-2, 1.0])
def test_cholesky_matches_dense_solve(alpha):
    k = random_psd(50)
    y = np.random.default_rng(1).standard_normal((50, 3))
    k_before = k.copy()
    coef = solve_cholesky(k, y, alpha)
    np.testing.assert_allclose(coef, np.linalg.solve(k + alpha * np.eye(50), y), rtol=1e-9,
                               atol=1e-10)
    np.testing.assert_array_equal(k, k_before)


def test_cholesky_uses_one_workspace():
    k = random_psd(800)
    assert peak_in_matrices(solve_cholesky, k, np.ones((800, 10)), 1e-3) < 1.3
    assert peak_in_matrices(solve_cholesky, np.asfortranarray(k), np.ones(800), 1e-3) < 1.3


def test_cholesky_on_digits_rbf_kernel(digits_kernel):
    k, labels = digits_kernel
    y = np.eye(10)[labels]
    for alpha in (1e-6, 1e-2):
        expected = scipy.linalg.solve(k + alpha * np.eye(len(k)), y, assume_a="pos")
        np.testing.assert_allclose(solve_cholesky(k, y, alpha), expected, rtol=1e-7, atol=1e-8)


def test_cholesky_shapes_and_dtypes():
    k = random_psd(20).astype(np.float32)
    y = np.arange(20)
    coef = solve_cholesky(k, y, 0.1)
    assert coef.shape == (20, 1) and coef.dtype == np.float64
    expected = np.linalg.solve(k.astype(np.float64) + 0.1 * np.eye(20), y)
    np.testing.assert_allclose(coef[:, 0], expected)


def test_indefinite_kernel_reports_how_indefinite():
    k = with_spectrum(np.r_[-0.5, np.linspace(1, 10, 29)])
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite") as err:
        solve_cholesky(k, np.ones(30), 0.0)
    message = str(err.value)
    assert "-5.000e-01" in message and "-5.00e-02 x the largest (1.000e+01)" in message
    assert "jitter=True" in message
    assert isinstance(err.value, ValueError)
    # alpha shifts the spectrum: the report is for K + alpha I
    with pytest.raises(NotPositiveDefiniteError, match=r"-4\.000e-01"):
        solve_cholesky(k, np.ones(30), 0.1)


def test_jitter_escalates_and_warns():
    scale = 2.0  # mean diagonal of K
    values = np.r_[-5e-9 * scale, np.linspace(0.5, 2 * scale * 30 - 0.5, 29)]
    values *= scale * 30 / values.sum()  # trace = 30 * mean diagonal
    k = with_spectrum(values)
    mean_diag = np.mean(np.diag(k))
    y = np.random.default_rng(2).standard_normal((30, 2))
    with pytest.raises(NotPositiveDefiniteError):
        solve_cholesky(k, y, 0.0)  # never silent without jitter=True
    with pytest.warns(JitterWarning, match="jitter") as record:
        coef = solve_cholesky(k, y, 0.0, jitter=True)
    message = str(record[0].message)
    assert "1e-08 x the mean diagonal" in message  # 1e-10 was not enough, 1e-8 was
    jitter = float(re.search(r"added jitter ([0-9.e+-]+)", message).group(1))
    assert jitter == pytest.approx(1e-8 * mean_diag, rel=1e-3)
    np.testing.assert_allclose(coef, np.linalg.solve(k + 1e-8 * mean_diag * np.eye(30), y),
                               rtol=1e-6)


def test_jitter_gives_up_at_max_jitter():
    k = with_spectrum(np.r_[-1.0, np.ones(19)])
    with pytest.raises(NotPositiveDefiniteError, match="jitter up to 0.01 x the mean diagonal"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no success warning either
            solve_cholesky(k, np.ones(20), 0.0, jitter=True)


@pytest.mark.parametrize("k, y, alpha, match", [
    (np.ones((3, 4)), np.ones(3), 0.1, "square"),
    (np.full((3, 3), np.nan), np.ones(3), 0.1, "NaN"),
    (np.eye(3), np.ones(4), 0.1, "4 rows but the kernel has 3"),
    (np.eye(3), np.ones(3), -0.1, ">= 0"),
    (np.eye(3), np.ones(3), [0.1, 0.2], "single number"),
    (np.triu(np.ones((3, 3))), np.ones(3), 0.1, "not symmetric"),
])
def test_cholesky_rejects_bad_input(k, y, alpha, match):
    with pytest.raises(ValueError, match=match):
        solve_cholesky(k, y, alpha)


# --- eigen path -------------------------------------------------------------------------------

def test_path_coefficients_equal_cholesky_for_every_alpha(digits_kernel):
    k, labels = digits_kernel
    y = np.eye(10)[labels]
    path = eigen_path(k, y, ALPHAS)
    assert path.coef.shape == (len(ALPHAS), 300, 10)
    for alpha, coef in zip(ALPHAS, path.coef):
        np.testing.assert_allclose(coef, solve_cholesky(k, y, alpha), rtol=1e-6,
                                   atol=1e-9 * np.abs(coef).max())


@pytest.mark.parametrize("outputs", [1, 3])
def test_loo_matches_brute_force_refits(outputs):
    k = random_psd(40, seed=3)
    y = np.random.default_rng(4).standard_normal((40, outputs))
    path = eigen_path(k, y[:, 0] if outputs == 1 else y, ALPHAS)
    e, v = psd_eigh(k)
    for j, alpha in enumerate(ALPHAS):
        expected = brute_force_loo(k, y, alpha)
        np.testing.assert_allclose(path.loo_residuals[j], expected, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(path.loo_predictions[j], y - expected, rtol=1e-6, atol=1e-9)
        assert path.loo_mse[j] == pytest.approx(np.mean(expected ** 2), rel=1e-6)
    np.testing.assert_allclose(loo_errors(e, v, y, ALPHAS), path.loo_residuals, rtol=1e-10)


def test_loo_accuracy_on_digits_matches_brute_force(digits_kernel):
    k, labels = digits_kernel
    k, labels = k[:80, :80], labels[:80]
    y = np.eye(10)[labels]
    alphas = np.array([1e-4, 1e-1])
    path = eigen_path(k, y, alphas, labels=labels)
    for j, alpha in enumerate(alphas):
        predictions = y - brute_force_loo(k, y, alpha)
        assert path.loo_accuracy[j] == np.mean(predictions.argmax(axis=1) == labels)


def test_offset_is_added_to_predictions_only():
    k = random_psd(30, seed=5)
    y = np.eye(3)[np.arange(30) % 3]
    offset = y.mean(axis=0)
    plain = eigen_path(k, y - offset, ALPHAS)
    shifted = eigen_path(k, y - offset, ALPHAS, offset=offset, labels=np.arange(30) % 3)
    np.testing.assert_array_equal(shifted.loo_residuals, plain.loo_residuals)
    np.testing.assert_allclose(shifted.loo_predictions, plain.loo_predictions + offset)
    np.testing.assert_array_equal(
        shifted.loo_accuracy, (shifted.loo_predictions.argmax(axis=2) == np.arange(30) % 3).mean(1))


def test_gcv_matches_definition():
    k = random_psd(35, seed=6)
    y = np.random.default_rng(7).standard_normal((35, 2))
    path = eigen_path(k, y, ALPHAS)
    for j, alpha in enumerate(ALPHAS):
        hat = k @ np.linalg.inv(k + alpha * np.eye(35))
        residual = y - hat @ y
        gcv = np.mean(residual ** 2, axis=0) / (np.trace(np.eye(35) - hat) / 35) ** 2
        assert path.gcv[j] == pytest.approx(gcv.mean(), rel=1e-6)


def test_row_chunks_do_not_change_the_result(monkeypatch):
    k = random_psd(37, seed=8)
    y = np.random.default_rng(9).standard_normal((37, 2))
    whole = eigen_path(k, y, ALPHAS)
    monkeypatch.setattr(eigen, "CHUNK_BYTES", 8 * 37 * 5)  # 5 rows per chunk, ragged last one
    chunked = eigen_path(k, y, ALPHAS)
    np.testing.assert_allclose(chunked.loo_residuals, whole.loo_residuals, rtol=1e-12)


@pytest.mark.slow
def test_path_memory_is_the_eigendecomposition_only(monkeypatch):
    k = random_psd(800)
    # eigh "evd": a copy that becomes V plus a 2 n^2 workspace; nothing (n, n) beyond that
    assert peak_in_matrices(eigen_path, k, np.ones((800, 10)), ALPHAS) < 3.2
    # given the decomposition, diag (K + alpha I)^-1 is formed in row chunks, not from V * V
    monkeypatch.setattr(eigen, "CHUNK_BYTES", 8 * 800 * 16)  # 16 rows of V at a time
    e, v = psd_eigh(k)
    assert peak_in_matrices(lambda v: loo_errors(e, v, np.ones((800, 10)), ALPHAS), v) < 0.2


def test_singular_psd_kernel_is_clipped_not_rejected():
    k = random_psd(50, rank=5, seed=10)  # 45 eigenvalues are 0 up to rounding
    y = np.random.default_rng(11).standard_normal((50, 2))
    path = eigen_path(k, y, ALPHAS)
    assert path.eigenvalues.min() >= 0.0
    assert (path.eigenvalues[:45] < 1e-12 * path.eigenvalues[-1]).all()
    for alpha, coef in zip(ALPHAS, path.coef):
        np.testing.assert_allclose(coef, np.linalg.solve(k + alpha * np.eye(50), y), rtol=1e-5,
                                   atol=1e-8 * np.abs(coef).max())
    with pytest.raises(ValueError, match="singular"):
        eigen_path(k, y, [0.0])
    noisy = with_spectrum(np.r_[-1e-9, -1e-12, 0.0, np.linspace(1, 10, 17)])
    values = psd_eigh(noisy)[0]
    np.testing.assert_array_equal(values[:2], 0.0)
    assert 0.0 <= values[2] < 1e-14


def test_alpha_zero_on_a_nonsingular_kernel():
    k = random_psd(20, seed=12) + np.eye(20)
    y = np.random.default_rng(13).standard_normal(20)
    path = eigen_path(k, y, [0.0])
    np.testing.assert_allclose(path.coef[0, :, 0], np.linalg.solve(k, y), rtol=1e-9)
    np.testing.assert_allclose(path.loo_residuals[0], brute_force_loo(k, y[:, None], 0.0),
                               rtol=1e-8)


def test_clearly_indefinite_kernel_is_rejected():
    k = with_spectrum(np.r_[-1e-6, np.linspace(1, 10, 19)])
    with pytest.raises(NotPositiveDefiniteError,
                       match=r"-1\.000e-06 = -1\.00e-07 x the largest \(1\.000e\+01\)"):
        eigen_path(k, np.ones(20), ALPHAS)
    # just within the tolerance (-1e-8 x the largest): rounding noise, clipped to 0
    noisy = with_spectrum(np.r_[-9e-8, np.linspace(1, 10, 19)])
    assert eigen_path(noisy, np.ones(20), ALPHAS).eigenvalues[0] == 0.0


def test_float32_kernels_get_a_single_precision_tolerance():
    k = with_spectrum(np.r_[-1e-6, np.linspace(1, 10, 19)])
    assert eigen.psd_tolerance(np.float32) == 1e-5 and eigen.psd_tolerance(np.float64) == 1e-8
    path = eigen_path(k.astype(np.float32), np.ones(20), ALPHAS)
    assert path.eigenvalues[0] == 0.0
    with pytest.raises(NotPositiveDefiniteError):
        psd_eigh(k.astype(np.float32), psd_rtol=1e-8)


@pytest.mark.parametrize("kwargs, match", [
    ({"labels": np.arange(10) % 2}, r"labels must be \(20,\)"),
    ({"labels": np.arange(20)}, "labels must index the 2 target columns"),
    ({"labels": np.zeros(20)}, "integers"),
])
def test_eigen_path_rejects_bad_labels(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eigen_path(random_psd(20), np.ones((20, 2)), ALPHAS, **kwargs)


@pytest.mark.parametrize("k, y, alphas, match", [
    (np.ones((3, 4)), np.ones(3), ALPHAS, "square"),
    (np.full((3, 3), np.inf), np.ones(3), ALPHAS, "NaN or inf"),
    (np.eye(3), np.ones(2), ALPHAS, "2 rows but the kernel has 3"),
    (np.eye(3), np.ones(3), [1e-3, -1.0], ">= 0"),
    (np.eye(3), np.ones(3), [], "non-empty"),
])
def test_eigen_path_rejects_bad_input(k, y, alphas, match):
    with pytest.raises(ValueError, match=match):
        eigen_path(k, y, alphas)


def test_loo_errors_checks_the_decomposition():
    e, v = psd_eigh(random_psd(10))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        loo_errors(e[:5], v, np.ones(10), ALPHAS)
    with pytest.raises(ValueError, match=">= 0"):
        loo_errors(e - 1.0, v, np.ones(10), ALPHAS)


def test_jax_backend_matches_lapack():
    """The JAX eigendecomposition (the GPU path where a GPU is present) on JAX's CPU device."""
    from tangentless.solvers import default_backend
    rng = np.random.default_rng(5)
    a = rng.normal(size=(60, 20))
    k = a @ a.T + 1e-3 * np.eye(60)
    y = rng.normal(size=(60, 3))
    paths = [eigen_path(k, y, [1e-3, 1e-1], backend=b) for b in ("scipy", "jax")]
    np.testing.assert_allclose(paths[1].coef, paths[0].coef, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(paths[1].loo_mse, paths[0].loo_mse, rtol=1e-8)
    assert default_backend() in ("scipy", "jax")
    with pytest.raises(ValueError, match="backend"):
        eigen_path(k, y, [1e-3], backend="cupy")
