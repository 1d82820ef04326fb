"""The SGD-trained estimators save and load themselves (arrays + JSON, no pickle): every fitted
attribute comes back equal, predictions are identical, and a file of another kind is refused."""
import jax
import numpy as np
import pytest

from tangentless.benchmarks.cnn import CNNClassifier
from tangentless.kernels._shared.persist import ModelFileError
from tangentless.scattering.estimators import SparseScatteringClassifier

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)
LABELS = np.array(["cat", "dog", "eel"] * 4)


def _fitted_names(estimator) -> list:
    return sorted(k for k in vars(estimator) if k.endswith("_") and not k.startswith("_"))


def _assert_same(a, b, name: str) -> None:
    """Equal pytrees, leaf by leaf: arrays exactly (dtype, shape, values), anything else by ==."""
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b, name
    for x, y in zip(leaves_a, leaves_b):
        if isinstance(x, (np.ndarray, jax.Array)):
            assert isinstance(y, (np.ndarray, jax.Array)), name
            assert np.asarray(x).dtype == np.asarray(y).dtype, name
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
        else:
            assert type(x) is type(y) and x == y, (name, x, y)


def _round_trip(estimator, tmp_path):
    estimator.fit(IMAGES, LABELS)
    path = estimator.save(tmp_path / "model.npz")
    loaded = type(estimator).load(path)
    assert loaded.get_params() == estimator.get_params()
    names = _fitted_names(estimator)
    assert names and _fitted_names(loaded) == names
    for name in names:
        _assert_same(getattr(estimator, name), getattr(loaded, name), name)
    np.testing.assert_array_equal(loaded.decision_function(IMAGES), estimator.decision_function(IMAGES))
    np.testing.assert_array_equal(loaded.predict(IMAGES), estimator.predict(IMAGES))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("arch, width, parameterization", [("resnet9", 1 / 16, None), ("myrtle5", 4, "ntk"),
                                                          ("myrtle5", 4, "standard")])
def test_cnn_classifier_round_trip(arch, width, parameterization, tmp_path):
    path = _round_trip(CNNClassifier(arch, width=width, epochs=2, batch_size=4, augment=True, random_state=3,
                                     parameterization=parameterization), tmp_path)
    with pytest.raises(ModelFileError, match="holds a 'CNNClassifier', not a 'SparseScatteringClassifier'"):
        SparseScatteringClassifier.load(path)


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"head": "mlp", "hidden": 8, "tied": False, "augment": True}])
def test_sparse_scattering_classifier_round_trip(options, tmp_path):
    estimator = SparseScatteringClassifier(J=1, L=2, projection=4, dictionary_size=8, n_iter=2, epochs=2,
                                           batch_size=4, **options)
    path = _round_trip(estimator, tmp_path)
    with pytest.raises(ModelFileError, match="holds a 'SparseScatteringClassifier', not a 'CNNClassifier'"):
        CNNClassifier.load(path)


def test_other_files_are_refused(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    CNNClassifier("resnet9", width=1 / 16, epochs=1, batch_size=4, augment=False,
                  checkpoint_dir=checkpoint).fit(IMAGES, LABELS)
    with pytest.raises(ModelFileError, match="not a tangentless model file"):
        CNNClassifier.load(checkpoint / "checkpoint.npz")
    with pytest.raises(ModelFileError, match="no such model file"):
        SparseScatteringClassifier.load(tmp_path / "missing.npz")
