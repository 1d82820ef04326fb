"""The scikit-learn contract of every estimator (issue 16): an unfitted estimator's predict,
decision_function, predict_proba, transform and score raise ``NotFittedError`` naming it (the
compositional classifier gave AttributeError on ``ridge_``); a classifier refuses continuous
(non-class) y with scikit-learn's one-line "Unknown label type" ValueError before any ZCA, Gram,
scattering or training work (the compositional and scattering-ridge classifiers computed all of it
first), while integer, integral-float and string class labels stay accepted.

``n_features_in_``: set where the input is a feature table or a precomputed kernel
(KernelRidgeClassifier: n_train columns of K; ZCAWhitening: the D = H W C values it whitens). The
images-in estimators do not set it: scikit-learn's ``validate_data`` would record ``X.shape[1]``, the
image height, which counts no features; they record the image shape instead and refuse another one.
"""
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import tangentless.benchmarks.cnn as cnn_module
import tangentless.scattering.frontend as frontend_module
import tangentless.scattering.ridge as ridge_module
import tangentless.scattering.train as train_module
import tangentless.solvers.estimators as estimators_module
from tangentless.benchmarks.cnn import CNNClassifier
from tangentless.benchmarks.datasets import load_digits_images
from tangentless.kernels import ZCAWhitening, myrtle
from tangentless.scattering import ScatteringFeatures, ScatteringRidgeClassifier, SparseScatteringClassifier
from tangentless.solvers import (CompositionalKernel, CompositionalKernelClassifier,
                                 KernelRidgeClassifier, KernelRidgeRegressor, NystromRidgeClassifier)

N = 12  # training images (8x8 digits)


@pytest.fixture(scope="module")
def digits():
    """N digits (N, 8, 8, 1) float32 with labels 0, 1, 2 (four each), and their linear kernel."""
    images, labels = load_digits_images()
    keep = np.concatenate([np.flatnonzero(labels == c)[:4] for c in range(3)])
    x = images[keep]
    flat = x.reshape(len(x), -1).astype(np.float64)
    return x, labels[keep], flat @ flat.T


def _compositional():
    # 8x8: the linear head's pools 2, 2, then the global pool; no flip: one gram per fit
    return CompositionalKernelClassifier(arch=myrtle(5, head="linear"), flip=False, zca_bias=1e-2)


#: name -> (a fresh estimator, whether it takes the precomputed kernel rather than the images)
ESTIMATORS = {
    "KernelRidgeClassifier": (KernelRidgeClassifier, True),
    "KernelRidgeRegressor": (KernelRidgeRegressor, True),
    "NystromRidgeClassifier": (lambda: NystromRidgeClassifier(centers=np.arange(0, N, 2)), True),
    "CompositionalKernel": (lambda: CompositionalKernel(arch=myrtle(5, head="linear"), flip=False,
                                                        zca_bias=1e-2), False),
    "CompositionalKernelClassifier": (_compositional, False),
    "ScatteringRidgeClassifier": (lambda: ScatteringRidgeClassifier(J=2), False),
    "SparseScatteringClassifier": (lambda: SparseScatteringClassifier(J=1, L=2, projection=4, dictionary_size=8,
                                                                      n_iter=2, epochs=1, batch_size=16), False),
    "CNNClassifier": (lambda: CNNClassifier("myrtle5", width=4, epochs=1, batch_size=16, augment=False), False),
    "ScatteringFeatures": (lambda: ScatteringFeatures(J=2, progress=False), False),
    "ZCAWhitening": (ZCAWhitening, False),
}
CLASSIFIERS = [name for name in ESTIMATORS if "Classifier" in name]
METHODS = ("predict", "decision_function", "predict_proba", "transform", "score", "test_kernel")
UNFITTED = [(name, method) for name, (make, _) in ESTIMATORS.items() for method in METHODS
            if hasattr(make(), method)]


def _input(name, digits):
    x, _, k = digits
    if name == "NystromRidgeClassifier":
        return k[:, ::2]     # K(X, centers): every other image a center
    return k if ESTIMATORS[name][1] else x


@pytest.mark.parametrize("name, method", UNFITTED, ids=[f"{n}.{m}" for n, m in UNFITTED])
def test_unfitted_methods_raise_not_fitted_error(name, method, digits):
    estimator = ESTIMATORS[name][0]()
    args = (_input(name, digits), digits[1]) if method == "score" else (_input(name, digits),)
    with pytest.raises(NotFittedError, match=f"^This {name} instance is not fitted yet"):
        getattr(estimator, method)(*args)


def _forbid(monkeypatch, target, attribute):
    def work_started(*args, **kwargs):
        raise AssertionError(f"{attribute} ran before y was checked")
    monkeypatch.setattr(target, attribute, work_started)


#: name -> the entry points of the work a fit does after its input checks
WORK = {
    "KernelRidgeClassifier": [(estimators_module, "check_kernel"), (estimators_module, "eigen_path"),
                              (estimators_module, "solve_cholesky")],
    "NystromRidgeClassifier": [(estimators_module, "check_kernel"), (estimators_module, "nystrom_fit")],
    "CompositionalKernelClassifier": [(CompositionalKernelClassifier, "_gram"), (ZCAWhitening, "fit")],
    "ScatteringRidgeClassifier": [(ridge_module, "scatter")],
    "SparseScatteringClassifier": [(frontend_module, "scatter"), (frontend_module, "scattering_fn"),
                                   (train_module, "fit")],
    "CNNClassifier": [(cnn_module, "build_network"), (cnn_module, "train_cnn")],
}


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_continuous_y_is_refused_before_any_work(name, digits, monkeypatch):
    for target, attribute in WORK[name]:
        _forbid(monkeypatch, target, attribute)
    continuous = np.linspace(0.0, 1.0, N)
    with pytest.raises(ValueError, match="^Unknown label type: continuous") as err:
        ESTIMATORS[name][0]().fit(_input(name, digits), continuous)
    assert "\n" not in str(err.value)
    with pytest.raises(AssertionError, match="ran before y was checked"):  # the work fit reaches is forbidden
        ESTIMATORS[name][0]().fit(_input(name, digits), digits[1])


#: the classifiers whose fit is cheap enough here (the networks' labels: test_training_bad_input.py)
KERNEL_CLASSIFIERS = ["KernelRidgeClassifier", "CompositionalKernelClassifier", "ScatteringRidgeClassifier"]
LABELS = {"int": lambda y: y, "integral float": lambda y: y.astype(np.float64),
          "string": lambda y: np.array(["zero", "one", "two"])[y]}


@pytest.fixture(scope="module")
def fitted(digits):
    """{(classifier name, label kind): (fitted classifier, the labels it was fitted on)}."""
    models = {}
    for name in KERNEL_CLASSIFIERS:
        for kind, encode in LABELS.items():
            y = encode(digits[1])
            models[name, kind] = ESTIMATORS[name][0]().fit(_input(name, digits), y), y
    return models


@pytest.mark.parametrize("kind", sorted(LABELS))
@pytest.mark.parametrize("name", KERNEL_CLASSIFIERS)
def test_class_labels_are_accepted(name, kind, fitted, digits):
    model, y = fitted[name, kind]
    np.testing.assert_array_equal(model.classes_, np.unique(y))
    predicted = model.predict(_input(name, digits))
    assert predicted.dtype == model.classes_.dtype and set(predicted) <= set(y)
    assert model.score(_input(name, digits), y) == np.mean(predicted == y)


def test_n_features_in_of_a_precomputed_kernel_is_the_training_count(fitted, digits):
    model, _ = fitted["KernelRidgeClassifier", "int"]
    assert model.n_features_in_ == N
    with pytest.raises(ValueError, match=f"X has {N - 1} features, but KernelRidgeClassifier is expecting {N}"):
        model.predict(digits[2][:, :-1])


def test_n_features_in_of_zca_is_the_pixel_count(digits):
    assert ZCAWhitening().fit(digits[0]).n_features_in_ == 8 * 8 * 1


@pytest.mark.parametrize("name", ["CompositionalKernelClassifier", "ScatteringRidgeClassifier"])
def test_images_in_classifiers_record_the_image_shape_not_n_features_in(name, fitted):
    model, _ = fitted[name, "int"]
    assert not hasattr(model, "n_features_in_")


def test_scattering_features_record_the_input_shape_not_n_features_in(digits):
    features = ScatteringFeatures(J=2, progress=False).fit(digits[0])
    assert features.input_shape_ == (8, 8, 1) and not hasattr(features, "n_features_in_")
