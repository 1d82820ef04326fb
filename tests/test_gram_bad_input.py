"""Nothing silent in the Gram engine (issue 12, items 6 and 8): pixel magnitudes the spec's
precision cannot carry are refused before any work, a block with a NaN or inf is never returned
or marked finished in a store (a resume recomputes it), and a spec says how precise its kernel is
(``psd_rtol``), which a Gram store records for the solvers."""
import json

import numpy as np
import pytest
import zarr

from tangentless.kernels import (Cast, Conv, DirectSum, GlobalAvgPool, JaxBackend, Relu, gram,
                                 myrtle, project, serial)
from tangentless.kernels._shared.digest import array_sha256
from tangentless.kernels.executors import NonFiniteBlockError
from tangentless.kernels.precision import PSD_RTOL, RANGE_MARGIN, pixel_range
from tangentless.kernels.store import CorruptBlockWarning, GramStore
from tangentless.solvers._psd import default_psd_rtol, psd_tolerance

SPEC = serial(Conv(3), Relu(), Conv(3), Relu(), GlobalAvgPool(), project())
SPEC64 = serial(Cast("float64"), SPEC)


def images(n, size=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, size, size, 3))


def markers(path):
    return sorted(m.name for m in (path / "tangentless" / "done").glob("*.json"))


@pytest.mark.parametrize("spec", [SPEC, myrtle(5), myrtle(5, precision="float32")],
                         ids=["small", "myrtle5-mixed", "myrtle5-float32"])
@pytest.mark.parametrize("scale, word", [(1e20, "largest"), (1e-20, "smallest")])
def test_float32_kernels_refuse_magnitudes_they_cannot_carry(spec, scale, word):
    # before: x 1e20 gave an all-NaN kernel, x 1e-20 an all-zero one, both silently
    x = images(3, size=16) * scale
    with pytest.raises(ValueError, match=rf"x has pixel magnitudes a float32 kernel cannot carry: "
                                         rf"the {word} peak .*images \[0, 1, 2\].*precision=\"float64\""):
        gram(spec, x, progress=False)


def test_the_message_names_the_bad_images_and_the_range_and_is_one_line():
    x = images(4)
    x[2] *= 1e20
    with pytest.raises(ValueError) as err:
        gram(SPEC, x, progress=False)
    low, high = pixel_range("float32", (8, 8, 3))
    message = str(err.value)
    assert "\n" not in message and "images [2]" in message and f"{high:.3g}" in message
    assert f"{low:.3g}" in message and "standardize or ZCA" in message
    with pytest.raises(ValueError, match="^y has pixel magnitudes"):
        gram(SPEC, images(2), x, progress=False)


def test_the_range_follows_from_finfo_with_the_stated_margin():
    for dtype in ("float32", "float64"):
        info = np.finfo(dtype)
        low, high = pixel_range(dtype, (8, 8, 3))
        assert high ** 2 == pytest.approx(float(info.max) / (8 * 8 * 3 * RANGE_MARGIN))
        assert low ** 2 == pytest.approx(float(info.tiny / info.eps) * 64 ** 2 * RANGE_MARGIN)
    # float32 at 8x8x3: about [6e-13, 4e16]; float64: about [2e-143, 3e151]
    assert 1e-12 > pixel_range("float32", (8, 8, 3))[0] > 1e-20 > 1e-140 > pixel_range("float64", (8, 8, 3))[0]
    assert 1e17 > pixel_range("float32", (8, 8, 3))[1] > 1e16 and pixel_range("float64", (8, 8, 3))[1] > 1e150


@pytest.mark.parametrize("spec", [SPEC64, myrtle(5, precision="float64")], ids=["small", "myrtle5"])
@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_float64_kernels_carry_them(spec, scale):
    x = images(3, size=16)
    expected = gram(spec, x, progress=False)  # both specs are normalized: scale-invariant
    np.testing.assert_allclose(gram(spec, x * scale, progress=False), expected, rtol=1e-9)


def test_a_float32_stage_anywhere_sets_the_range():
    narrowed = serial(Cast("float64"), Conv(3), Relu(), Cast("float32"), GlobalAvgPool(), project())
    branch = DirectSum(SPEC64, serial(Conv(3), GlobalAvgPool()))
    for spec in (narrowed, branch):
        assert spec.kernel_dtype == "float32"
        with pytest.raises(ValueError, match="float32 kernel cannot carry"):
            gram(spec, images(2) * 1e20, progress=False)


def test_blank_images_and_ordinary_ranges_are_accepted():
    x = images(3)
    x[1] = 0.0  # the kernel defines a blank image: a zero row
    k = gram(SPEC, x, progress=False)
    assert np.isfinite(k).all() and not k[1].any() and k[0, 0] > 0
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 8, 8, 3)).astype(np.uint8)
    assert np.isfinite(gram(SPEC, pixels, progress=False)).all()
    assert np.isfinite(gram(SPEC, np.zeros((2, 8, 8, 3)), progress=False)).all()


def test_a_store_is_not_even_created_for_input_out_of_range(tmp_path):
    # before: the NaN blocks got valid "finished" markers, so a resume never recomputed them
    with pytest.raises(ValueError, match="cannot carry"):
        gram(SPEC, images(5) * 1e20, block_size=2, progress=False, store=tmp_path / "k.zarr")
    assert not (tmp_path / "k.zarr").exists()


class PoisonBackend(JaxBackend):
    """The JAX backend, except that its calls numbered in ``poisoned`` return NaN (one class, so
    a store records the same backend with or without poison)."""

    def __init__(self, poisoned=()):
        self.poisoned, self.calls = set(poisoned), 0

    def compute_block(self, spec, x, y, info_x, info_y):
        block = super().compute_block(spec, x, y, info_x, info_y)
        self.calls += 1
        return np.full_like(block, np.nan) if self.calls - 1 in self.poisoned else block


def test_a_non_finite_block_is_refused_in_memory():
    with pytest.raises(NonFiniteBlockError, match=r"Gram block \(0, 1\) \(rows 0:4, columns 4:8\) "
                                                  r"has 16 NaN or inf values"):
        gram(SPEC, images(10), block_size=4, progress=False, backend=PoisonBackend({1}))


def test_a_non_finite_block_is_never_marked_finished_and_a_resume_computes_it(tmp_path):
    path, x = tmp_path / "k.zarr", images(10)
    with pytest.raises(NonFiniteBlockError, match=r"block \(0, 1\) \(rows 0:4, columns 4:8\)"):
        gram(SPEC, x, block_size=4, progress=False, store=path, backend=PoisonBackend({1}))
    assert markers(path) == ["0-0.json"]  # in process the blocks run in order: (0, 1) stopped it
    k = gram(SPEC, x, block_size=4, progress=False, store=path, backend=PoisonBackend())
    np.testing.assert_array_equal(k[:], gram(SPEC, x, block_size=4, progress=False, backend="jax"))
    record = GramStore(path).runs()[-1]
    assert record["reused"] == 1 and record["computed"] == 5


class PoisonsAnImage(JaxBackend):
    """The JAX backend, except that with ``active`` every block whose x images include one with
    first pixel ``SENTINEL`` is NaN (state in the object, so it holds on Dask workers too)."""
    SENTINEL = 7.0

    def __init__(self, active=True):
        self.active = active

    def compute_block(self, spec, x, y, info_x, info_y):
        block = super().compute_block(spec, x, y, info_x, info_y)
        poisoned = self.active and bool(np.any(np.asarray(x)[:, 0, 0, 0] == self.SENTINEL))
        return np.full_like(block, np.nan) if poisoned else block


@pytest.mark.slow
def test_a_non_finite_block_computed_on_a_dask_worker_is_never_marked(tmp_path):
    from dask.distributed import Client, LocalCluster

    path, x = tmp_path / "k.zarr", images(12)
    x[5, 0, 0, 0] = PoisonsAnImage.SENTINEL  # row block 1 of 3: blocks (1, 1) and (1, 2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with pytest.raises(NonFiniteBlockError, match=r"Gram block \(1, [12]\) \(rows 4:8"):
            gram(SPEC, x, block_size=4, progress=False, store=path, scheduler=client,
                 backend=PoisonsAnImage(), retries=0)
        assert not {"1-1.json", "1-2.json"} & set(markers(path))
        k = gram(SPEC, x, block_size=4, progress=False, store=path, scheduler=client,
                 backend=PoisonsAnImage(active=False))
    np.testing.assert_array_equal(k[:], gram(SPEC, x, block_size=4, progress=False, backend="jax"))
    assert markers(path) == sorted(f"{i}-{j}.json" for i in range(3) for j in range(i, 3))


def test_a_block_the_store_dtype_cannot_hold_is_not_marked(tmp_path):
    # float64 carries x 1e100, but K ~ 1e200 overflows a float32 store
    linear = serial(Cast("float64"), Conv(3), Relu(), GlobalAvgPool())
    path = tmp_path / "k.zarr"
    with pytest.raises(NonFiniteBlockError, match="exceed float32's range: use store_dtype='float64'"):
        gram(linear, images(4) * 1e100, block_size=2, progress=False, store=path,
             store_dtype="float32")
    assert markers(path) == []


def test_a_marked_non_finite_block_of_an_older_store_is_recomputed(tmp_path):
    """A store written before the check may hold NaN blocks with valid markers."""
    path, x = tmp_path / "k.zarr", images(6)
    expected = gram(SPEC, x, block_size=3, progress=False, store=path)[:]
    array = zarr.open_array(path, mode="r+")
    array[0:3, 3:6] = np.nan
    array[3:6, 0:3] = np.nan
    marker = path / "tangentless" / "done" / "0-1.json"
    record = json.loads(marker.read_text())
    record["sha256"] = [array_sha256(array[0:3, 3:6]), array_sha256(array[3:6, 0:3])]
    marker.write_text(json.dumps(record))
    with pytest.warns(CorruptBlockWarning, match=r"block \(0, 1\) holds NaN or inf"):
        k = gram(SPEC, x, block_size=3, progress=False, store=path)
    np.testing.assert_array_equal(k[:], expected)


def test_psd_rtol_follows_the_narrowest_precision_a_stage_computes_in():
    assert myrtle(5).psd_rtol == myrtle(5, precision="float32").psd_rtol == PSD_RTOL["float32"] == 1e-5
    assert myrtle(5, precision="float64").psd_rtol == SPEC64.psd_rtol == PSD_RTOL["float64"] == 1e-8
    assert myrtle(5).kernel_dtype == "float32" and myrtle(5).input_dtype == "float32"
    assert serial(Cast("float64"), Conv(3), Cast("float32"), GlobalAvgPool()).psd_rtol == 1e-5
    for dtype in PSD_RTOL:  # the solvers' defaults by storage dtype are the same numbers
        assert PSD_RTOL[dtype] == psd_tolerance(dtype)


@pytest.mark.parametrize("spec, store_dtype, expected", [
    (SPEC, "float64", 1e-5), (SPEC64, "float64", 1e-8), (SPEC64, "float32", 1e-5)])
def test_a_store_records_psd_rtol_for_the_solvers(tmp_path, spec, store_dtype, expected):
    k = gram(spec, images(4), block_size=2, progress=False, store=tmp_path / "k.zarr",
             store_dtype=store_dtype)
    assert k.attrs["tangentless"]["psd_rtol"] == expected
    assert default_psd_rtol(k) == expected


def test_a_store_made_before_psd_rtol_still_resumes_and_gains_it(tmp_path):
    path, x = tmp_path / "k.zarr", images(6)
    expected = gram(SPEC, x, block_size=3, progress=False, store=path)[:]
    array = zarr.open_array(path, mode="r+")
    old = {k: v for k, v in array.attrs["tangentless"].items() if k != "psd_rtol"}
    array.update_attributes({"tangentless": old})
    assert "psd_rtol" not in GramStore(path).config
    k = gram(SPEC, x, block_size=3, progress=False, store=path)
    assert GramStore(path).runs()[-1]["computed"] == 0
    np.testing.assert_array_equal(k[:], expected)
    assert GramStore(path).config["psd_rtol"] == 1e-5
