"""KernelRidgeRegressor: scikit-learn's KernelRidge on precomputed kernels at a fixed alpha, alpha
chosen by exact leave-one-out equal to refitting without each point, multi-output targets, images
through CompositionalKernel in a Pipeline, bad input and persistence."""
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.kernel_ridge import KernelRidge
from sklearn.pipeline import make_pipeline

from tangentless.benchmarks.datasets import load_digits_images
from tangentless.kernels import myrtle
from tangentless.solvers import CompositionalKernel, KernelRidgeRegressor


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    x_test = rng.normal(size=(15, 3))

    def rbf(a, b):
        return np.exp(-0.5 * ((a[:, None] - b[None]) ** 2).sum(-1))

    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * rng.normal(size=40)
    return rbf(x, x), y, rbf(x_test, x)


def test_a_fixed_alpha_equals_scikit_learns_kernel_ridge(problem):
    k, y, k_test = problem
    ours = KernelRidgeRegressor(alphas=0.1).fit(k, y)
    theirs = KernelRidge(alpha=0.1, kernel="precomputed").fit(k, y)
    np.testing.assert_allclose(ours.predict(k_test), theirs.predict(k_test), rtol=1e-8, atol=1e-10)
    assert ours.predict(k_test).shape == (15,) and ours.solver_ == "cholesky"


def test_alpha_is_the_one_of_least_brute_force_leave_one_out_error(problem):
    k, y, _ = problem
    alphas = (1e-4, 1e-2, 1e-1, 1.0, 10.0)
    model = KernelRidgeRegressor(alphas=alphas).fit(k, y)
    brute = []
    for alpha in alphas:
        errors = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            fit = KernelRidge(alpha=alpha, kernel="precomputed").fit(k[np.ix_(keep, keep)], y[keep])
            errors.append(fit.predict(k[i:i + 1, keep])[0] - y[i])
        brute.append(np.mean(np.square(errors)))
    np.testing.assert_allclose(model.cv_scores_, brute, rtol=1e-6)
    assert model.alpha_ == alphas[int(np.argmin(brute))]
    assert model.loo_score_ == pytest.approx(min(brute))


def test_multi_output_targets_and_the_r2_score(problem):
    k, y, k_test = problem
    targets = np.stack([y, -2 * y + 1], axis=1)
    model = KernelRidgeRegressor(alphas=(1e-2, 1.0)).fit(k, targets)
    assert model.predict(k_test).shape == (15, 2) and model.n_outputs_ == 2
    single = KernelRidgeRegressor(alphas=model.alpha_).fit(k, targets[:, 1])
    np.testing.assert_allclose(model.predict(k_test)[:, 1], single.predict(k_test), rtol=1e-6)
    assert model.score(k, targets) > 0.8


def test_on_images_through_the_compositional_kernel():
    images, labels = load_digits_images()
    x, x_test = images[:60], images[100:120]
    brightness = x.mean(axis=(1, 2, 3))
    spec = myrtle(5, head="linear")
    pipe = make_pipeline(CompositionalKernel(spec, zca=False, flip=False),
                         KernelRidgeRegressor(alphas=(1e-4, 1e-2, 1.0))).fit(x, brightness)
    k, k_test = spec.gram(x, progress=False), spec.gram(x_test, x, progress=False)
    by_hand = KernelRidgeRegressor(alphas=(1e-4, 1e-2, 1.0)).fit(k, brightness)
    np.testing.assert_allclose(pipe.predict(x_test), by_hand.predict(k_test), rtol=1e-5)


def test_bad_input_is_refused_with_one_line(problem, tmp_path):
    k, y, k_test = problem
    with pytest.raises(NotFittedError):
        KernelRidgeRegressor().predict(k_test)
    with pytest.raises(ValueError, match="NaN"):
        KernelRidgeRegressor().fit(k, np.where(np.arange(40) == 3, np.nan, y))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        KernelRidgeRegressor().fit(k, y[:30])
    with pytest.raises(ValueError, match="solver must be one of"):
        KernelRidgeRegressor(solver="bcd").fit(k, y)
    with pytest.raises(ValueError, match="K_train must be square"):
        KernelRidgeRegressor().fit(k[:, :30], y)
    model = KernelRidgeRegressor(alphas=(1e-2, 1.0)).fit(k, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(k_test[:, :30])
    path = model.save(tmp_path / "ridge.npz")
    loaded = KernelRidgeRegressor.load(path)
    np.testing.assert_array_equal(loaded.predict(k_test), model.predict(k_test))
    assert loaded.alpha_ == model.alpha_
