"""Input validation: bad images, specs and arguments fail early with a message naming the problem.

Every error is raised before any kernel work, so these tests are fast; the few valid calls use tiny
8x8x3 images and a one-layer spec.
"""
import numpy as np
import pytest

import tangentless.kernels as tk
from tangentless.kernels import (AvgPool, Cast, Conv, DirectSum, Gaussian, GlobalAvgPool, Normalize,
                                 Polynomial, Relu, gram, myrtle, network, project, serial,
                                 validate_images, ZCAWhitening)


@pytest.fixture(scope="module")
def spec():
    return serial(Conv(3), Relu(), GlobalAvgPool())


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def y():
    return np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(spec, x, y):
    """A valid cross Gram computed before any of the error cases (compared with later calls)."""
    return gram(spec, x, y, progress=False)


def _gram(spec, x, y=None, **options):
    return gram(spec, x, y, progress=False, **options)


# ----------------------------------------------------------------------------------------------
# Image arrays
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8, 8, 3), (3, 64), (1, 3, 8, 8, 3), (192,)])
def test_wrong_rank_x(spec, shape):
    bad = np.zeros(shape, dtype=np.float32) + 0.5
    with pytest.raises(ValueError, match=r"4-D") as info:
        _gram(spec, bad)
    assert str(shape) in str(info.value)  # the message shows the shape it got


@pytest.mark.parametrize("shape", [(8, 8, 3), (2, 1, 8, 8, 3)])
def test_wrong_rank_y(spec, x, shape):
    with pytest.raises(ValueError, match=r"^y must be a 4-D"):
        _gram(spec, x, np.ones(shape, dtype=np.float32))


def test_empty_batch(spec, x):
    with pytest.raises(ValueError, match=r"^x has 0 sample\(s\) \(shape=\(0, 8, 8, 3\)\)"):
        _gram(spec, x[:0])
    with pytest.raises(ValueError, match=r"^y has 0 sample\(s\)"):
        _gram(spec, x, x[:0])
    with pytest.raises(ValueError, match=r"^x has 0 feature\(s\) \(shape=\(2, 8, 8, 0\)\)"):
        _gram(spec, np.zeros((2, 8, 8, 0), dtype=np.float32))


def test_sparse_input_is_named_before_the_shape(spec):
    import scipy.sparse
    with pytest.raises(ValueError, match=r"^x: sparse input is not supported"):
        _gram(spec, scipy.sparse.csr_matrix(np.ones((3, 4))))


def test_mismatched_channels(spec, x):
    with pytest.raises(ValueError, match=r"same \(H, W, C\)") as info:
        _gram(spec, x, x[..., :2])
    assert "(8, 8, 3)" in str(info.value) and "(8, 8, 2)" in str(info.value)


def test_mismatched_sizes(spec, x):
    with pytest.raises(ValueError, match=r"same \(H, W, C\)"):
        _gram(spec, x, x[:, :6, :6])
    with pytest.raises(ValueError, match=r"same \(H, W, C\)"):
        _gram(spec, x, np.ascontiguousarray(x[:, :, :4]))  # width only


def test_different_batch_sizes_are_fine(spec, x, y, reference):
    k = _gram(spec, x, y)
    assert k.shape == (3, 2) and k.dtype == np.float64
    np.testing.assert_allclose(k, reference, rtol=1e-12)


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_in_x(spec, x, value, word):
    bad = x.copy()
    bad[1, 2, 3, 0] = value
    with pytest.raises(ValueError, match=rf"^x contains 1 NaN or inf") as info:
        _gram(spec, bad)
    assert word in str(info.value)
    assert "[1]" in str(info.value)  # names the offending image


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_in_y(spec, x, y, value):
    bad = y.copy()
    bad[0, 0, 0, :] = value
    with pytest.raises(ValueError, match=r"^y contains 3 NaN or inf"):
        _gram(spec, x, bad)


def test_strings_rejected(spec):
    strings = np.full((2, 8, 8, 3), "a")
    with pytest.raises((TypeError, ValueError), match=r"dtype"):
        _gram(spec, strings)
    with pytest.raises((TypeError, ValueError), match=r"dtype"):
        validate_images(strings.astype(object))


def test_complex_rejected(spec, x):
    with pytest.raises((TypeError, ValueError), match=r"^x: Complex data not supported: .*real numbers.*complex"):
        _gram(spec, x.astype(np.complex64))
    with pytest.raises((TypeError, ValueError), match=r"complex"):
        _gram(spec, x, x.astype(np.complex128))


def test_ragged_input_rejected(spec):
    with pytest.raises(ValueError, match=r"not convertible to an array"):
        _gram(spec, [[[[1.0]]], [[[1.0, 2.0]]]])


def test_spec_must_be_a_layer(x):
    with pytest.raises(TypeError, match=r"Layer"):
        gram("myrtle5", x, progress=False)
    with pytest.raises(TypeError, match=r"Layer"):
        gram(lambda k: k, x, progress=False)


# ----------------------------------------------------------------------------------------------
# Specs that do not fit the images
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, pooled", [(30, "15x15"), (6, "3x3"), (10, "5x5")])
def test_myrtle_images_too_small_or_not_divisible(size, pooled):
    images = np.random.default_rng(2).normal(size=(2, size, size, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"AvgPool\(2\)") as info:
        _gram(myrtle(5), images)
    assert pooled in str(info.value)


def test_avgpool_not_divisible():
    images = np.ones((2, 5, 5, 3), dtype=np.float32) * np.arange(3)
    spec = serial(Conv(3), Relu(), AvgPool(2), GlobalAvgPool())
    with pytest.raises(ValueError, match=r"AvgPool\(2\).*5x5"):
        _gram(spec, images)
    with pytest.raises(ValueError, match=r"AvgPool\(3\)"):
        AvgPool(3).output_size((8, 8))


def test_spec_not_ending_in_one_pixel(x):
    with pytest.raises(ValueError, match=r"GlobalAvgPool") as info:
        _gram(serial(Conv(3), Relu()), x)
    assert "8x8" in str(info.value)
    with pytest.raises(ValueError, match=r"GlobalAvgPool.*one number per image pair"):
        _gram(serial(Conv(3), Relu(), AvgPool(2)), x)


def test_direct_sum_branches_with_different_sizes(x):
    spec = DirectSum(serial(Conv(3), GlobalAvgPool()), serial(Conv(3), AvgPool(2)))
    with pytest.raises(ValueError, match=r"DirectSum branches give different spatial sizes"):
        _gram(spec, x)


@pytest.mark.parametrize("block_size", [0, -3])
def test_block_size(spec, x, block_size):
    with pytest.raises(ValueError, match=r"block_size") as info:
        _gram(spec, x, block_size=block_size)
    assert str(block_size) in str(info.value)


# ----------------------------------------------------------------------------------------------
# Arguments of myrtle, of the layers and of network
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, word", [
    (dict(depth=6), r"depth"),
    (dict(depth=0), r"depth"),
    (dict(nonlinearity="tanh"), r"nonlinearity.*tanh"),
    (dict(head="x"), r"head"),
    (dict(precision="float16"), r"precision.*float16"),
])
def test_myrtle_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        myrtle(**kwargs)


def test_valid_myrtle_arguments_build():
    for depth in (5, 7, 10):
        for nonlinearity in ("relu", "gaussian"):
            for head in ("project", "linear"):
                for precision in ("float32", "mixed", "float64"):
                    spec = myrtle(depth, nonlinearity, head, precision=precision)
                    assert spec.output_size((32, 32)) == (1, 1)


@pytest.mark.parametrize("size", [2, 4, 0, -1])
def test_conv_size(size):
    with pytest.raises(ValueError, match=r"Conv size must be a positive odd integer"):
        Conv(size)
    with pytest.raises(ValueError, match=r"Conv size"):
        Conv(size=size)


@pytest.mark.parametrize("degree", [0, -2])
def test_polynomial_degree(degree):
    with pytest.raises(ValueError, match=r"Polynomial degree"):
        Polynomial(degree)


@pytest.mark.parametrize("dtype", ["float16", "int32", "double"])
def test_cast_dtype(dtype):
    with pytest.raises(ValueError, match=rf"Cast dtype.*{dtype}"):
        Cast(dtype)


def test_direct_sum_arguments():
    with pytest.raises(ValueError, match=r"at least one branch"):
        DirectSum()
    with pytest.raises(ValueError, match=r"2 branches but 1 weights"):
        DirectSum(Relu(), Normalize(), weights=[1.0])
    with pytest.raises(ValueError, match=r"1 branches but 3 weights"):
        DirectSum(Relu(), weights=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0"):
        DirectSum(Relu(), Normalize(), weights=[1.0, -0.5])
    with pytest.raises(ValueError, match=r"weights must be finite"):
        DirectSum(Relu(), weights=[float("nan")])
    DirectSum(Relu(), Normalize(), weights=[0.0, 2.0])  # zero weights are allowed


def test_serial_rejects_non_layers():
    with pytest.raises(TypeError, match=r"Layer.*str"):
        serial("not a layer")
    with pytest.raises(TypeError, match=r"Layer"):
        serial(Conv(3), Relu, GlobalAvgPool())  # the class, not an instance


def test_network_arguments(spec):
    with pytest.raises(ValueError, match=r"width"):
        network(spec, width=0)
    with pytest.raises(ValueError, match=r"width"):
        spec.network(-4)
    with pytest.raises(ValueError, match=r"num_outputs"):
        network(spec, width=4, num_outputs=0)


def test_network_readout_needs_one_pixel():
    import jax
    init, apply = network(serial(Conv(3), Relu()), width=4, num_outputs=2)
    params = init(jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match=r"1x1 final map.*GlobalAvgPool"):
        apply(params, np.ones((1, 4, 4, 3), dtype=np.float32))


# ----------------------------------------------------------------------------------------------
# validate_images itself, and recovery after errors
# ----------------------------------------------------------------------------------------------

def test_validate_images_does_not_modify_its_input(x):
    for arr in (x.copy(), x.astype(np.float64), (x * 10).astype(np.int16)):
        before = arr.copy()
        out = validate_images(arr, dtype="float32")
        assert out.dtype == np.float32 and out.shape == arr.shape
        out[...] = 7  # writing into the result must not reach the caller's array
        assert arr.dtype == before.dtype
        np.testing.assert_array_equal(arr, before)
    bad = x.astype(np.float64)
    bad[0, 0, 0, 0] = np.nan
    before = bad.copy()
    with pytest.raises(ValueError, match=r"NaN"):
        validate_images(bad)
    np.testing.assert_array_equal(bad, before)  # NaN-aware equality: nothing was replaced


def test_validate_images_dtype_and_name(x):
    out = validate_images(x.astype(np.float64), dtype="float64")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, x.astype(np.float64))
    assert validate_images(x.tolist()).dtype == np.float32  # nested lists are fine
    assert validate_images((x * 100).astype(np.uint8)).dtype == np.float32
    with pytest.raises(ValueError, match=r"^train_images must be a 4-D"):
        validate_images(x[0], name="train_images")


def test_valid_call_after_errors(spec, x, y, reference):
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    for call in (lambda: _gram(spec, bad), lambda: _gram(spec, x, y[..., :2]),
                 lambda: _gram(spec, x, block_size=0), lambda: _gram(myrtle(5), x[:, :6, :6]),
                 lambda: _gram(serial(Conv(3)), x)):
        with pytest.raises(ValueError):
            call()
    np.testing.assert_allclose(_gram(spec, x, y), reference, rtol=1e-12)
    k = _gram(spec, x)
    np.testing.assert_allclose(k[:, :], k.T, rtol=0)
    np.testing.assert_allclose(_gram(spec, x, x), k, rtol=1e-6)
    assert np.isfinite(k).all() and np.all(np.diag(k) > 0)
    # the public namespace is complete
    for name in ("gram", "myrtle", "ZCAWhitening", "Conv", "Relu", "Gaussian", "Polynomial",
                 "Normalize", "AvgPool", "GlobalAvgPool", "Cast", "DirectSum", "serial",
                 "project", "validate_images", "network"):
        assert hasattr(tk, name), name
    assert isinstance(project(Gaussian()), tk.Serial)


@pytest.mark.parametrize("make", [lambda: Polynomial(2.5), lambda: Gaussian(-3.0), lambda: Gaussian(0.0),
                                  lambda: AvgPool(0), lambda: AvgPool(-2), lambda: Conv(3.0)])
def test_layer_arguments_are_checked_at_construction(make):
    with pytest.raises(ValueError):
        make()


def test_fractional_block_size_and_float32_overflow_are_named():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3))
    spec = serial(Conv(3), Relu(), GlobalAvgPool())
    with pytest.raises(ValueError, match="block_size"):
        spec.gram(x, block_size=1.5, progress=False)
    x[0, 0, 0, 0] = 1e300
    with pytest.raises(ValueError, match="too large for float32"):
        spec.gram(x, progress=False)


@pytest.mark.parametrize("bad", [None, "1e-5"])
def test_zca_bias_type_is_named(bad):
    with pytest.raises(ValueError, match="bias"):
        ZCAWhitening(bias=bad).fit(np.random.default_rng(0).normal(size=(4, 2, 2, 1)))


def test_zca_rejects_complex_input():
    with pytest.raises(ValueError, match="real numbers"):
        ZCAWhitening().fit(np.ones((3, 2, 2, 1), dtype=complex))
