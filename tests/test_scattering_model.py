"""The sparse scattering model, its training loop and the estimator: brute-force references for the
layers, gradients to every parameter, learning on real CIFAR-10, exact resume, input errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from tangentless.kernels._shared.standardize import fit_standardization
from tangentless.kernels._shared.training import decay_mask
from tangentless.scattering import frontend, model, train
from tangentless.scattering.estimators import SparseScatteringClassifier
from tangentless.scattering.sparse_coding import ISTCConfig

RNG = np.random.default_rng(0)


def _features(n=6, h=8, w=8, k=12):
    return jnp.asarray(RNG.normal(1.0, 2.0, size=(n, h, w, k)), jnp.float32)


def test_standardization_and_pixel_l2_normalization_brute_force():
    x = np.asarray(_features())
    stats = fit_standardization(x, chunk=4)
    flat = x.reshape(-1, 12).astype(np.float64)
    np.testing.assert_allclose(stats["mean"], flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["std"], flat.std(0), rtol=1e-6)
    streamed = fit_standardization(iter([x[:1], x[1:5], x[5:]]))
    np.testing.assert_allclose(streamed["std"], stats["std"], rtol=1e-6)

    config = model.ModelConfig(projection=None, sparse=False)
    params, state = model.init(jax.random.key(0), config, x.shape[1:], stats)
    out, _, _ = model.encode(params, state, jnp.asarray(x), config, train=False)
    want = np.empty_like(flat)
    for i, v in enumerate(flat):
        s = (v - flat.mean(0)) / flat.std(0)
        want[i] = s / math.sqrt(sum(c * c for c in s))
    np.testing.assert_allclose(np.asarray(out).reshape(-1, 12), want, atol=1e-5)


def test_constant_channel_gets_unit_std():
    x = np.array(_features())
    x[..., 3] = 7.25
    assert fit_standardization(x, chunk=5)["std"][3] == 1.0


def test_reflect_padded_3x3_projection_brute_force():
    x = np.asarray(_features(2, 5, 6, 4), np.float64)
    kernel = RNG.normal(size=(3, 3, 4, 7))
    got = np.asarray(model.projection_conv(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32)))

    def reflect(i, n):            # index -1 -> 1, n -> n - 2: the edge is not repeated
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    want = np.zeros((2, 5, 6, 7))
    for b in range(2):
        for i in range(5):
            for j in range(6):
                for di in range(3):
                    for dj in range(3):
                        want[b, i, j] += x[b, reflect(i + di - 1, 5), reflect(j + dj - 1, 6)] @ kernel[di, dj]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_batch_norm_and_pool_brute_force():
    x = np.asarray(_features(3, 6, 6, 5), np.float64)
    params = {"scale": jnp.arange(1.0, 6.0), "offset": jnp.full(5, 0.5)}
    stats = {"mean": jnp.zeros(5), "var": jnp.ones(5)}
    y, new = model.batch_norm(jnp.asarray(x, jnp.float32), params, stats, train=True, momentum=0.9, eps=1e-5)
    mu, var = x.reshape(-1, 5).mean(0), x.reshape(-1, 5).var(0)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-5) * np.arange(1, 6) + 0.5, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new["mean"], 0.1 * mu, rtol=1e-5)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * var, rtol=1e-5)
    y_eval, same = model.batch_norm(jnp.asarray(x, jnp.float32), params, new, train=False, momentum=0.9, eps=1e-5)
    np.testing.assert_allclose(y_eval, (x - 0.1 * mu) / np.sqrt(0.9 + 0.1 * var + 1e-5) * np.arange(1, 6) + 0.5,
                               rtol=1e-4, atol=1e-4)
    assert same is new

    pooled = np.asarray(model.avg_pool(jnp.asarray(x, jnp.float32), 3))
    want = np.array([[[x[b, i:i + 3, j:j + 3].mean((0, 1)) for j in range(4)] for i in range(4)] for b in range(3)])
    np.testing.assert_allclose(pooled, want, rtol=1e-5, atol=1e-6)
    assert model.ModelConfig().pool(14, 14) == 5      # the paper's 5x5 on 14x14 (ImageNet, J = 4)
    assert model.ModelConfig().pool(8, 8) == 3        # CIFAR, J = 2: 8 -> 6
    assert model.ModelConfig(pool_size=1).pool(8, 8) == 1


CONFIGS = [dict(tied=True, head="linear"), dict(tied=False, head="linear"),
           dict(tied=True, head="mlp"), dict(tied=False, head="mlp", kernel_size=3),
           dict(tied=True, sparse=False, head="linear")]


@pytest.mark.slow
@pytest.mark.parametrize("options", CONFIGS, ids=lambda o: "-".join(map(str, o.values())))
def test_gradients_reach_every_parameter(options):
    options = dict(options)
    istc = ISTCConfig(dictionary_size=16, n_iter=3, tied=options.pop("tied"))
    config = model.ModelConfig(istc=istc, n_classes=3, projection=8, hidden=12, **options)
    x = _features(4)
    params, state = model.init(jax.random.key(1), config, x.shape[1:], fit_standardization(np.asarray(x)))
    y = jnp.array([0, 1, 2, 1])

    def loss(p):
        logits = model.apply(p, state, x, config, train=True, rng=jax.random.key(2))[0]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y])

    grads = jax.jit(jax.grad(loss))(params)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        name = jax.tree_util.keystr(path)
        assert np.isfinite(g).all(), name
        assert np.abs(g).max() > 0, name
    names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert ("['istc']['W']" in names) == (config.sparse and not config.istc.tied)
    assert ("['istc']['log_lambda_star']" in names) == config.sparse


def test_weight_decay_mask():
    config = model.ModelConfig(istc=ISTCConfig(dictionary_size=16, n_iter=2, tied=False),
                               n_classes=3, projection=8, head="mlp", hidden=4)
    params, _ = model.init(jax.random.key(0), config, (8, 8, 5))
    mask = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]}
    decayed = {k for k, v in mask.items() if v}
    assert decayed == {"['projection']['kernel']", "['istc']['D']", "['istc']['W']",
                       "['head'][0]['w']", "['head'][1]['w']", "['head'][2]['w']"}


@pytest.fixture(scope="module")
def cifar_scattering(cifar10_subset):
    """J = 2 scattering of 600 training and 400 test images of the exact CIFAR-10 subset."""
    xtr, ytr, xte, yte = cifar10_subset
    return (frontend.scatter(xtr[:600], 2, progress=False), ytr[:600].astype(np.int64),
            frontend.scatter(xte[:400], 2, progress=False), yte[:400].astype(np.int64))


@pytest.mark.slow
def test_small_model_learns_cifar_well_above_chance(cifar_scattering):
    xtr, ytr, xte, yte = cifar_scattering
    config = model.ModelConfig(istc=ISTCConfig(dictionary_size=128, n_iter=4), n_classes=10, projection=32)
    result = train.fit(config, train.TrainConfig(epochs=6, batch_size=50, lr=0.05), ytr, features=xtr,
                       eval_set=(xte, yte))
    last = result.history[-1]
    assert last["test_top1"] > 0.3, [h["test_top1"] for h in result.history]   # chance: 0.1
    assert last["test_top5"] > last["test_top1"]
    assert len(last["sparsity"]) == 4 and 0 < last["sparsity"][-1] < 1
    assert 0 < last["rec_error"] < 1 and 0 < last["coherence"] < 1
    lam0 = float(jnp.exp(result.state["istc"]["log_lambda0"]))
    lam = float(jnp.exp(result.params["istc"]["log_lambda_star"]))
    assert 0.05 * (1 - 1e-6) <= lam <= 0.99 * lam0 * (1 + 1e-6)
    again = train.evaluate(result.params, result.state, config, yte, features=xte, batch_size=64)
    assert again["top1"] == pytest.approx(last["test_top1"])


def _patches(images):
    """Stand-in feature function: 4x4 space-to-depth of float images (B, 32, 32, 3) -> (B, 8, 8, 48)."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // 4, 4, w // 4, 4, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 4, w // 4, 16 * c)


def test_augment_batch_crops_and_flips():
    images = RNG.integers(0, 255, size=(20, 6, 7, 2), dtype=np.uint8)
    out = train.augment_batch(images, np.random.default_rng(0), 2)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    flips = 0
    for src, dst in zip(padded, out):
        windows = [src[i:i + 6, j:j + 7] for i in range(5) for j in range(5)]
        plain = any(np.array_equal(dst, win) for win in windows)
        flipped = any(np.array_equal(dst, win[:, ::-1]) for win in windows)
        assert plain or flipped
        flips += flipped and not plain
    assert 0 < flips < 20


def _run(tmp, epochs, lr=0.05, images=None, labels=None):
    config = model.ModelConfig(istc=ISTCConfig(dictionary_size=16, n_iter=3, tied=False),
                               n_classes=10, projection=8, head="mlp", hidden=16)
    tc = train.TrainConfig(epochs=epochs, batch_size=40, lr=lr, step_epochs=2, augment=True, seed=3)
    return train.fit(config, tc, labels, images=images, feature_fn=jax.jit(_patches), checkpoint_dir=tmp)


@pytest.mark.slow
def test_resume_is_bit_for_bit_and_checkpoints_are_checked(tmp_path, cifar10_subset):
    images, labels = cifar10_subset[0][:120], cifar10_subset[1][:120].astype(np.int64)
    interrupted = tmp_path / "interrupted"
    first = _run(interrupted, 2, images=images, labels=labels)
    assert len(first.history) == 2 and not list(interrupted.glob("*.tmp"))
    resumed = _run(interrupted, 4, images=images, labels=labels)
    straight = _run(tmp_path / "straight", 4, images=images, labels=labels)
    for a, b in zip(jax.tree_util.tree_leaves((resumed.params, resumed.state)),
                    jax.tree_util.tree_leaves((straight.params, straight.state))):
        np.testing.assert_array_equal(a, b)
    timing = {"seconds", "images_per_s"}
    assert [{k: v for k, v in h.items() if k not in timing} for h in resumed.history] == \
           [{k: v for k, v in h.items() if k not in timing} for h in straight.history]
    assert [h["lr"] for h in resumed.history] == pytest.approx([0.05, 0.05, 0.005, 0.005])

    with pytest.raises(train.CheckpointError, match="different configuration.*train.lr"):
        _run(interrupted, 5, lr=0.1, images=images, labels=labels)
    with pytest.raises(train.CheckpointError, match="labels_sha256"):
        _run(interrupted, 5, images=images, labels=labels[::-1].copy())
    ckpt = interrupted / train.CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(train.CheckpointError, match="unreadable"):
        _run(interrupted, 5, images=images, labels=labels)


def test_fit_input_errors():
    config = model.ModelConfig(istc=ISTCConfig(dictionary_size=8, n_iter=2), n_classes=3, projection=4)
    x = np.array(_features(6))
    with pytest.raises(ValueError, match="labels must have shape"):
        train.fit(config, train.TrainConfig(), np.zeros(5, int), features=x)
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        train.fit(config, train.TrainConfig(), np.full(6, 3), features=x)
    with pytest.raises(ValueError, match="augment=True needs images"):
        train.fit(config, train.TrainConfig(augment=True), np.zeros(6, int), features=x)
    with pytest.raises(ValueError, match="either features or images"):
        train.fit(config, train.TrainConfig(), np.zeros(6, int))
    x[1, 2, 3, 4] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        train.fit(config, train.TrainConfig(), np.zeros(6, int), features=x)
    with pytest.raises(ValueError, match="head must be one of"):
        model.ModelConfig(head="cnn")
    with pytest.raises(ValueError, match="kernel_size"):
        model.ModelConfig(kernel_size=2)


@pytest.mark.slow
def test_estimator_fit_predict_score(cifar10_subset):
    xtr, ytr, xte, yte = cifar10_subset
    names = np.array(["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    clf = SparseScatteringClassifier(projection=32, dictionary_size=64, n_iter=3, epochs=3, batch_size=50,
                                     lr=0.05)
    clf.fit(xtr[:250], names[ytr[:250]])
    assert list(clf.classes_) == sorted(names)
    assert clf.score(xte[:200], names[yte[:200]]) > 0.2        # chance: 0.1
    proba = clf.predict_proba(xte[:5])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert set(clf.predict(xte[:5])) <= set(names)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(xte[:5]))
    assert len(clf.history_) == 3
    with pytest.raises(ValueError, match="fitted on"):
        clf.predict(xte[:3, :16, :16])


def test_estimator_input_errors_and_params():
    clf = SparseScatteringClassifier(projection=8, dictionary_size=8, n_iter=2, epochs=1)
    images = RNG.random((6, 8, 8, 3), dtype=np.float32)
    labels = np.array([0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="4-D"):
        clf.fit(images[0], labels)
    bad = images.copy()
    bad[2, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(bad, labels)
    with pytest.raises(ValueError, match="6 images"):
        clf.fit(images, labels[:5])
    with pytest.raises(ValueError, match="one class"):
        clf.fit(images, np.zeros(6, int))
    with pytest.raises(NotFittedError):
        clf.predict(images)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert copy.set_params(head="mlp", epochs=3).get_params()["head"] == "mlp"
    assert clf.get_params()["head"] == "linear"
