"""The kernel and scattering-ridge classifiers record the shape and dtype of their training images
and refuse others at prediction (issue: an 8x32 batch passed a 16x16 scattering model because the
feature count matched; uint8 and float pixels are different inputs), also after save/load; the
compositional classifier hands its spec's PSD tolerance to the ridge solvers."""
import numpy as np
import pytest

from tangentless.kernels import myrtle
from tangentless.scattering import ScatteringRidgeClassifier
from tangentless.solvers import CompositionalKernelClassifier


def _images(n=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, size, size, 3)) * 255).astype(np.uint8), np.arange(n) % 3


@pytest.fixture(scope="module")
def scattering_ridge():
    x, y = _images()
    return ScatteringRidgeClassifier(J=2).fit(x, y), x


def test_scattering_ridge_refuses_another_shape_with_the_same_feature_count(scattering_ridge):
    model, x = scattering_ridge
    with pytest.raises(ValueError, match=r"^X has images of shape \(8, 32, 3\), the model was fitted on \(16, 16, 3\)$"):
        model.predict(x.reshape(len(x), 8, 32, 3))


def test_scattering_ridge_refuses_another_dtype(scattering_ridge):
    model, x = scattering_ridge
    with pytest.raises(ValueError, match="fitted on uint8 images .*got float32.*pass uint8 images, as at fit"):
        model.predict(x.astype(np.float32))


def test_scattering_ridge_checks_survive_save_and_load(scattering_ridge, tmp_path):
    model, x = scattering_ridge
    loaded = ScatteringRidgeClassifier.load(model.save(tmp_path / "m.npz"))
    assert loaded.image_shape_ == (16, 16, 3) and loaded.input_dtype_ == "uint8"
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    with pytest.raises(ValueError, match="shape"):
        loaded.predict(x.reshape(len(x), 8, 32, 3))


@pytest.fixture(scope="module")
def kernel_model():
    x, y = _images(n=12, size=8)
    spec = myrtle(5, head="linear")  # 8x8: pools 2, 2, then the global pool
    return CompositionalKernelClassifier(arch=spec, flip=False, zca_bias=1e-2).fit(x, y), x


def test_kernel_classifier_refuses_pixels_of_another_dtype(kernel_model):
    model, x = kernel_model
    assert model.input_dtype_ == "uint8"
    with pytest.raises(ValueError, match="fitted on uint8 images .*got float32.*pass uint8 images, as at fit"):
        model.predict(x.astype(np.float32) / 255)
    assert len(model.predict(x)) == len(x)


def test_kernel_classifier_passes_its_spec_precision_to_the_solvers(kernel_model):
    model, _ = kernel_model
    assert model.spec_.psd_rtol == 1e-5  # mixed precision: float32 stages
    assert model.ridge_.psd_rtol == model.ridge_.psd_tol_ == 1e-5
