"""ZCAWhitening against an independent float64 brute force of the reference's five steps.

shared/reference/kernels.md, "ZCA preprocessing": 1. flatten each image (float64); 2. subtract the
image's own mean; 3. scale the image to unit L2 norm; 4. C = X^T X / n over the training set;
5. eigh(C), add bias to the eigenvalues; W = V diag((E + bias)^-1/2) V^T; apply X @ W to train and test.

The reference below imports nothing from tangentless. Real data: the shared exact CIFAR-10 subset
(500 training images, 3072 dimensions, fitted once per module); fast cases: small random images.
"""
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from tangentless.kernels import ZCAWhitening

# ----------------------------------------------------------------------------------------------
# Reference (numpy float64, the five steps, nothing from tangentless)
# ----------------------------------------------------------------------------------------------


def ref_rows(images):
    """Steps 1-3: (N, ...) -> (N, D) float64 rows, each centred on its own mean, unit L2 norm."""
    rows = np.asarray(images).reshape(len(images), -1).astype(np.float64)
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ref_fit(train, bias):
    """Steps 4-5: (W, E, V) of the training rows' second moment C = X^T X / n."""
    rows = ref_rows(train)
    covariance = rows.T @ rows / rows.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    whitening = eigenvectors @ np.diag((eigenvalues + bias) ** -0.5) @ eigenvectors.T
    return whitening, eigenvalues, eigenvectors


def ref_transform(whitening, images):
    """X @ W, reshaped back to the input's shape."""
    images = np.asarray(images)
    return (ref_rows(images) @ whitening).reshape(images.shape)


def assert_close_to(actual, expected, rel=2e-5):
    """float32 output vs float64 reference: error relative to the largest reference entry."""
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * scale)


# ----------------------------------------------------------------------------------------------
# Small random images (fast)
# ----------------------------------------------------------------------------------------------

BIAS = 1e-3


@pytest.fixture(scope="module")
def small():
    """Train (60, 6, 6, 2) and test (9, 6, 6, 2) images with correlated pixels and per-image offsets."""
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(72, 72)) * np.linspace(0.05, 1.0, 72)  # anisotropic covariance
    def draw(n):
        rows = rng.normal(size=(n, 72)) @ mixing.T + rng.normal(size=(n, 1)) * 3.0
        return rows.reshape(n, 6, 6, 2)
    return draw(60), draw(9)


def test_transform_matches_reference_train_and_test(small):
    train, test = small
    zca = ZCAWhitening(bias=BIAS).fit(train)
    whitening, _, _ = ref_fit(train, BIAS)
    np.testing.assert_allclose(zca.whitening_, whitening, rtol=0, atol=1e-9 * np.abs(whitening).max())
    for images in (train, test):
        out = zca.transform(images)
        assert out.shape == images.shape == (len(images), 6, 6, 2)
        assert out.dtype == np.float64  # float64 in, float64 out; float32 in, float32 out
        assert zca.transform(images.astype(np.float32)).dtype == np.float32
        assert_close_to(out, ref_transform(whitening, images))
    np.testing.assert_array_equal(ZCAWhitening(bias=BIAS).fit_transform(train), zca.transform(train))


@pytest.mark.parametrize("bias", [1e-5, 1e-4, 0.1])
def test_reference_for_several_biases(small, bias):
    train, test = small
    whitening, _, _ = ref_fit(train, bias)
    out = ZCAWhitening(bias=bias).fit(train).transform(test)
    assert_close_to(out, ref_transform(whitening, test))


def test_rows_input(small):
    """(N, D) rows work as well, and give the flattened image result."""
    train, test = small
    rows_train, rows_test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    zca = ZCAWhitening(bias=BIAS).fit(rows_train)
    out = zca.transform(rows_test)
    assert out.shape == rows_test.shape == (9, 72)
    assert_close_to(out, ref_transform(ref_fit(train, BIAS)[0], rows_test))
    np.testing.assert_allclose(out, ZCAWhitening(bias=BIAS).fit(train).transform(test).reshape(9, -1),
                               rtol=1e-6, atol=1e-6)


def test_fitted_on_train_only(small):
    train, test = small
    zca = ZCAWhitening(bias=BIAS).fit(train)
    fitted = zca.whitening_.copy()
    other = np.random.default_rng(5).normal(size=(40, 6, 6, 2)) * 10 + 3
    zca.transform(other)
    zca.transform(test)
    np.testing.assert_array_equal(zca.whitening_, fitted)  # transform never refits
    from_train = ref_transform(ref_fit(train, BIAS)[0], test)
    assert_close_to(zca.transform(test), from_train)
    # a whitening fitted on train + test gives clearly different test features
    leaked = ref_transform(ref_fit(np.concatenate([train, test]), BIAS)[0], test)
    assert np.abs(leaked - from_train).max() > 1e-2 * np.abs(from_train).max()
    # refitting replaces the whitening
    zca.fit(other)
    assert_close_to(zca.transform(test), ref_transform(ref_fit(other, BIAS)[0], test))


def test_images_are_whitened_independently(small):
    """Per-image steps: a subset's output is the matching rows; per-image affine maps drop out."""
    train, test = small
    zca = ZCAWhitening(bias=BIAS).fit(train)
    full = zca.transform(test)
    np.testing.assert_allclose(zca.transform(test[3:5]), full[3:5], rtol=1e-6, atol=1e-6)
    scale = np.array([0.5, 2.0, 40.0, 1.0, 3.0, 7.0, 0.1, 1.5, 9.0])[:, None, None, None]
    shift = np.linspace(-100, 100, 9)[:, None, None, None]
    np.testing.assert_allclose(zca.transform(test * scale + shift), full,
                               rtol=0, atol=1e-5 * np.abs(full).max())
    refit = ZCAWhitening(bias=BIAS).fit(train * 3.0 - 11.0)
    np.testing.assert_allclose(refit.whitening_, zca.whitening_, rtol=0,
                               atol=1e-9 * np.abs(zca.whitening_).max())


def test_inputs_are_not_modified(small):
    train, test = small
    train_before, test_before = train.copy(), test.copy()
    ZCAWhitening(bias=BIAS).fit(train).transform(test)
    np.testing.assert_array_equal(train, train_before)
    np.testing.assert_array_equal(test, test_before)


def test_whitening_property(small):
    """W^T (R^T R / n) W has eigenvalues E / (E + bias), E the eigenvalues of the reference C."""
    train, _ = small
    rows = ref_rows(train)
    covariance = rows.T @ rows / len(rows)
    _, eigenvalues, _ = ref_fit(train, BIAS)
    expected = np.sort(np.clip(eigenvalues, 0, None) / (np.clip(eigenvalues, 0, None) + BIAS))
    zca = ZCAWhitening(bias=BIAS).fit(train)
    w = zca.whitening_
    np.testing.assert_allclose(w, w.T, rtol=0, atol=1e-10 * np.abs(w).max())  # ZCA: symmetric W
    whitened = w.T @ covariance @ w
    np.testing.assert_allclose(np.linalg.eigvalsh(whitened), expected, rtol=0, atol=1e-8)
    # the same through the public transform (float32 output)
    z = zca.transform(train).reshape(len(train), -1).astype(np.float64)
    np.testing.assert_allclose(np.linalg.eigvalsh(z.T @ z / len(z)), expected, rtol=0, atol=1e-5)
    # and W shares the eigenvectors of C: W C = C W
    np.testing.assert_allclose(w @ covariance, covariance @ w, rtol=0, atol=1e-9)


def test_larger_bias_whitens_less(small):
    train, _ = small
    rows = ref_rows(train)
    covariance = rows.T @ rows / len(rows)
    rank = int((np.linalg.eigvalsh(covariance) > 1e-12).sum())  # directions the data spans
    spectra = []
    for bias in (1e-5, 1e-3, 1e-1, 10.0):
        w = ZCAWhitening(bias=bias).fit(train).whitening_
        spectrum = np.linalg.eigvalsh(w.T @ covariance @ w)
        top = spectrum[-rank:]
        spectra.append((spectrum, top.min() / top.max()))
    for (low, low_ratio), (high, high_ratio) in zip(spectra, spectra[1:]):
        assert np.all(high <= low + 1e-9)           # every whitened variance shrinks
        assert high_ratio < low_ratio               # and the spectrum gets less flat
    # a huge bias barely whitens: sqrt(bias) * transform is the normalized rows themselves
    bias = 1e6
    out = ZCAWhitening(bias=bias).fit(train).transform(train).reshape(len(train), -1)
    np.testing.assert_allclose(np.sqrt(bias) * out, rows, rtol=0, atol=1e-5)


def test_uint8_and_float32_inputs(small):
    train, test = small
    as_uint8 = lambda a: np.clip(a * 10 + 128, 0, 255).astype(np.uint8)
    zca = ZCAWhitening(bias=BIAS).fit(as_uint8(train))
    out = zca.transform(as_uint8(test))
    assert_close_to(out, ref_transform(ref_fit(as_uint8(train), BIAS)[0], as_uint8(test)))
    out32 = ZCAWhitening(bias=BIAS).fit(train.astype(np.float32)).transform(test.astype(np.float32))
    assert_close_to(out32, ref_transform(ref_fit(train.astype(np.float32), BIAS)[0], test), rel=1e-4)


# ----------------------------------------------------------------------------------------------
# scikit-learn contract
# ----------------------------------------------------------------------------------------------

def test_get_set_params_and_clone(small):
    train, test = small
    zca = ZCAWhitening()
    assert zca.get_params() == {"bias": 1e-5}  # the paper's kernel default
    assert ZCAWhitening(bias=1e-4).get_params() == {"bias": 1e-4}
    assert zca.set_params(bias=0.05) is zca and zca.bias == 0.05
    zca.fit(train)
    assert_close_to(zca.transform(test), ref_transform(ref_fit(train, 0.05)[0], test))
    copy = clone(zca)
    assert copy is not zca and copy.get_params() == {"bias": 0.05}
    assert not hasattr(copy, "whitening_")
    with pytest.raises(NotFittedError):
        copy.transform(test)
    np.testing.assert_array_equal(copy.fit(train).transform(test), zca.transform(test))
    # set_params then refit changes the result
    zca.set_params(bias=1e-4).fit(train)
    assert_close_to(zca.transform(test), ref_transform(ref_fit(train, 1e-4)[0], test))


def test_transform_before_fit_raises_not_fitted(small):
    _, test = small
    with pytest.raises(NotFittedError):
        ZCAWhitening().transform(test)


def test_fit_records_input_shape(small):
    train, _ = small
    zca = ZCAWhitening(bias=BIAS).fit(train)
    assert zca.n_features_in_ == 72
    assert tuple(zca.input_shape_) == (6, 6, 2)
    assert zca.whitening_.shape == (72, 72)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_input(small, value):
    train, test = small
    bad = train.copy()
    bad[4, 1, 2, 0] = value
    with pytest.raises(ValueError, match=r"NaN or inf"):
        ZCAWhitening(bias=BIAS).fit(bad)
    zca = ZCAWhitening(bias=BIAS).fit(train)
    bad_test = test.copy()
    bad_test[0, 0, 0, 1] = value
    with pytest.raises(ValueError, match=r"NaN or inf"):
        zca.transform(bad_test)


def test_constant_image(small):
    train, test = small
    bad = train.copy()
    bad[7] = 42.0
    with pytest.raises(ValueError, match=r"1 constant images.*unit norm"):
        ZCAWhitening(bias=BIAS).fit(bad)
    zca = ZCAWhitening(bias=BIAS).fit(train)
    bad_test = test.copy()
    bad_test[[0, 2]] = 0.0
    with pytest.raises(ValueError, match=r"2 constant images"):
        zca.transform(bad_test)


def test_wrong_per_image_shape_at_transform(small):
    train, test = small
    zca = ZCAWhitening(bias=BIAS).fit(train)
    for bad in (test[:, :5], test[..., :1], test.reshape(len(test), -1), test[0]):
        with pytest.raises(ValueError, match=r"per-image shape") as info:
            zca.transform(bad)
        assert "(6, 6, 2)" in str(info.value)


@pytest.mark.parametrize("bias", [-1e-5, -1.0, np.nan, np.inf])
def test_bad_bias(small, bias):
    train, _ = small
    with pytest.raises(ValueError, match=r"bias"):
        ZCAWhitening(bias=bias).fit(train)


def test_empty_input(small):
    train, _ = small
    with pytest.raises(ValueError, match=r"shape"):
        ZCAWhitening(bias=BIAS).fit(train[:0])
    zca = ZCAWhitening(bias=BIAS).fit(train)
    with pytest.raises(ValueError, match=r"shape"):
        zca.transform(train[:0])


# ----------------------------------------------------------------------------------------------
# Real data: the shared CIFAR-10 subset (500 training images, D = 3072)
# ----------------------------------------------------------------------------------------------

CIFAR_BIAS = 1e-5  # the paper's value for kernels


@pytest.fixture(scope="module")
def cifar(cifar10_subset):
    """Fit once: (train, test, fitted ZCAWhitening, reference (W, E, V))."""
    train_images, _, test_images, _ = cifar10_subset
    train, test = train_images[:500], test_images[:100]
    zca = ZCAWhitening(bias=CIFAR_BIAS).fit(train)
    return train, test, zca, ref_fit(train, CIFAR_BIAS)


@pytest.mark.slow
def test_cifar_matches_reference(cifar):
    train, test, zca, (whitening, _, _) = cifar
    assert train.dtype == np.uint8 and train.shape[1:] == (32, 32, 3)
    np.testing.assert_allclose(zca.whitening_, whitening, rtol=0, atol=1e-7 * np.abs(whitening).max())
    for images in (train, test):
        out = zca.transform(images)
        assert out.shape == images.shape and out.dtype == np.float32
        assert_close_to(out, ref_transform(whitening, images))


def test_cifar_fitted_on_train_only(cifar):
    train, test, zca, (whitening, _, _) = cifar
    fitted = zca.whitening_.copy()
    zca.transform(test[::-1, ::-1])  # different images (reversed, upside down)
    zca.transform(train[:50].astype(np.float32) * 0.5 + 9)
    np.testing.assert_array_equal(zca.whitening_, fitted)
    assert_close_to(zca.transform(test[:20]), ref_transform(whitening, test[:20]))


def test_cifar_whitening_property(cifar):
    """Nonzero eigenvalues of Z^T Z / n (= those of Z Z^T / n) are E / (E + bias) of the reference."""
    train, _, zca, (_, eigenvalues, _) = cifar
    n = len(train)
    expected = np.clip(eigenvalues, 0, None) / (np.clip(eigenvalues, 0, None) + CIFAR_BIAS)
    expected = np.sort(expected)[::-1]
    z = zca.transform(train).reshape(n, -1).astype(np.float64)
    got = np.sort(np.linalg.eigvalsh(z @ z.T / n))[::-1]  # the n possibly nonzero eigenvalues
    np.testing.assert_allclose(got, expected[:n], rtol=0, atol=1e-4)
    assert expected[n:].max() < 1e-6  # the rest of the 3072 directions carry nothing
    # most of the 500 spanned directions are whitened to nearly unit variance at bias 1e-5
    assert np.median(got) > 0.95 and got.max() < 1.0 + 1e-4
    # the test images are not white: their second moment differs from the training one
    test_rows = zca.transform(cifar[1]).reshape(len(cifar[1]), -1).astype(np.float64)
    assert np.sort(np.linalg.eigvalsh(test_rows @ test_rows.T / len(test_rows)))[-1] > 1.5


@pytest.mark.slow
def test_cifar_larger_bias_whitens_less(cifar):
    """bias 1e-3 instead of 1e-5: every whitened variance E / (E + bias) of the data is smaller."""
    train, _, zca, (_, eigenvalues, _) = cifar
    n, bias = len(train), 1e-3
    top = np.sort(np.clip(eigenvalues, 0, None))[::-1][:n]
    z_weak = ZCAWhitening(bias=bias).fit(train).transform(train).reshape(n, -1).astype(np.float64)
    z_strong = zca.transform(train).reshape(n, -1).astype(np.float64)
    weak = np.sort(np.linalg.eigvalsh(z_weak @ z_weak.T / n))[::-1]
    strong = np.sort(np.linalg.eigvalsh(z_strong @ z_strong.T / n))[::-1]
    np.testing.assert_allclose(weak, top / (top + bias), rtol=0, atol=1e-4)
    assert np.all(weak < strong)
    assert weak.min() < 0.5 < strong.min()  # the weak directions are visibly less than white
