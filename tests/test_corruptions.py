"""Shifted test sets (tangentless.benchmarks.corruptions): the CIFAR-10-C corruptions at their CIFAR
severities, deformations, the paired JPEG shift; determinism, severity ordering on real images,
checked formulas, and the cache's refusals."""
import json

import numpy as np
import pytest

from conftest import SHARED_DATA
from tangentless.benchmarks import corruptions as C
from tangentless.benchmarks.cli import main


@pytest.fixture(scope="module")
def real_images(cifar10_subset):
    """40 exact CIFAR-10 test images, uint8 (40, 32, 32, 3)."""
    return cifar10_subset[2][:40]


def _correlation(shifted, clean):
    """Mean over images of the Pearson correlation between each shifted and clean image."""
    a = shifted.reshape(len(shifted), -1).astype(float)
    b = clean.reshape(len(clean), -1).astype(float)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return float(np.mean((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))))


def test_the_benchmark_has_15_corruptions_in_four_families_with_five_severities():
    assert len(C.CORRUPTIONS) == 15 and sum(map(len, C.FAMILIES.values())) == 15
    assert set(sum(C.FAMILIES.values(), ())) == set(C.CORRUPTIONS)
    assert all(len(C.CIFAR10C_SEVERITIES[name]) == 5 for name in C.CORRUPTIONS)


@pytest.mark.parametrize("name", C.SHIFTS)
def test_every_shift_gives_uint8_images_of_the_input_shape(real_images, name):
    for severity in (1, 5):
        out = C.corrupt_images(real_images[:4], name, severity, seed=0)
        assert out.dtype == np.uint8 and out.shape == (4, 32, 32, 3)
        assert not np.array_equal(out, real_images[:4])


#: the shifts whose CIFAR parameters make every severity step move the image further from the
#: clean one. Left out: glass blur (severities 1-3 shuffle once, 4-5 twice, with the blur's sigma
#: going up and down), elastic transform (its affine jitter shrinks as its elastic part grows),
#: frost (the frost weight stops growing at severity 4 while the image weight falls) and motion
#: blur (severities 3 and 4 differ only in a radius beyond the kernel's Gaussian sigma of 2)
MONOTONE = [n for n in C.SHIFTS if n not in ("glass_blur", "elastic_transform", "frost", "motion_blur")]


@pytest.mark.parametrize("name", MONOTONE)
def test_severities_are_ordered_by_the_correlation_with_the_clean_image(real_images, name):
    shifted = C.shift_images(real_images, name, seed=0)
    correlation = [_correlation(s, real_images) for s in shifted]
    assert all(a > b for a, b in zip(correlation, correlation[1:])), correlation


def test_blurs_remove_high_frequencies_and_noise_adds_them(real_images):
    def variation(x):
        x = x.astype(float)
        return np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()
    for name in ("defocus_blur", "zoom_blur"):
        tv = [variation(s) for s in C.shift_images(real_images, name, seed=0)]
        assert variation(real_images) > tv[0] and all(a > b for a, b in zip(tv, tv[1:])), (name, tv)
    for name in C.FAMILIES["noise"]:
        tv = [variation(s) for s in C.shift_images(real_images, name, seed=0)]
        assert variation(real_images) < tv[0] and all(a < b for a, b in zip(tv, tv[1:])), (name, tv)


def test_gaussian_noise_has_the_cifar_standard_deviation():
    gray = np.full((50, 32, 32, 3), 128, np.uint8)   # far from the clip at 0 and 255
    for severity, std in enumerate(C.CIFAR10C_SEVERITIES["gaussian_noise"], start=1):
        noise = C.corrupt_images(gray, "gaussian_noise", severity, seed=1).astype(float) - 128
        # truncation to uint8 shifts the mean by -0.5 and adds 1/12 to the variance (in pixels^2)
        measured = np.sqrt(noise.var() - 1 / 12) / 255
        assert measured == pytest.approx(std, rel=0.03)


def test_contrast_and_brightness_follow_their_definitions(real_images):
    x = real_images.astype(float) / 255
    for severity, c in enumerate(C.CIFAR10C_SEVERITIES["contrast"], start=1):
        means = x.mean(axis=(1, 2), keepdims=True)
        expected = np.uint8(np.clip((x - means) * c + means, 0, 1) * 255)
        assert np.array_equal(C.corrupt_images(real_images, "contrast", severity, seed=0), expected)
    # brightness adds c to HSV's value = max over channels, clipped at 1
    out = C.corrupt_images(real_images, "brightness", 2, seed=0).astype(float) / 255
    value, expected = out.max(axis=-1), np.clip(x.max(axis=-1) + 0.1, 0, 1)
    assert np.abs(value - expected).max() <= 1.5 / 255


def test_translation_moves_the_image_by_whole_pixels(real_images):
    out = C.corrupt_images(real_images[:10], "translate", 3, seed=0)
    for moved, clean in zip(out, real_images[:10]):
        shifts = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                  if np.array_equal(moved[max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)],
                                    clean[max(-dy, 0):32 - max(dy, 0), max(-dx, 0):32 - max(dx, 0)])]
        assert any(max(abs(dy), abs(dx)) == 3 for dy, dx in shifts), shifts


def test_generation_is_deterministic_and_per_image(real_images):
    for name in ("gaussian_noise", "glass_blur", "fog", "frost", "snow", "elastic_transform", "rotate"):
        a = C.corrupt_images(real_images[:6], name, 3, seed=7)
        assert np.array_equal(a, C.corrupt_images(real_images[:6], name, 3, seed=7)), name
        assert not np.array_equal(a, C.corrupt_images(real_images[:6], name, 3, seed=8)), name
        # an image's corruption depends on its index, not on the other images in the call
        part = C.corrupt_images(real_images[2:4], name, 3, seed=7, indices=[2, 3])
        assert np.array_equal(part, a[2:4]), name




def _perturbed_kernel(library, ulps: int):
    """The library's motion-blur line kernel with every weight moved ``ulps`` units in the last
    place: what another CPU's NumPy exp (AVX-512's SVML against AVX2's libm) can give."""
    original = library.getMotionBlurKernel

    def kernel(width, sigma):
        k = original(width, sigma)
        for _ in range(abs(ulps)):
            k = np.nextafter(k, np.inf if ulps > 0 else -np.inf)
        return k
    return kernel


@pytest.mark.parametrize("name", ["motion_blur", "snow"])
@pytest.mark.parametrize("ulps", [-2, 2])
def test_line_blurs_do_not_depend_on_the_last_bits_of_the_kernel(real_images, monkeypatch, name, ulps):
    # about 1% of motion-blurred values (flat regions: v times weights summing to 1) lie within
    # rounding error of an integer, where truncation to uint8 turns an ulp of exp into a gray level
    expected = [C.corrupt_images(real_images, name, s, seed=0) for s in range(1, 6)]
    library = C._library()
    monkeypatch.setattr(library, "getMotionBlurKernel", _perturbed_kernel(library, ulps))
    for severity, want in enumerate(expected, 1):
        got = C.corrupt_images(real_images, name, severity, seed=0)
        assert np.array_equal(got, want), (name, severity, int((got != want).sum()))
def test_fog_leaves_numpys_global_generator_as_it_was(real_images):
    np.random.seed(3)
    expected = np.random.random()
    np.random.seed(3)
    C.corrupt_images(real_images[:2], "fog", 2, seed=0)
    assert np.random.random() == expected


def test_bad_input_is_refused_by_name():
    x = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown shift 'blur'"):
        C.corrupt_images(x, "blur", 1, seed=0)
    with pytest.raises(ValueError, match="severity must be an integer 1..5"):
        C.corrupt_images(x, "fog", 6, seed=0)
    with pytest.raises(ValueError, match=r"uint8 \(N, 32, 32, 3\)"):
        C.corrupt_images(x.astype(np.float32), "fog", 1, seed=0)
    with pytest.raises(ValueError, match=r"uint8 \(N, 32, 32, 3\)"):
        C.corrupt_images(np.zeros((2, 28, 28, 3), np.uint8), "fog", 1, seed=0)
    with pytest.raises(ValueError, match="labels must be integers"):
        C.write_shifted_sets(x, [0, 1, 2], "unused", names=("fog",))


def test_written_sets_resume_verify_and_refuse_tampering(real_images, tmp_path):
    labels = np.arange(8) % 10
    images = real_images[:8]
    (path,) = C.write_shifted_sets(images, labels, tmp_path, seed=0, names=("contrast",),
                                   indices=np.arange(100, 108), progress=False)
    shifted, got_labels, index, record = C.load_shifted_set(tmp_path, "contrast")
    assert shifted.shape == (5, 8, 32, 32, 3) and shifted.dtype == np.uint8
    assert np.array_equal(shifted, C.shift_images(images, "contrast", seed=0))
    assert np.array_equal(got_labels, labels) and np.array_equal(index, np.arange(100, 108))
    assert record["parameters"] == list(C.CIFAR10C_SEVERITIES["contrast"])
    assert record["versions"]["numpy"] == np.__version__   # what made it, for a later comparison
    mtime = path.stat().st_mtime_ns
    C.write_shifted_sets(images, labels, tmp_path, seed=0, names=("contrast",), progress=False)
    assert path.stat().st_mtime_ns == mtime   # verified and kept, not rewritten
    with pytest.raises(C.ShiftedSetError, match=r"other settings \(seed differ\)"):
        C.write_shifted_sets(images, labels, tmp_path, seed=1, names=("contrast",), progress=False)
    with pytest.raises(C.ShiftedSetError, match="source_sha256 differ"):
        C.write_shifted_sets(images[::-1].copy(), labels, tmp_path, names=("contrast",),
                             progress=False)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(C.ShiftedSetError, match="does not match the checksum"):
        C.load_shifted_set(tmp_path, "contrast")
    (tmp_path / "contrast.json").unlink()   # an interrupted writer leaves no record: regenerated
    C.write_shifted_sets(images, labels, tmp_path, names=("contrast",), progress=False)
    assert np.array_equal(C.load_shifted_set(tmp_path, "contrast")[0], shifted)
    with pytest.raises(C.ShiftedSetError, match="incomplete"):
        C.load_shifted_set(tmp_path, "fog")


def test_jpeg_pairs_match_by_official_index_and_check_labels():
    rng = np.random.default_rng(0)
    exact = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    labels, index = np.array([3, 1, 4, 1, 5]), np.array([10, 11, 12, 13, 14])
    # the JPEG set holds 4 of them, in another order, plus one image of unknown index
    j_index = np.array([13, -1, 10, 14, 12])
    j_images = np.stack([exact[3], exact[0], exact[0] + 1, exact[4], exact[2]])
    j_labels = np.array([1, 9, 3, 5, 4])
    clean, jpeg, got_labels, got_index = C.jpeg_pairs((exact, labels, index), (j_images, j_labels, j_index))
    assert got_index.tolist() == [10, 12, 13, 14] and got_labels.tolist() == [3, 4, 1, 5]
    assert np.array_equal(clean, exact[[0, 2, 3, 4]])
    assert np.array_equal(jpeg, j_images[[2, 4, 0, 3]])
    with pytest.raises(ValueError, match="labels disagree .* official index 12"):
        C.jpeg_pairs((exact, labels, index), (j_images, np.array([1, 9, 3, 5, 7]), j_index))
    with pytest.raises(ValueError, match="indices repeat"):
        C.jpeg_pairs((exact, labels, index), (j_images, j_labels, np.array([13, 13, 10, 14, 12])))


def test_the_command_writes_every_shift_and_the_real_jpeg_pairs(tmp_path, capsys, cifar10_subset):
    jpeg = SHARED_DATA / "cifar10_jpeg" / "test.npz"
    if not jpeg.is_file():
        pytest.skip(f"shared JPEG copy not found at {jpeg}")
    test = tmp_path / "test.npz"
    with np.load(SHARED_DATA / "cifar10" / "test.npz") as data:
        np.savez(test, images=data["images"][:20], labels=data["labels"][:20], index=data["index"][:20])
    out = tmp_path / "shifted"
    assert main(["shifts", "--test", str(test), "--jpeg", str(jpeg), "--shifts", "fog,translate",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["sets"]) == {"fog", "translate", "jpeg"}
    clean = cifar10_subset[2][:20]
    recompressed, labels, index, _ = C.load_shifted_set(out, "jpeg")
    assert recompressed.shape == (1, 20, 32, 32, 3) and index.tolist() == list(range(20))
    assert np.array_equal(labels, cifar10_subset[3][:20])
    # each JPEG image is its own exact image recompressed: far closer to it than to any other
    distance = ((recompressed[0][:, None].astype(float) - clean[None].astype(float)) ** 2).mean(axis=(2, 3, 4))
    assert np.array_equal(distance.argmin(axis=1), np.arange(20))
    assert np.sqrt(distance.diagonal()).max() < 15
    assert main(["shifts", "--test", str(test), "--shifts", "blur", "--out", str(out)]) == 2
    assert "unknown blur" in capsys.readouterr().err
