"""The end-to-end estimator: images in, labels out, equal to the pipeline written by hand."""
import numpy as np
import pytest

from tangentless.benchmarks.datasets import load_digits_images
from tangentless.kernels import ZCAWhitening, myrtle
from tangentless.solvers import CompositionalKernelClassifier, KernelRidgeClassifier


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images()
    return images[:300], labels[:300], images[300:450], labels[300:450]


@pytest.mark.slow
def test_equals_the_hand_written_pipeline_and_classifies_digits(digits):
    x, y, x_test, y_test = digits
    model = CompositionalKernelClassifier(arch="myrtle5", flip=False, alphas=(1e-6, 1e-4, 1e-2))
    predicted = model.fit(x, y).predict(x_test)
    zca = ZCAWhitening().fit(x)
    spec = myrtle(5)
    ridge = KernelRidgeClassifier(alphas=(1e-6, 1e-4, 1e-2)).fit(
        spec.gram(zca.transform(x), progress=False), y)
    by_hand = ridge.predict(spec.gram(zca.transform(x_test), zca.transform(x), progress=False))
    np.testing.assert_array_equal(predicted, by_hand)
    assert model.alpha_ == ridge.alpha_
    assert np.mean(predicted == y_test) > 0.9


@pytest.mark.slow
def test_flip_and_binary_labels(digits):
    x, y, x_test, y_test = digits
    keep, keep_test = y < 2, y_test < 2
    model = CompositionalKernelClassifier(arch="myrtle5", flip=True, zca=False)
    model.fit(x[keep], y[keep])
    assert model.decision_function(x_test[keep_test]).shape == (keep_test.sum(),)
    assert model.score(x_test[keep_test], y_test[keep_test]) > 0.95


def test_bad_input(digits):
    x, y, x_test, _ = digits
    with pytest.raises(ValueError, match="labels"):
        CompositionalKernelClassifier().fit(x[:10], y[:9])
    with pytest.raises(ValueError, match="arch"):
        CompositionalKernelClassifier(arch="resnet").fit(x[:10], y[:10])
    model = CompositionalKernelClassifier(flip=False).fit(x[:20], y[:20])
    with pytest.raises(ValueError, match="shape"):
        model.predict(np.zeros((2, 12, 12, 1)))
