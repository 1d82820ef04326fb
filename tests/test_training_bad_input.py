"""Issue 12, for the SGD-trained models (the scattering/ISTC classifier and the CNNs): nothing silent.
The input dtype (uint8 scaled to [0, 1], or floats used as given) and shape are recorded at fit and
checked at predict; a diverged run raises TrainingDivergedError and writes no checkpoint of the
diverged state; a non-finite model is neither saved, loaded nor used; labels may be strings (object
arrays included); logs and progress go to stderr, never stdout."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tangentless.benchmarks.cnn import CNNClassifier
from tangentless.benchmarks.datasets import load_digits_images
from tangentless.kernels._shared.persist import ModelFileError, save_state
from tangentless.kernels._shared.training import (CHECKPOINT, TrainingDivergedError, load_checkpoint,
                                                  train_loop, train_metrics)
from tangentless.scattering.estimators import SparseScatteringClassifier


def _scattering(**options):
    return SparseScatteringClassifier(**dict(dict(J=1, L=2, projection=4, dictionary_size=8, n_iter=2, epochs=2,
                                                  batch_size=16), **options))


def _cnn(**options):
    return CNNClassifier("myrtle5", **dict(dict(width=4, epochs=2, batch_size=16, augment=False), **options))


MAKERS = {"scattering": _scattering, "cnn": _cnn}


@pytest.fixture(scope="module")
def digits():
    """64 digits (8x8x1): float32 in [0, 1], the same pixels as uint8, labels 0-9."""
    images, labels = load_digits_images()
    images, labels = images[:64], labels[:64]
    return images, np.round(images * 255).astype(np.uint8), labels


@pytest.fixture(scope="module", params=sorted(MAKERS))
def fitted_uint8(request, digits):
    _, pixels, labels = digits
    return MAKERS[request.param]().fit(pixels, labels)


def _reload(estimator, tmp_path):
    return type(estimator).load(estimator.save(tmp_path / "model.npz"))


# --- item 2: the input dtype -------------------------------------------------------------------------

def test_uint8_model_refuses_float_pixels_also_after_loading(fitted_uint8, digits, tmp_path):
    floats, pixels, labels = digits
    assert fitted_uint8.input_dtype_ == "uint8"
    loaded = _reload(fitted_uint8, tmp_path)
    assert loaded.input_dtype_ == "uint8"
    np.testing.assert_array_equal(loaded.predict(pixels), fitted_uint8.predict(pixels))
    for model in (fitted_uint8, loaded):
        for call in (model.predict, model.decision_function):
            with pytest.raises(ValueError, match=r"^X: the model was fitted on uint8 images \(scaled to \[0, 1\]\); "
                                                 r"got float32 \(used as given\): pass uint8 images, as at fit$"):
                call(pixels.astype(np.float32))
        with pytest.raises(ValueError, match="fitted on uint8 images"):
            model.score(floats, labels)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_float_model_refuses_uint8_pixels(kind, digits, tmp_path):
    floats, pixels, labels = digits
    model = MAKERS[kind](epochs=1).fit(floats.astype(np.float64), labels)
    assert model.input_dtype_ == "float32"       # float64 is validated to float32: the same scale
    model.predict(floats)
    for m in (model, _reload(model, tmp_path)):
        with pytest.raises(ValueError, match=r"^X: the model was fitted on float32 images \(used as given\); got "
                                             r"uint8 \(scaled to \[0, 1\]\): pass float images, as at fit$"):
            m.predict(pixels)


# --- item 5: the input shape -------------------------------------------------------------------------

def test_another_image_shape_with_the_same_size_is_refused(fitted_uint8, digits, tmp_path):
    _, pixels, _ = digits
    reshaped = pixels.reshape(64, 4, 16, 1)       # 64 pixels, as the 8x8 images; Myrtle and J=1 accept it
    loaded = _reload(fitted_uint8, tmp_path)
    assert fitted_uint8.image_shape_ == loaded.image_shape_ == (8, 8, 1)
    for model in (fitted_uint8, loaded):
        with pytest.raises(ValueError, match=r"shape \(4, 16, 1\), the model was fitted on \(8, 8, 1\)"):
            model.predict(reshaped)


# --- item 4: divergence and non-finite models ----------------------------------------------------------

@pytest.mark.parametrize("kind, lr", [("scattering", 1e6), ("cnn", 1e4)])
def test_a_diverged_fit_raises_and_writes_no_checkpoint(kind, lr, digits, tmp_path):
    floats, _, labels = digits
    with pytest.raises(TrainingDivergedError, match=r"^training diverged: .* (at|after) epoch 1.*learning rate .*; "
                                                    r"lower the learning rate$") as err:
        MAKERS[kind](lr=lr, epochs=1, checkpoint_dir=tmp_path).fit(floats, labels)
    assert isinstance(err.value, ValueError)
    assert not (tmp_path / CHECKPOINT).exists()


def _toy_run(tmp_path, poison):
    """train_loop on a 1-parameter model, 3 epochs of 4 steps; ``poison(index, w, loss) -> (w, loss)``."""
    def start(resuming):
        params = {"w": jnp.ones(2)}
        return {"params": params, "state": {}, "opt_state": optax.sgd(1.0).init(params)}

    def step(trees, x, y, lr, index):
        w, loss = poison(index, trees["params"]["w"] * 0.5, jnp.float32(1.0))
        return dict(trees, params={"w": w}), train_metrics(jnp.zeros((1, 2)), jnp.zeros(1, jnp.int32), loss)

    return train_loop(start, step, lambda epoch: [(None, None)] * 4, epochs=3, steps_per_epoch=4, batch_size=1,
                      schedule=optax.constant_schedule(0.25), fingerprint={}, checkpoint_dir=tmp_path)


def test_train_loop_names_the_diverged_step_and_keeps_the_last_finite_checkpoint(tmp_path):
    nan_loss = lambda index, w, loss: (w, jnp.where(index == 6, jnp.nan, loss))
    with pytest.raises(TrainingDivergedError, match=r"^training diverged: the loss is nan at epoch 2, step 3 of 4 "
                                                    r"\(learning rate 0.25\); lower the learning rate$"):
        _toy_run(tmp_path, nan_loss)
    _, meta = load_checkpoint(tmp_path / CHECKPOINT, {"params": {"w": jnp.ones(2)}, "state": {},
                                                      "opt_state": optax.sgd(1.0).init({"w": jnp.ones(2)})})
    assert meta["epoch"] == 1


def test_train_loop_checks_the_params_when_the_loss_is_finite(tmp_path):
    inf_params = lambda index, w, loss: (jnp.where(index == 3, w.at[1].set(jnp.inf), w), loss)
    with pytest.raises(TrainingDivergedError, match=r"non-finite values in \['params'\]\['w'\] after epoch 1 "
                                                    r"\(learning rate 0.25\); lower the learning rate$"):
        _toy_run(tmp_path, inf_params)
    assert not (tmp_path / CHECKPOINT).exists()


def _poisoned(model):
    """A copy of the fitted ``model``'s fitted state with its first parameter array set to NaN."""
    leaves, tree = jax.tree_util.tree_flatten(model.params_)
    return jax.tree_util.tree_unflatten(tree, [jnp.full_like(leaves[0], jnp.nan)] + leaves[1:])


def test_a_non_finite_model_is_not_saved_loaded_or_used(fitted_uint8, digits, tmp_path):
    _, pixels, _ = digits
    good = fitted_uint8.params_
    meta, arrays = fitted_uint8._fitted_state()
    try:
        fitted_uint8.params_ = _poisoned(fitted_uint8)
        with pytest.raises(ValueError, match=r"^refusing to save: the model has non-finite \(NaN or inf\) values in "
                                             r"1 parameter arrays \(\['params'\]"):
            fitted_uint8.save(tmp_path / "nan.npz")
        assert not (tmp_path / "nan.npz").exists()
        with pytest.raises(ValueError, match="^cannot predict: the model has non-finite"):
            fitted_uint8.predict(pixels)
    finally:
        fitted_uint8.params_ = good
    key = next(k for k in arrays if k.startswith("params"))
    arrays[key] = np.full_like(arrays[key], np.nan)
    path = save_state(tmp_path / "tampered.npz", type(fitted_uint8).__name__, fitted_uint8._params_to_json(),
                      meta, arrays)
    with pytest.raises(ModelFileError, match="cannot load: the model has non-finite"):
        type(fitted_uint8).load(path)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_non_finite_outputs_are_refused(kind, digits):
    floats, _, labels = digits
    model = MAKERS[kind](epochs=1).fit(floats, labels)
    huge = floats * np.float32(1e38)              # finite float32 images whose outputs overflow
    with pytest.raises(ValueError, match=r"^the model's outputs are not finite \(NaN or inf\) for \d+ of 64 images"):
        model.predict(huge)


# --- smaller: labels of any kind -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_string_labels_also_as_objects_round_trip(kind, digits, tmp_path):
    floats, _, labels = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    for y in (names[labels], names[labels].astype(object), list(names[labels])):
        model = MAKERS[kind](epochs=1).fit(floats, y)
        assert model.classes_.dtype.kind == "U" and list(model.classes_) == sorted(names)
        loaded = _reload(model, tmp_path)
        np.testing.assert_array_equal(loaded.classes_, model.classes_)
        np.testing.assert_array_equal(loaded.predict(floats), model.predict(floats))
        assert set(loaded.predict(floats)) <= set(names)
        assert 0 <= loaded.score(floats, y) <= 1


@pytest.mark.parametrize("y, match", [(np.array([1, "a"] * 32, dtype=object), "Unknown label type"),
                                      (np.linspace(0, 1, 64), "Unknown label type"),
                                      (np.zeros(64), "one class")])
def test_unusable_labels_are_refused(y, match, digits):
    with pytest.raises(ValueError, match=match):
        _scattering(epochs=1).fit(digits[0], y)


# --- stdout is for results ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_progress_and_logs_go_to_stderr(kind, digits, capfd):
    floats, _, labels = digits
    MAKERS[kind](epochs=1, progress=True).fit(floats, labels)
    out, err = capfd.readouterr()
    assert out == ""
    assert "loss=" in err and "epoch 1/1" in err


def test_a_set_without_labels_or_their_range_is_refused_for_training():
    from tangentless.kernels._shared.training import ArrayData

    images = np.zeros((4, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="need n_classes"):
        ArrayData(images, np.array([0, 1, 0, 1]))
    unlabelled = ArrayData(images)
    assert unlabelled.fingerprint()["labels_sha256"] is None
    with pytest.raises(ValueError, match="unlabelled set cannot be trained on"):
        next(unlabelled.train_batches(seed=0, epoch=0, batch=2))
    assert [len(x) for x, _ in unlabelled.eval_batches(3)] == [3, 1]  # evaluation needs no labels


def test_scattering_no_images_is_refused():
    from tangentless.scattering.frontend import _scatter_batches

    with pytest.raises(ValueError, match="0 images"):
        _scatter_batches(np.zeros((0, 8, 8, 3), np.float32), lambda b: b, 4, False)
