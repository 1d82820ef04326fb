"""Every estimator saves and loads itself (arrays + JSON, no pickle): all fitted attributes (the
names ending in ``_``) come back equal, nested estimators recursively, and predictions identical."""
import dataclasses
import json

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.metrics.pairwise import rbf_kernel

from tangentless.benchmarks.datasets import load_digits_images
from tangentless.benchmarks.experiments.persist import load_model
from tangentless.kernels import Conv, DirectSum, GlobalAvgPool, Relu, ZCAWhitening, project, serial
from tangentless.kernels._shared.persist import ModelFileError
from tangentless.scattering import ScatteringFeatures, ScatteringRidgeClassifier
from tangentless.solvers import CompositionalKernelClassifier, KernelRidgeClassifier


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images()
    return images[:60], labels[:60], images[60:90]


def fitted_attributes(estimator) -> dict:
    return {k: v for k, v in vars(estimator).items() if k.endswith("_") and not k.startswith("_")}


def assert_equal(a, b, where: str) -> None:
    """a == b: arrays exactly (values, dtype, shape), estimators and dataclasses field by field."""
    if isinstance(a, BaseEstimator):
        assert type(a) is type(b), where
        assert_fitted_equal(a, b, where)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for field in dataclasses.fields(a):
            assert_equal(getattr(a, field.name), getattr(b, field.name), f"{where}.{field.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal(a[key], b[key], f"{where}[{key!r}]")
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def assert_fitted_equal(original, loaded, where: str = "") -> None:
    expected, got = fitted_attributes(original), fitted_attributes(loaded)
    assert expected and expected.keys() == got.keys(), where
    for name in expected:
        assert_equal(expected[name], got[name], f"{where}{type(original).__name__}.{name}")


def round_trip(estimator, tmp_path):
    path = estimator.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as saved:   # plain arrays only
        assert json.loads(str(saved["__record__"]))["kind"] == type(estimator).__name__
    loaded = type(estimator).load(path)
    assert loaded.get_params() == estimator.get_params()
    assert_fitted_equal(estimator, loaded)
    return loaded


def _kernels(digits):
    x, y, x_test = digits
    rows, rows_test = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    return rbf_kernel(rows, rows, gamma=0.02), y, rbf_kernel(rows_test, rows, gamma=0.02)


@pytest.mark.parametrize("params", [
    {},                                                   # LOO over 8 alphas, eigen solver
    {"selection": "holdout", "solver": "cholesky"},       # held-out selection, no path
    {"alphas": 1e-3, "solver": "nystrom", "n_centers": 20, "center": True},   # centers_, one alpha
])
def test_kernel_ridge_round_trip(digits, tmp_path, params):
    k, y, k_test = _kernels(digits)
    model = KernelRidgeClassifier(backend="scipy", **params).fit(k, y)
    loaded = round_trip(model, tmp_path)
    np.testing.assert_array_equal(loaded.predict(k_test), model.predict(k_test))
    np.testing.assert_array_equal(loaded.decision_function(k_test), model.decision_function(k_test))


def test_zca_round_trip(digits, tmp_path):
    x, _, x_test = digits
    model = ZCAWhitening(bias=1e-3).fit(x)
    loaded = round_trip(model, tmp_path)
    np.testing.assert_array_equal(loaded.transform(x_test), model.transform(x_test))


def test_scattering_features_round_trip(digits, tmp_path):
    x, _, x_test = digits
    model = ScatteringFeatures(J=1, progress=False).fit(x)
    loaded = round_trip(model, tmp_path)
    np.testing.assert_array_equal(loaded.transform(x_test[:4]), model.transform(x_test[:4]))


@pytest.mark.slow
@pytest.mark.parametrize("arch, zca", [
    ("myrtle5", True),
    (serial(Conv(3), Relu(), DirectSum(serial(Conv(3), Relu()), Conv(1), weights=(0.5, 1.5)),
            GlobalAvgPool(), project()), False),
])
def test_compositional_kernel_round_trip(digits, tmp_path, arch, zca):
    x, y, x_test = digits
    model = CompositionalKernelClassifier(arch=arch, zca=zca, flip=False, zca_bias=1e-2).fit(x, y)
    loaded = round_trip(model, tmp_path)
    assert loaded.arch == model.arch and loaded.spec_ == model.spec_
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))


def test_scattering_ridge_round_trip(digits, tmp_path):
    x, y, x_test = digits
    model = ScatteringRidgeClassifier(J=1).fit(x, y)
    loaded = round_trip(model, tmp_path)
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))


def test_another_kind_of_file_is_refused(digits, tmp_path):
    x, _, _ = digits
    path = ZCAWhitening().fit(x).save(tmp_path / "zca.npz")
    with pytest.raises(ModelFileError, match="holds a 'ZCAWhitening', not a 'KernelRidgeClassifier'"):
        KernelRidgeClassifier.load(path)
    with pytest.raises(ModelFileError, match="holds a 'ZCAWhitening', not a 'tangentless-method'"):
        load_model(path)   # the CLI's model files name their method; a bare estimator file is refused
    np.savez(tmp_path / "other.npz", images=np.zeros((1, 8, 8, 1)))
    with pytest.raises(ModelFileError, match="not a tangentless model file"):
        ScatteringRidgeClassifier.load(tmp_path / "other.npz")
