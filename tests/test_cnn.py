"""CNN baselines (tangentless.benchmarks.cnn): networks, optimizer, augmentation, resume, classifier."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split

from tangentless.benchmarks import cnn
from tangentless.benchmarks.datasets import load_digits_images
from tangentless.kernels import myrtle
from tangentless.kernels._shared.training import ArrayData, CheckpointError

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def digits():
    """Standardized 8x8 digits split 70/30: (x_train, y_train, x_test, y_test), float32."""
    images, labels = load_digits_images()
    xtr, xte, ytr, yte = train_test_split(images, labels, test_size=0.3, random_state=0, stratify=labels)
    return xtr, ytr, xte, yte


def _tiny_resnet():
    return cnn.build_network("resnet9", 1 / 16, 10)   # channels 4, 8, 16, 32; cached: one compilation


# --- networks ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("arch, shape", [
    ("resnet9", (8, 8, 1)), ("resnet9", (32, 32, 3)), ("resnet9", (28, 28, 1)),
    ("myrtle5", (32, 32, 3)), ("myrtle7", (8, 8, 1)), ("myrtle10", (28, 28, 3))])
def test_forward_shapes(arch, shape):
    init, apply = cnn.build_network(arch, 0.25 if arch == "resnet9" else 4, 7)
    params, state = init(jax.random.key(0), shape)
    x = jax.ShapeDtypeStruct((5,) + shape, jnp.float32)
    for train in (True, False):
        out, new_state = jax.eval_shape(lambda p, s, x: apply(p, s, x, train), params, state, x)
        assert out.shape == (5, 7)
        assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)


def test_resnet9_channels_and_batch_norm_state():
    init, apply = cnn.resnet9(0.25, 10)
    params, state = init(jax.random.key(0), (8, 8, 3))
    widths = [params[b]["conv"]["kernel"].shape[-1] for b in ("prep", "layer1", "layer2", "layer3")]
    assert widths == [16, 32, 64, 128] and params["linear"].shape == (128, 10)
    assert set(params["layer1"]) == {"conv", "res1", "res2"} and set(params["layer2"]) == {"conv"}
    x = jnp.asarray(RNG.normal(size=(6, 8, 8, 3)), jnp.float32)
    forward = jax.jit(apply, static_argnums=3)
    out, trained = forward(params, state, x, True)
    out_eval, same = forward(params, state, x, False)
    assert np.isfinite(out).all() and np.isfinite(out_eval).all()
    assert not np.allclose(trained["prep"]["conv"]["mean"], 0)          # running stats move in training
    jax.tree_util.tree_map(np.testing.assert_array_equal, same, state)   # and not in evaluation


@pytest.mark.parametrize("arch, shape, match", [("myrtle5", (6, 6, 1), "divisible by 2"),
                                                ("resnet9", (4, 8, 1), "at least 8x8")])
def test_unsupported_image_sizes(arch, shape, match):
    init, _ = cnn.build_network(arch, 0.25 if arch == "resnet9" else 4, 10)
    with pytest.raises(ValueError, match=match):
        init(jax.random.key(0), shape)


@pytest.mark.slow
def test_myrtle_arch_is_the_spec_network():
    """The classifier's Myrtle network is spec.network of the kernel spec, parameters and function."""
    init, apply = cnn.build_network("myrtle7", 8, 10, "ntk")
    net_init, net_apply = myrtle(7, head="linear").network(8, 10)
    params, state = init(jax.random.key(3), (8, 8, 2))
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, net_init(jax.random.key(3), 2))
    x = jnp.asarray(RNG.normal(size=(4, 8, 8, 2)), jnp.float32)
    np.testing.assert_array_equal(apply(params, state, x, True)[0], net_apply(params, x))


@pytest.mark.slow
def test_standard_parameterization_is_he_init_and_the_ntk_function():
    """Standard: conv weights N(0, 2 / fan_in), readout N(0, 1 / width), used as they are; with the
    NTK network's weights rescaled to those, the two compute the same function of x / sqrt(C)."""
    spec, width, c = myrtle(5, head="linear"), 32, 2
    init, apply = cnn.kernel_network(spec, width, 10, "standard")
    params, _ = init(jax.random.key(0), (8, 8, c))
    convs = [w for w in params["body"] if len(w)]
    assert len(convs) == 4 and all(w.shape[:2] == (3, 3) for w in convs)
    for w in convs:
        fan_in = 9 * w.shape[2]
        assert np.std(np.asarray(w)) == pytest.approx(np.sqrt(2 / fan_in), rel=0.1 if fan_in < 100 else 0.03)
    assert np.std(np.asarray(params["readout"])) == pytest.approx(1 / np.sqrt(width), rel=0.15)
    ntk_init, ntk_apply = cnn.kernel_network(spec, width, 10, "ntk")
    ntk_params, _ = ntk_init(jax.random.key(1), (8, 8, c))
    scales = iter(np.sqrt(2 / np.array([9 * c] + [9 * width] * 3)))   # NTK conv: W / sqrt(fan_in), then sqrt(2) relu
    as_standard = {"body": tuple(w if isinstance(w, tuple) else w * next(scales) for w in ntk_params["body"]),
                   "readout": ntk_params["readout"] / np.sqrt(width)}
    x = jnp.asarray(RNG.normal(size=(3, 8, 8, c)), jnp.float32)
    np.testing.assert_allclose(apply(as_standard, {}, x, False)[0],
                               ntk_apply(ntk_params, {}, x / np.sqrt(c), False)[0], rtol=2e-4, atol=1e-5)


def test_parameterization_errors():
    with pytest.raises(ValueError, match="parameterization must be one of"):
        cnn.build_network("myrtle5", 8, 10, "mup")
    with pytest.raises(ValueError, match="resnet9 has only the standard"):
        cnn.build_network("resnet9", 1 / 16, 10, "ntk")
    with pytest.raises(ValueError, match="supports Conv, Relu"):
        cnn.kernel_network(myrtle(5, "gaussian", head="linear"), 8, 10, "standard")
    with pytest.raises(ValueError, match="parameterization must be one of"):
        cnn.CNNClassifier("myrtle5", width=4, epochs=1, parameterization="NTK").fit(
            RNG.random((6, 8, 8, 1)).astype(np.float32), np.array([0, 1] * 3))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet9", "myrtle5"])
def test_gradients_reach_every_parameter(arch, digits):
    init, apply = cnn.build_network(arch, 1 / 16 if arch == "resnet9" else 8, 10)
    x, y = jnp.asarray(digits[0][:32]), jnp.asarray(digits[1][:32])
    params, state = init(jax.random.key(0), x.shape[1:])
    loss = "xent" if arch == "resnet9" else "mse"
    grads = jax.jit(jax.grad(lambda p: cnn.loss_fn(apply(p, state, x, True)[0], y, loss)))(params)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        assert np.isfinite(g).all() and np.abs(g).max() > 0, jax.tree_util.keystr(path)


# --- losses, schedule, optimizer -------------------------------------------------------------------

def test_losses_against_numpy():
    out = RNG.normal(size=(5, 4)).astype(np.float32)
    y = np.array([0, 3, 1, 1, 2])
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(cnn.loss_fn(out, y, "mse"), ((out - onehot) ** 2).sum(1).mean(), rtol=1e-6)
    target = onehot * 0.8 + 0.2 / 4
    logp = out - np.log(np.exp(out).sum(1, keepdims=True))
    np.testing.assert_allclose(cnn.loss_fn(out, y, "xent", 0.2), -(target * logp).sum(1).mean(), rtol=1e-6)


def test_one_cycle_schedule():
    lr = np.array([cnn.one_cycle(0.4, 10, 0.2)(t) for t in range(10)])
    np.testing.assert_allclose(lr, 0.4 * np.minimum((np.arange(10) + 1) / 2, (10 - np.arange(10)) / 8))
    assert lr.max() == pytest.approx(0.4) and lr.min() > 0
    assert cnn.one_cycle(1.0, 4, 0.0)(0) == 1.0
    assert cnn.one_cycle(1.0, 1, 0.9)(0) == 1.0   # warmup capped: one step, at the peak


def test_optimizer_is_pytorch_nesterov_sgd_with_weight_decay_on_weights():
    opt = cnn.make_optimizer(cnn.CNNTrainConfig(momentum=0.9, weight_decay=0.01))
    params = {"w": jnp.asarray(RNG.normal(size=(3, 2)), jnp.float32), "b": jnp.ones(2)}
    state = opt.init(params)
    ref = {k: np.asarray(v, np.float64) for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in ref.items()}
    for _ in range(3):
        grads = {k: RNG.normal(size=v.shape) for k, v in ref.items()}
        updates, state = opt.update({k: jnp.asarray(g, jnp.float32) for k, g in grads.items()}, state, params)
        params = optax.apply_updates(params, jax.tree_util.tree_map(lambda u: -0.1 * u, updates))
        for k in ref:   # torch.optim.SGD(nesterov=True), weight decay on the matrix only
            g = grads[k] + (0.01 * ref[k] if k == "w" else 0)
            buf[k] = 0.9 * buf[k] + g
            ref[k] = ref[k] - 0.1 * (g + 0.9 * buf[k])
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [({"epochs": 3, "schedule_epochs": 2}, "schedule_epochs"),
                                           ({"loss": "hinge"}, "loss must be"),
                                           ({"loss": "mse", "label_smoothing": 0.1}, "label_smoothing"),
                                           ({"batch_size": 0}, "batch_size"), ({"cutout": -1}, "cutout")])
def test_bad_train_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cnn.CNNTrainConfig(**kwargs)


# --- augmentation ----------------------------------------------------------------------------------

def _cutout_reference(images, rng, size):
    """Loop version: top then left corners drawn for the whole batch, square zeroed per image."""
    b, h, w, _ = images.shape
    top, left = rng.integers(0, max(h - size, 0) + 1, b), rng.integers(0, max(w - size, 0) + 1, b)
    out = images.copy()
    for i in range(b):
        out[i, top[i]:top[i] + size, left[i]:left[i] + size] = 0
    return out


def test_cutout_against_numpy():
    images = RNG.integers(1, 255, size=(9, 7, 6, 2), dtype=np.uint8)
    out = cnn.cutout(images, np.random.default_rng(5), 3)
    np.testing.assert_array_equal(out, _cutout_reference(images, np.random.default_rng(5), 3))
    assert out.dtype == images.dtype
    assert ((out == 0).sum(axis=(1, 2, 3)) == 3 * 3 * 2).all()     # whole square inside every image
    assert (cnn.cutout(images, np.random.default_rng(0), 8) == 0).all()


def test_training_stream_against_numpy():
    """Epoch e's batches: permutation [seed, e, 0], crops + flips [seed, e, 1], cutout [seed, e, 2]."""
    images = RNG.normal(size=(10, 6, 6, 2)).astype(np.float32)
    labels = np.arange(10) % 3
    config = cnn.CNNTrainConfig(seed=4, crop_padding=2, cutout=3)
    batches = list(cnn.train_batches(ArrayData(images, labels, 3), config, 1, 4))
    perm = np.random.default_rng([4, 1, 0]).permutation(10)
    crop_rng, cut_rng = np.random.default_rng([4, 1, 1]), np.random.default_rng([4, 1, 2])
    assert len(batches) == 2
    for i, (x, y) in enumerate(batches):
        idx = perm[4 * i:4 * i + 4]
        padded = np.pad(images[idx], ((0, 0), (2, 2), (2, 2), (0, 0)))
        dy, dx, flip = crop_rng.integers(0, 5, 4), crop_rng.integers(0, 5, 4), crop_rng.random(4) < 0.5
        crops = np.stack([p[a:a + 6, b:b + 6][:, ::-1 if f else 1] for p, a, b, f in zip(padded, dy, dx, flip)])
        np.testing.assert_array_equal(x, _cutout_reference(crops, cut_rng, 3))
        np.testing.assert_array_equal(y, labels[idx])
    plain = cnn.CNNTrainConfig(seed=4, augment=False)
    x, _ = next(cnn.train_batches(ArrayData(images, labels, 3), plain, 1, 4))
    np.testing.assert_array_equal(x, images[perm[:4]])


# --- training and resume ---------------------------------------------------------------------------

def _fit(digits, tmp, **kwargs):
    init, apply = _tiny_resnet()
    options = dict(epochs=3, batch_size=32, crop_padding=1, cutout=2, seed=7)
    config = cnn.CNNTrainConfig(**{**options, **kwargs})
    return cnn.train_cnn(init, apply, digits[0][:128], digits[1][:128], config, checkpoint_dir=tmp,
                         model_fingerprint={"arch": "resnet9", "width": 1 / 16})


@pytest.mark.slow
def test_resume_is_bit_identical_and_refuses_other_configs(digits, tmp_path):
    straight = _fit(digits, None)
    first = _fit(digits, tmp_path, epochs=2, schedule_epochs=3)
    assert [h["epoch"] for h in first.history] == [1, 2]
    resumed = _fit(digits, tmp_path)
    for a, b in ((straight.params, resumed.params), (straight.state, resumed.state)):
        jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert resumed.budget == {"epochs": 3, "schedule_epochs": 3, "batch_size": 32, "train_images": 128,
                              "steps_per_epoch": 4}
    assert set(resumed.history[-1]) == {"epoch", "lr", "loss", "train_top1", "seconds", "images_per_s"}
    with pytest.raises(CheckpointError, match="train.lr"):
        _fit(digits, tmp_path, lr=0.3)
    with pytest.raises(CheckpointError, match="schedule_epochs"):   # the 3-epoch schedule, not a 4-epoch one
        _fit(digits, tmp_path, epochs=4)
    with pytest.raises(CheckpointError, match="more than"):
        _fit(digits, tmp_path, epochs=2, schedule_epochs=3)


def test_train_cnn_input_errors(digits):
    init, apply = _tiny_resnet()
    config = cnn.CNNTrainConfig(epochs=1)
    with pytest.raises(ValueError, match="preprocessed floats"):
        cnn.train_cnn(init, apply, (digits[0][:8] * 16).astype(np.uint8), digits[1][:8], config)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        cnn.train_cnn(init, apply, digits[0][:8], np.arange(8) + 5, config)


# --- the classifier --------------------------------------------------------------------------------

@pytest.mark.slow
def test_resnet9_learns_digits(digits):
    xtr, ytr, xte, yte = digits
    clf = cnn.CNNClassifier("resnet9", width=0.125, epochs=4, batch_size=64, augment=False).fit(xtr, ytr)
    assert clf.score(xte, yte) > 0.9
    assert clf.decision_function(xte[:3]).shape == (3, 10)
    assert clf.budget_["epochs"] == 4 and len(clf.history_) == 4


@pytest.mark.slow
def test_myrtle_learns_digits_above_chance(digits):
    xtr, ytr, xte, yte = digits
    clf = cnn.CNNClassifier("myrtle5", width=16, epochs=5, batch_size=64, augment=False).fit(xtr, ytr)
    assert clf.history_[-1]["loss"] < clf.history_[0]["loss"]
    assert clf.score(xte, yte) > 0.2


@pytest.mark.slow
@pytest.mark.parametrize("settings, floor", [({"parameterization": "standard"}, 0.95),
                                             ({"parameterization": "ntk", "lr": 4.0, "weight_decay": 0.0}, 0.9)])
def test_myrtle_parameterizations_learn_digits(digits, settings, floor):
    """Both parameterizations train (the family's batch 32; NTK without weight decay, which in NTK
    units shrinks every hidden conv: docs/baselines.md)."""
    xtr, ytr, xte, yte = digits
    clf = cnn.CNNClassifier("myrtle5", width=16, epochs=5, augment=False, **settings).fit(xtr, ytr)
    assert clf.score(xte, yte) > floor


@pytest.mark.slow
def test_resnet9_learns_cifar_subset(cifar10_subset):
    xtr, ytr, xte, yte = cifar10_subset
    clf = cnn.CNNClassifier("resnet9", width=0.125, epochs=4, batch_size=64, augment=False)
    clf.fit(xtr[:500], ytr[:500])
    assert clf.score(xte[:500], yte[:500]) > 0.17   # chance: 0.10 +- 0.013


@pytest.mark.slow
def test_uint8_preprocessing_and_string_labels():
    images = RNG.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)
    labels = np.array(["cat", "dog"] * 6)
    clf = cnn.CNNClassifier("resnet9", width=1 / 16, epochs=1, batch_size=4, augment=False).fit(images, labels)
    scaled = images / 255.0
    np.testing.assert_allclose(clf.standardization_["mean"], scaled.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(clf.standardization_["std"], scaled.std(axis=(0, 1, 2)), rtol=1e-5)
    assert set(clf.predict(images)) <= {"cat", "dog"}
    assert clf.decision_function(images).shape == (12, 2)
    with pytest.raises(ValueError, match="fitted on"):
        clf.predict(images[:, :4])


@pytest.mark.parametrize("make, match", [
    (lambda x, y: (x[0], y), "4-D"),
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y), "NaN"),
    (lambda x, y: (x, y[:-1]), "labels for the"),
    (lambda x, y: (x, np.zeros_like(y)), "one class"),
])
def test_bad_training_input(make, match):
    x = RNG.random((6, 8, 8, 1)).astype(np.float32)
    y = np.array([0, 1] * 3)
    with pytest.raises(ValueError, match=match):
        cnn.CNNClassifier(epochs=1).fit(*make(x, y))


@pytest.mark.parametrize("params, match", [
    ({"arch": "vgg"}, "arch must be"), ({"arch": "myrtle5", "width": 8.5}, "integer"),
    ({"width": -1.0}, "width must be > 0"), ({"loss": "hinge"}, "loss must be")])
def test_bad_parameters(params, match):
    x, y = RNG.random((6, 8, 8, 1)).astype(np.float32), np.array([0, 1] * 3)
    with pytest.raises(ValueError, match=match):
        cnn.CNNClassifier(epochs=1, **params).fit(x, y)


def test_clone_and_not_fitted():
    clf = cnn.CNNClassifier("myrtle10", width=32, epochs=3, lr=0.5, random_state=4)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin is not clf
    assert twin.get_params()["arch"] == "myrtle10" and twin.get_params()["loss"] is None
    with pytest.raises(NotFittedError):
        twin.predict(np.zeros((1, 8, 8, 1)))


def test_paper_recipe_is_zca_then_the_standard_myrtle_network(digits):
    xtr, ytr, xte, _ = digits
    pipeline = cnn.paper_recipe("myrtle5", width=4, epochs=1)
    zca, clf = (step for _, step in pipeline.steps)
    assert zca.bias == 1e-4
    assert (clf.arch, clf.parameterization, clf.loss, clf.lr, clf.weight_decay, clf.augment) == \
        ("myrtle5", "standard", "mse", 0.1, 5e-4, True)
    assert pipeline.fit(xtr[:64], ytr[:64]).predict(xte[:5]).shape == (5,)
