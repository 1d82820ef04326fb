"""Properties of the Gram engine on real images: symmetry, PSD, flips, blocks, precision."""
import numpy as np
import pytest

from tangentless.kernels import (Conv, DirectSum, GlobalAvgPool, Relu, ZCAWhitening, myrtle, serial)


@pytest.fixture(scope="module")
def images(cifar10_subset):
    """14 ZCA-whitened CIFAR-10 test images (whitening fitted on 1000 training images)."""
    train, _, test, _ = cifar10_subset
    zca = ZCAWhitening(bias=1e-5).fit(train[:1000].astype(np.float32))
    return zca.transform(test[:14].astype(np.float32))


@pytest.fixture(scope="module")
def myrtle5():
    return myrtle(5)


def flip(x):
    return x[:, :, ::-1, :]


@pytest.mark.slow
def test_symmetric_psd_and_consistent_with_cross(images, myrtle5):
    k = myrtle5.gram(images, block_size=5, progress=False)
    assert k.dtype == np.float64 and k.shape == (14, 14)
    np.testing.assert_array_equal(k, k.T)
    eigenvalues = np.linalg.eigvalsh(k)
    assert eigenvalues.min() > -1e-6 * eigenvalues.max()
    # the head normalizes: 1 up to the float32 layers before the cast (1 - 5.7e-9 measured on an
    # Intel Xeon with AVX-512 and AMX, exactly 1 on AMD EPYC hosts)
    np.testing.assert_allclose(np.diag(k), 1.0, rtol=1e-7)
    cross = myrtle5.gram(images[:9], images[4:], block_size=5, progress=False)
    np.testing.assert_allclose(cross, k[:9, 4:], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_block_size_does_not_change_the_result(images, myrtle5):
    reference = myrtle5.gram(images[:9], images[3:], block_size=5, progress=False)
    for block_size in (2, 4, 11):
        other = myrtle5.gram(images[:9], images[3:], block_size=block_size, progress=False)
        np.testing.assert_allclose(other, reference, rtol=1e-6, atol=1e-7)


def test_flip_invariance(images, myrtle5):
    x, y = images[:5], images[5:10]
    np.testing.assert_allclose(myrtle5.gram(flip(x), flip(y), block_size=5, progress=False),
                               myrtle5.gram(x, y, block_size=5, progress=False), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_flip_symmetrized_kernel_equals_augmented_ridge_regression(images, myrtle5, cifar10_subset):
    """KRR on n images with K(x,y) + K(x,Fy) == KRR on the 2n images {x, Fx} with the plain kernel."""
    train, test = images[:10], images[10:]
    labels = np.eye(10)[cifar10_subset[3][:10]]
    ridge = 1e-3
    k_sym = myrtle5.gram(train, flip=True, block_size=5, progress=False)
    k_sym_test = myrtle5.gram(test, train, flip=True, block_size=5, progress=False)
    assert not np.allclose(k_sym, 2 * myrtle5.gram(train, block_size=5, progress=False))
    coef = np.linalg.solve(k_sym + ridge * np.eye(10), labels)
    augmented = np.concatenate([train, flip(train)])
    k_aug = myrtle5.gram(augmented, block_size=5, progress=False)
    k_aug_test = myrtle5.gram(test, augmented, block_size=5, progress=False)
    coef_aug = np.linalg.solve(k_aug + ridge * np.eye(20), np.concatenate([labels, labels]))
    np.testing.assert_allclose(k_sym_test @ coef, k_aug_test @ coef_aug, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(k_sym, k_sym.T)


@pytest.mark.slow
def test_mixed_precision_matches_float64(images):
    mixed = myrtle(5, precision="mixed").gram(images[:6], block_size=6, progress=False)
    exact = myrtle(5, precision="float64").gram(images[:6], block_size=6, progress=False)
    single = myrtle(5, precision="float32").gram(images[:6], block_size=6, progress=False)
    np.testing.assert_allclose(mixed, exact, rtol=1e-5)
    np.testing.assert_allclose(single, exact, rtol=1e-4)


@pytest.mark.slow
def test_direct_sum_adds_kernels():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(3, 8, 8, 2)), rng.normal(size=(4, 8, 8, 2))
    a = serial(Conv(3), Relu(), GlobalAvgPool())
    b = serial(Conv(3), Conv(3), Relu(), Conv(3), GlobalAvgPool())
    total = DirectSum(a, b, weights=(0.25, 2.0)).gram(x, y, progress=False)
    np.testing.assert_allclose(total, 0.25 * a.gram(x, y, progress=False) + 2.0 * b.gram(x, y, progress=False),
                               rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [7, 10])
def test_deeper_myrtles_are_valid_kernels(images, depth):
    spec = myrtle(depth, nonlinearity="gaussian" if depth == 10 else "relu")
    k = spec.gram(images[:6], block_size=6, progress=False)
    np.testing.assert_array_equal(k, k.T)
    assert np.linalg.eigvalsh(k).min() > -1e-6
    assert np.all(np.abs(k) <= 1 + 1e-9) and np.allclose(np.diag(k), 1.0)
