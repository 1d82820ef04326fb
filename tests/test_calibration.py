"""Probabilities through scikit-learn's CalibratedClassifierCV: the ridge classifiers give decision
values (as RidgeClassifier does); calibration works on the images-in estimators, whose folds split
images; on precomputed kernels the calibrator's folds take rows only, which the ridge refuses
saying what to do instead: Platt scaling of a fitted ridge's decision values on held-out rows."""
import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from tangentless.benchmarks.datasets import load_digits_images
from tangentless.kernels import myrtle
from tangentless.scattering import ScatteringRidgeClassifier
from tangentless.solvers import CompositionalKernel, CompositionalKernelClassifier, KernelRidgeClassifier

SPEC = myrtle(5, head="linear")     # 8x8 digits


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images()
    keep, keep_test = labels[:150] < 3, labels[1000:1150] < 3
    return images[:150][keep], labels[:150][keep], images[1000:1150][keep_test], labels[1000:1150][keep_test]


def _check_probabilities(p, n, classes=3):
    assert p.shape == (n, classes) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


@pytest.mark.parametrize("make", [
    lambda: CompositionalKernelClassifier(SPEC, flip=False, zca_bias=1e-2),
    lambda: ScatteringRidgeClassifier(J=1),
    lambda: make_pipeline(CompositionalKernel(SPEC, flip=False, zca_bias=1e-2), KernelRidgeClassifier()),
], ids=["compositional", "scattering-ridge", "kernel-pipeline"])
def test_calibrated_probabilities_on_images(digits, make):
    x, y, x_test, y_test = digits
    calibrated = CalibratedClassifierCV(make(), cv=3).fit(x, y)
    p = calibrated.predict_proba(x_test)
    _check_probabilities(p, len(x_test))
    uncalibrated = make().fit(x, y)
    # the calibrated argmax classifies about as well as the decision values it maps
    assert np.mean(calibrated.classes_[p.argmax(1)] == y_test) >= uncalibrated.score(x_test, y_test) - 0.05


def test_precomputed_kernels_calibrate_by_pairwise_folds_or_platt_scaling(digits):
    x, y, x_test, y_test = digits
    k, k_test = SPEC.gram(x, progress=False), SPEC.gram(x_test, x, progress=False)
    # the calibrator's folds take rows only, K[train, :]: refused, saying what to do
    with pytest.raises(ValueError, match=r"K_train must be square .*calibrate on images"):
        CalibratedClassifierCV(KernelRidgeClassifier(), cv=3).fit(k, y)
    # a fitted ridge on held-out rows K[held, fit] (not square, which scikit-learn's splitter
    # refuses for pairwise estimators, FrozenEstimator included): Platt scaling, a logistic
    # regression on its decision values
    fit, held = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
    ridge = KernelRidgeClassifier().fit(k[np.ix_(fit, fit)], y[fit])
    with pytest.raises(ValueError, match="X should be a square kernel matrix"):
        CalibratedClassifierCV(FrozenEstimator(ridge)).fit(k[np.ix_(held, fit)], y[held])
    platt = LogisticRegression().fit(ridge.decision_function(k[np.ix_(held, fit)]), y[held])
    p = platt.predict_proba(ridge.decision_function(k_test[:, fit]))
    _check_probabilities(p, len(x_test))
    assert np.mean(p.argmax(1) == y_test) >= ridge.score(k_test[:, fit], y_test) - 0.05
