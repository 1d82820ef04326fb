"""The scattering front end against kymatio's NumPy frontend, the phase first order against a
NumPy brute force, gradients, the feature cache and input checks.

kymatio is imported the way the library does (2-D modules only): ``kymatio.numpy`` fails at import
with scipy >= 1.17.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kymatio.scattering2d.filter_bank import filter_bank
from kymatio.scattering2d.frontend.numpy_frontend import ScatteringNumPy2D
from kymatio.scattering2d.utils import compute_padding
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline

from tangentless.scattering import ScatteringFeatures, num_channels, scatter, scattering_fn
from tangentless.scattering import cache, frontend, phase

L = 8


def kymatio_reference(x, J, max_order=2):
    """kymatio's NumPy frontend on NHWC float images: (B, C, K, H/2^J, W/2^J)."""
    S = ScatteringNumPy2D(J, x.shape[1:3], L=L, max_order=max_order)
    return S(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))


def assert_layout_equal(out, ref):
    """out (B, h, w, C*K) NHWC against kymatio's ref (B, C, K, h, w), channel by channel."""
    b, c, k, h, w = ref.shape
    assert out.shape == (b, h, w, c * k) and out.dtype == np.float32
    tol = 1e-5 * float(np.abs(ref).max())
    for colour in range(c):
        for index in range(k):
            np.testing.assert_allclose(out[:, :, :, colour * k + index], ref[:, colour, index],
                                       rtol=1e-4, atol=tol)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def cifar(cifar10_subset):
    """Four exact CIFAR-10 training images, uint8 (4, 32, 32, 3)."""
    return cifar10_subset[0][:4]


# ----------------------------------------------------------------------------------------------
# Against kymatio
# ----------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("max_order", [1, 2])
@pytest.mark.parametrize("J", [1, 2, 3])
def test_matches_kymatio_random(rng, J, max_order):
    """Non-square images (H != W) and two colours, so a swapped axis cannot pass."""
    x = rng.normal(size=(2, 24, 40, 2)).astype(np.float32)
    out = np.asarray(scattering_fn((24, 40), J, max_order=max_order)(x))
    assert out.shape == (2, 24 >> J, 40 >> J, 2 * num_channels(J, max_order=max_order))
    assert_layout_equal(out, kymatio_reference(x, J, max_order))


@pytest.mark.slow
@pytest.mark.parametrize("max_order", [1, 2])
@pytest.mark.parametrize("J", [1, 2, 3])
def test_matches_kymatio_cifar(cifar, J, max_order):
    """uint8 images are scaled to [0, 1] by scatter."""
    out = scatter(cifar, J, max_order=max_order, progress=False)
    assert_layout_equal(out, kymatio_reference(cifar.astype(np.float32) / 255, J, max_order))


def test_colour_layout_by_homogeneity(rng):
    """S(a x) = a S(x) for a > 0: colour c = (c + 1) * base gives channels c*K .. c*K+K-1 equal to
    (c + 1) times those of colour 0."""
    base = rng.random((2, 24, 40, 1)).astype(np.float32)
    x = np.concatenate([base, 2 * base], axis=-1)
    for is_phase in (False, True):
        out = np.asarray(scattering_fn((24, 40), 2, phase=is_phase)(x))
        k = num_channels(2, phase=is_phase)
        np.testing.assert_allclose(out[..., k:], 2 * out[..., :k], rtol=1e-5, atol=1e-6)


def test_num_channels_reference_numbers():
    assert num_channels(4, 8, phase=True) == 513
    assert num_channels(4, 8) == 417
    assert num_channels(2) == 81 and num_channels(3) == 217
    assert num_channels(3, max_order=1) == 25 and num_channels(3, max_order=1, phase=True) == 97


@pytest.mark.slow
@pytest.mark.parametrize("J, max_order, is_phase", [(1, 2, True), (2, 1, True), (3, 2, True),
                                                    (3, 2, False), (2, 2, False)])
def test_num_channels_matches_shapes(rng, J, max_order, is_phase):
    x = rng.random((2, 24, 40, 2)).astype(np.float32)
    out = scattering_fn((24, 40), J, max_order=max_order, phase=is_phase)(x)
    k = num_channels(J, max_order=max_order, phase=is_phase)
    assert out.shape == (2, 24 >> J, 40 >> J, 2 * k)


# ----------------------------------------------------------------------------------------------
# Phase first order
# ----------------------------------------------------------------------------------------------

def brute_force_phase(image, J):
    """Order-1 phase coefficients of one (H, W) image, float64: (J, L, 4, H/2^J, W/2^J).

    kymatio's reflect padding and filters, circular convolutions by NumPy FFTs at full resolution,
    subsampling in space (x[::k, ::k]) instead of periodization in the Fourier domain.
    """
    height, width = image.shape
    mp, np_ = compute_padding(height, width, J)
    widths = (((mp - height) // 2, (mp - height + 1) // 2), ((np_ - width) // 2, (np_ - width + 1) // 2))
    padded = np.pad(image.astype(np.float64), widths, "reflect")
    bank = filter_bank(mp, np_, J, L)
    out = np.zeros((J, L, 4, height >> J, width >> J))
    for psi in bank["psi"]:
        j, theta = psi["j"], psi["theta"]
        w = np.fft.ifft2(np.fft.fft2(padded) * psi["levels"][0])[::2 ** j, ::2 ** j]
        for p, part in enumerate((w.real, -w.real, w.imag, -w.imag)):
            low = np.fft.ifft2(np.fft.fft2(np.maximum(part, 0)) * bank["phi"]["levels"][j]).real
            out[j, theta, p] = low[::2 ** (J - j), ::2 ** (J - j)][1:-1, 1:-1]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("J", [1, 2, 3])
def test_phase_order1_matches_brute_force(rng, cifar, J):
    """Channel 1 + 4 (j L + theta) + p of colour c is phase p of x_c * psi_{j,theta}, low-passed."""
    x = np.concatenate([cifar[:1, :, :24, :2].astype(np.float32) / 255,
                        rng.normal(size=(1, 32, 24, 2)).astype(np.float32)])
    out = np.asarray(scattering_fn((32, 24), J, phase=True)(x))
    k = num_channels(J, phase=True)
    for b in range(2):
        for c in range(2):
            ref = brute_force_phase(x[b, :, :, c], J)                     # (J, L, 4, h, w)
            got = out[b, :, :, c * k + 1:c * k + 1 + 4 * J * L]           # (h, w, 4 J L)
            np.testing.assert_allclose(got, ref.reshape(-1, *ref.shape[-2:]).transpose(1, 2, 0),
                                       rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("J", [1, 2, 3])
def test_phase_orders_0_and_2_equal_modulus(rng, J):
    x = rng.normal(size=(2, 24, 40, 2)).astype(np.float32)
    mod = np.asarray(scattering_fn((24, 40), J)(x)).reshape(2, 24 >> J, 40 >> J, 2, -1)
    pha = np.asarray(scattering_fn((24, 40), J, phase=True)(x)).reshape(2, 24 >> J, 40 >> J, 2, -1)
    np.testing.assert_allclose(pha[..., 0], mod[..., 0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pha[..., 1 + 4 * J * L:], mod[..., 1 + J * L:], rtol=1e-6, atol=1e-7)
    assert pha.shape[-1] - 4 * J * L == mod.shape[-1] - J * L


def test_phase_relu_identities(rng):
    w = jnp.asarray(rng.normal(size=(3, 5, 7)) + 1j * rng.normal(size=(3, 5, 7)), jnp.complex64)
    r = np.asarray(phase.phase_relu(w))                                   # (3, 4, 5, 7)
    w = np.asarray(w)[:, None]
    assert r.shape == (3, 4, 5, 7) and (r >= 0).all()
    np.testing.assert_array_equal(r[:, 0:1] - r[:, 1:2], w.real)
    np.testing.assert_array_equal(r[:, 2:3] - r[:, 3:4], w.imag)
    np.testing.assert_array_equal(r[:, 0:1] + r[:, 1:2], np.abs(w.real))
    np.testing.assert_array_equal(r[:, 2:3] + r[:, 3:4], np.abs(w.imag))
    assert (r[:, 0] * r[:, 1] == 0).all() and (r[:, 2] * r[:, 3] == 0).all()


@pytest.mark.slow
def test_phase_lowpass_is_linear_in_the_phases(rng):
    """ReLU(Re) +- ReLU(-Re) low-passed = |Re| and Re low-passed (likewise Im); the packed
    two-FFT low-pass equals four real ones."""
    J, j = 2, 1
    filters = frontend.kymatio_filters(16, 16, J)
    x = jnp.asarray(rng.normal(size=(2, 16, 16)), jnp.float32)
    x_hat = jnp.fft.fft2(jnp.pad(x, ((0, 0),) + filters.pad, mode="reflect"))
    w = phase.wavelet_transform(x_hat, filters.psi[j][0], 2 ** j)         # (2, L, m, n)
    s = np.asarray(phase.lowpass_phases(phase.phase_relu(w), filters.phi[j], 2 ** (J - j)))

    def low(u):
        return np.asarray(phase.lowpass(u, filters.phi[j], 2 ** (J - j)))

    tol = dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s, low(phase.phase_relu(w)), **tol)
    np.testing.assert_allclose(s[:, :, 0] + s[:, :, 1], low(jnp.abs(w.real)), **tol)
    np.testing.assert_allclose(s[:, :, 0] - s[:, :, 1], low(w.real), **tol)
    np.testing.assert_allclose(s[:, :, 2] + s[:, :, 3], low(jnp.abs(w.imag)), **tol)
    np.testing.assert_allclose(s[:, :, 2] - s[:, :, 3], low(w.imag), **tol)


# ----------------------------------------------------------------------------------------------
# jit and grad
# ----------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("is_phase", [False, True])
def test_grad_through_scattering_fn(rng, is_phase):
    """Finite gradient, equal to a central finite difference along itself (the steepest direction,
    where float32 cancellation in the loss is smallest relative to the slope)."""
    fn = scattering_fn((16, 16), 2, L=4, phase=is_phase)
    x = jnp.asarray(rng.random((2, 16, 16, 2)), jnp.float32)

    def loss(images):
        return jnp.sum(fn(images) ** 2)

    g = jax.jit(jax.grad(loss))(x)
    assert g.shape == x.shape and bool(jnp.isfinite(g).all())
    slope = float(jnp.linalg.norm(g))
    direction, eps = g / slope, 1e-2
    finite_difference = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(float(finite_difference), slope, rtol=1e-2)


# ----------------------------------------------------------------------------------------------
# scatter and its cache
# ----------------------------------------------------------------------------------------------

def test_scatter_batches_and_uint8_scaling(cifar):
    whole = scatter(cifar[:3], 2, batch_size=8, progress=False)
    np.testing.assert_allclose(scatter(cifar[:3], 2, batch_size=2, progress=False), whole,
                               rtol=1e-6, atol=1e-7)
    scaled = scatter(cifar[:3].astype(np.float32) / 255, 2, batch_size=8, progress=False)
    np.testing.assert_allclose(whole, scaled, rtol=1e-6, atol=1e-7)


@pytest.fixture
def counted(monkeypatch):
    """Counts the computations behind scatter (cache misses)."""
    calls = []
    run = frontend._scatter_batches

    def counting(*args, **kwargs):
        calls.append(1)
        return run(*args, **kwargs)

    monkeypatch.setattr(frontend, "_scatter_batches", counting)
    return calls


def _scatter(x, cache_dir, **options):
    return scatter(x, options.pop("J", 1), progress=False, cache_dir=cache_dir, **options)


def test_cache_hits_and_misses(rng, tmp_path, counted):
    x = rng.random((3, 8, 8, 1)).astype(np.float32)
    first = _scatter(x, tmp_path)
    assert len(counted) == 1 and len(list(tmp_path.glob("*.npz"))) == 1
    np.testing.assert_array_equal(_scatter(x, tmp_path), first)
    assert len(counted) == 1                                      # hit
    _scatter(x, tmp_path, phase=True)
    _scatter(x, tmp_path, J=2)
    _scatter(x, tmp_path, max_order=1)
    changed = x.copy()
    changed[1, 2, 3, 0] += 1e-3
    _scatter(changed, tmp_path)
    _scatter(x.astype(np.float64), tmp_path)                      # same values, other dtype
    assert len(counted) == 6 and len(list(tmp_path.glob("*.npz"))) == 6
    np.testing.assert_array_equal(_scatter(x, tmp_path), first)
    assert len(counted) == 6


def test_cache_truncated_file_is_recomputed(rng, tmp_path, counted):
    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    first = _scatter(x, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.warns(RuntimeWarning, match="corrupt: cannot read it"):
        again = _scatter(x, tmp_path)
    np.testing.assert_array_equal(again, first)
    assert len(counted) == 2
    np.testing.assert_array_equal(_scatter(x, tmp_path), first)  # rewritten intact
    assert len(counted) == 2


def test_cache_checksum_mismatch_is_recomputed(rng, tmp_path, counted):
    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    first = _scatter(x, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    with np.load(path) as f:
        stored = dict(f)
    stored["array"] = stored["array"] + 1                         # a readable file, wrong data
    np.savez(path, **stored)
    with pytest.warns(RuntimeWarning, match="does not match its checksum"):
        again = _scatter(x, tmp_path)
    np.testing.assert_array_equal(again, first)
    assert len(counted) == 2


def test_cache_write_is_atomic(rng, tmp_path, monkeypatch, counted):
    """A write interrupted half-way leaves neither an entry nor a temporary file."""
    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    savez = np.savez

    def interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _scatter(x, tmp_path)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(np, "savez", savez)
    first = _scatter(x, tmp_path)
    assert [p.suffix for p in tmp_path.iterdir()] == [".npz"]
    np.testing.assert_array_equal(_scatter(x, tmp_path), first)
    assert len(counted) == 2


def test_cache_unwritable_dir_warns_and_returns(rng, tmp_path):
    x = rng.random((2, 8, 8, 1)).astype(np.float32)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="could not write"):
        out = _scatter(x, blocker)
    np.testing.assert_array_equal(out, _scatter(x, None))


def test_cache_path_depends_on_config_and_bytes():
    a = np.zeros((2, 3), np.float32)
    b = a.copy()
    b[0, 0] = 1
    config = {"J": 1}
    assert cache.cache_path("d", config, a) == cache.cache_path("d", dict(config), a.copy())
    assert cache.cache_path("d", config, a) != cache.cache_path("d", config, b)
    assert cache.cache_path("d", config, a) != cache.cache_path("d", {"J": 2}, a)


# ----------------------------------------------------------------------------------------------
# ScatteringFeatures
# ----------------------------------------------------------------------------------------------

def test_scattering_features_transformer(cifar10_subset):
    images, labels = cifar10_subset[0][:40], cifar10_subset[1][:40]
    features = ScatteringFeatures(J=2, progress=False)
    flat = features.fit_transform(images)
    assert flat.shape == (40, 8 * 8 * 3 * 81) and flat.dtype == np.float32
    assert features.output_shape_ == (8, 8, 243)
    grid = clone(features).set_params(flatten=False).fit(images).transform(images[:5])
    np.testing.assert_array_equal(grid.reshape(5, -1), flat[:5])
    model = make_pipeline(ScatteringFeatures(J=2, max_order=1, progress=False), RidgeClassifier())
    assert model.fit(images, labels).score(images, labels) > 0.9   # plumbing: fits its training set


def test_scattering_features_errors(cifar):
    with pytest.raises(NotFittedError):
        ScatteringFeatures().transform(cifar)
    fitted = ScatteringFeatures(J=1, progress=False).fit(cifar)
    with pytest.raises(ValueError, match=r"shape \(N, 32, 32, 3\) as in fit"):
        fitted.transform(cifar[:, :16, :16])
    with pytest.raises(ValueError, match="4-D"):
        ScatteringFeatures().fit(cifar[0])
    with pytest.raises(ValueError, match="too small for J=6"):
        ScatteringFeatures(J=6).fit(cifar)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

def test_bad_images():
    good = np.zeros((2, 16, 16, 3), np.float32)
    with pytest.raises(ValueError, match=r"4-D NHWC.*\(16, 16, 3\)"):
        scatter(good[0], 2)
    nan = good.copy()
    nan[1, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf.*images \[1\]"):
        scatter(nan, 2)
    with pytest.raises(ValueError, match="multiples of 2\\^J = 4"):
        scatter(np.zeros((2, 18, 16, 3), np.float32), 2)
    with pytest.raises(ValueError, match="too small for J=3"):
        scatter(np.zeros((2, 4, 16, 3), np.float32), 3)
    with pytest.raises(ValueError, match="real numbers"):
        scatter(good.astype(np.complex64), 2)


def test_bad_configuration():
    images = np.zeros((2, 16, 16, 1), np.float32)
    for kwargs, message in [(dict(J=0), "J must be"), (dict(J=1.5), "J must be"),
                            (dict(J=1, L=0), "L must be"), (dict(J=1, max_order=3), "max_order"),
                            (dict(J=1, batch_size=0), "batch_size")]:
        with pytest.raises(ValueError, match=message):
            scatter(images, **kwargs)
    with pytest.raises(ValueError, match=r"shape must be \(H, W\)"):
        scattering_fn((16,), 1)
    with pytest.raises(ValueError, match="multiples"):
        scattering_fn((16, 12), 3)


def test_scattering_fn_checks_its_input():
    fn = scattering_fn((16, 16, 3), 1)
    with pytest.raises(ValueError, match=r"shape \(B, 16, 16, 3\)"):
        fn(np.zeros((2, 16, 16, 1), np.float32))
    with pytest.raises(ValueError, match=r"shape \(B, 16, 16, C\)"):
        scattering_fn((16, 16), 1)(np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="floating point"):
        fn(np.zeros((2, 16, 16, 3), np.uint8))


def test_scattering_kernel_ridge_through_the_solvers():
    """Scattering + kernel ridge (the simple baseline): features of sklearn's digits, a linear
    kernel, alpha by exact leave-one-out; held-out accuracy well above chance (10%)."""
    from sklearn.datasets import load_digits

    from tangentless.solvers import KernelRidgeClassifier

    digits = load_digits()
    images = (digits.images[..., None] / 16.0).astype(np.float32)
    flat = ScatteringFeatures(J=1, progress=False).fit_transform(images).astype(np.float64)
    flat = (flat - flat[:1000].mean(0)) / (flat[:1000].std(0) + 1e-6)
    train, test = flat[:1000], flat[1000:]
    model = KernelRidgeClassifier().fit(train @ train.T, digits.target[:1000])
    assert model.selection_ == "loo" and model.loo_score_ > 0.85
    assert model.score(test @ train.T, digits.target[1000:]) > 0.85
