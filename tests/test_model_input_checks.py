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
    assert model.ridge_.psd_rtol == model.ridge_.psd_rtol_ == 1e-5


def _tamper(path, edit_record=None, edit_arrays=None):
    """Rewrite a saved model file with its JSON record and/or arrays edited."""
    import json

    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    record = json.loads(str(arrays.pop("__record__")))
    if edit_record:
        edit_record(record)
    if edit_arrays:
        edit_arrays(arrays)
    np.savez(path, __record__=np.array(json.dumps(record)), **arrays)


@pytest.fixture(scope="module")
def scattering_model_file(tmp_path_factory):
    from tangentless.benchmarks.datasets import load_digits_images
    from tangentless.scattering import SparseScatteringClassifier

    x, y = load_digits_images()
    x = np.repeat(np.repeat(x[:48], 2, 1), 2, 2)
    model = SparseScatteringClassifier(J=1, projection=8, dictionary_size=16, n_iter=2, epochs=1,
                                       batch_size=16).fit(x, y[:48])
    return model.save(tmp_path_factory.mktemp("ssc") / "m.npz")


@pytest.mark.parametrize("edit_record, edit_arrays, message", [
    (lambda r: r["meta"].update(image_shape="16x16"), None, "image_shape must be a list of 3 positive"),
    (lambda r: r["meta"].update(feature_shape=[8, 8]), None, "feature_shape must be a list of 3 positive"),
    (lambda r: r["meta"].update(history={"loss": 1}), None, "history must be a list"),
    (lambda r: r["meta"].update(budget=[1, 2]), None, "budget must be an object"),
    (None, lambda a: a.update(classes=np.zeros(10, np.int64)), "distinct"),
])
def test_sparse_scattering_file_fields_are_validated(scattering_model_file, tmp_path, edit_record,
                                                     edit_arrays, message):
    import shutil

    from tangentless.kernels._shared.persist import ModelFileError
    from tangentless.scattering import SparseScatteringClassifier

    path = tmp_path / "bad.npz"
    shutil.copy(scattering_model_file, path)
    _tamper(path, edit_record, edit_arrays)
    with pytest.raises(ModelFileError, match=message):
        SparseScatteringClassifier.load(path)


@pytest.fixture(scope="module")
def cnn_model_file(tmp_path_factory):
    from tangentless.benchmarks.cnn import CNNClassifier
    from tangentless.benchmarks.datasets import load_digits_images

    x, y = load_digits_images()
    model = CNNClassifier(arch="myrtle5", width=8, epochs=1, batch_size=32, augment=False).fit(x[:64], y[:64])
    return model.save(tmp_path_factory.mktemp("cnn") / "m.npz")


@pytest.mark.parametrize("edit_record, edit_arrays, message", [
    (lambda r: r["meta"].update(image_shape=[8, 8]), None, "image_shape must be a list of 3 positive"),
    (lambda r: r["meta"].update(budget="all"), None, "budget must be an object"),
    (None, lambda a: a.update(standardization_std=np.zeros(1, np.float32)), "standardization_std must be > 0"),
    (None, lambda a: a.update(standardization_mean=np.zeros(3, np.float32)), "standardization_mean has shape"),
    (None, lambda a: a.update(classes=np.array([1, 1, 2, 3, 4, 5, 6, 7, 8, 9])), "distinct"),
])
def test_cnn_file_fields_are_validated(cnn_model_file, tmp_path, edit_record, edit_arrays, message):
    import shutil

    from tangentless.benchmarks.cnn import CNNClassifier
    from tangentless.kernels._shared.persist import ModelFileError

    path = tmp_path / "bad.npz"
    shutil.copy(cnn_model_file, path)
    _tamper(path, edit_record, edit_arrays)
    with pytest.raises(ModelFileError, match=message):
        CNNClassifier.load(path)
