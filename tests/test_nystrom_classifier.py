"""Nystrom mode of the compositional classifier (n_centers=M): only K(X, centers) is computed, never
the n x n matrix; with every image a center it is the exact kernel ridge; with fewer it stays near
it on digits; its alpha selection uses training rows only; it saves and loads."""
import numpy as np
import pytest

from tangentless.benchmarks.datasets import load_digits_images
from tangentless.kernels import myrtle
from tangentless.solvers import CompositionalKernelClassifier, NystromRidgeClassifier

SPEC = myrtle(5, head="linear")     # 8x8 digits


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images()
    return images[:200], labels[:200], images[1000:1200], labels[1000:1200]


def test_every_image_a_center_is_the_exact_kernel_ridge(digits):
    x, y, x_test, _ = digits
    x, y = x[:60], y[:60]
    exact = CompositionalKernelClassifier(SPEC, zca=False, flip=False, alphas=1e-3).fit(x, y)
    nystrom = CompositionalKernelClassifier(SPEC, zca=False, flip=False, alphas=1e-3, n_centers=60).fit(x, y)
    np.testing.assert_allclose(nystrom.decision_function(x_test), exact.decision_function(x_test),
                               rtol=1e-5, atol=1e-6)


def test_only_the_centers_columns_are_computed_and_accuracy_stays_near_exact(digits, monkeypatch):
    x, y, x_test, y_test = digits
    asked = []
    engine = type(SPEC).gram

    def counting(spec, a, b=None, **options):
        asked.append((len(a), len(a) if b is None else len(b)))
        return engine(spec, a, b, **options)

    monkeypatch.setattr(type(SPEC), "gram", counting)
    model = CompositionalKernelClassifier(SPEC, zca_bias=1e-2, flip=False, n_centers=50).fit(x, y)
    assert asked == [(200, 50)] and model.train_images_.shape[0] == 50
    assert model.centers_.shape == (50,) and np.unique(model.centers_).size == 50
    model.predict(x_test)
    assert asked[-1] == (200, 50)       # 200 test images against the 50 centers
    monkeypatch.setattr(type(SPEC), "gram", engine)
    exact = CompositionalKernelClassifier(SPEC, zca_bias=1e-2, flip=False).fit(x, y)
    assert model.score(x_test, y_test) > exact.score(x_test, y_test) - 0.08
    assert model.ridge_.cv_scores_ is not None and model.alpha_ in model.ridge_.alphas


def test_the_nystrom_ridge_matches_the_normal_equations_written_out():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 4))
    k = np.exp(-0.5 * ((features[:, None] - features[None]) ** 2).sum(-1))
    y = (features[:, 0] > 0).astype(int)
    centers = np.array([1, 4, 7, 10, 13, 20, 25])
    model = NystromRidgeClassifier(centers=centers, alphas=0.1).fit(k[:, centers], y)
    # (K_nm^T K_nm + alpha K_mm) c = K_nm^T Y on one-hot Y
    k_nm, k_mm, targets = k[:, centers], k[np.ix_(centers, centers)], np.eye(2)[y]
    expected = np.linalg.solve(k_nm.T @ k_nm + 0.1 * k_mm, k_nm.T @ targets)
    np.testing.assert_allclose(model.coef_, expected, rtol=1e-6, atol=1e-8)


def test_bad_settings_and_persistence(digits, tmp_path):
    x, y, x_test, _ = digits
    with pytest.raises(ValueError, match="with n_centers the solver is"):
        CompositionalKernelClassifier(SPEC, n_centers=10, solver="eigen").fit(x[:40], y[:40])
    with pytest.raises(ValueError, match="n_centers must be None or >= 1"):
        CompositionalKernelClassifier(SPEC, n_centers=0).fit(x[:40], y[:40])
    with pytest.raises(ValueError, match="centers is required"):
        NystromRidgeClassifier().fit(np.eye(4)[:, :2], [0, 1, 0, 1])
    with pytest.raises(ValueError, match="centers must be 2 distinct row indices"):
        NystromRidgeClassifier(centers=[0, 0]).fit(np.eye(4)[:, :2], [0, 1, 0, 1])
    model = CompositionalKernelClassifier(SPEC, zca_bias=1e-2, flip=False, n_centers=20).fit(x[:60], y[:60])
    loaded = CompositionalKernelClassifier.load(model.save(tmp_path / "nystrom.npz"))
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))
    np.testing.assert_array_equal(loaded.centers_, model.centers_)
