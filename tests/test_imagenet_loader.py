"""ImageFolder loading, the crop/flip transforms and bounded streaming (tangentless.scattering.imagenet)."""
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import SHARED_DATA
from tangentless.scattering import imagenet
from tangentless.scattering.imagenet import (ImageDecodeError, ImageFolder, center_crop, eval_transform,
                                             iterate_batches, load_image, random_flip, random_resized_crop,
                                             random_resized_crop_box, resize_shorter, train_transform)

IMAGENET = SHARED_DATA / "imagenet"


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def shared_folder(tmp_path_factory):
    """The 100 shared JPEGs symlinked into root/<wnid>/<file>."""
    source = IMAGENET / "jpeg_subset100"
    if not source.is_dir():
        pytest.skip(f"shared ImageNet JPEGs not found at {source}")
    root = tmp_path_factory.mktemp("imagenet")
    for path in sorted(source.glob("*.JPEG")):
        (root / path.name.split("_")[0]).mkdir(exist_ok=True)
        (root / path.name.split("_")[0] / path.name).symlink_to(path)
    return root


def _random_rgb(rng, height, width):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """3 classes, 7 + 8 + 9 random-sized PNG/JPEG images (mixed-case extensions), plus files to ignore."""
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog", "eel"]):
        (root / name).mkdir()
        for i in range(7 + c):
            img = Image.fromarray(_random_rgb(rng, *rng.integers(40, 90, 2)))
            img.save(root / name / f"{i:02d}.{['png', 'JPG', 'Jpeg'][i % 3]}")
        (root / name / "notes.txt").write_text("not an image")
        (root / name / ".hidden.png").write_bytes(b"")
    (root / ".cache").mkdir()
    return root


# --------------------------------------------------------------------------------------- ImageFolder

def test_shared_folder_has_official_labels(shared_folder):
    index = json.loads((IMAGENET / "imagenet_class_index.json").read_text())
    official = {wnid: int(k) for k, (wnid, _) in index.items()}
    folder = ImageFolder(shared_folder, IMAGENET / "imagenet_class_index.json")
    assert len(folder) == 100 and len(folder.classes) == 1000
    for path, label in folder.samples:
        wnid = path.split("/")[-2]
        assert label == official[wnid] and folder.classes[label] == wnid
    with np.load(IMAGENET / "sample_224_subset100.npz") as z:  # classes 0, 10, ..., 990
        np.testing.assert_array_equal(folder.labels, z["labels"])
    # the same labels from a mapping or a class list; sorted folder names without an index
    assert ImageFolder(shared_folder, official).samples == folder.samples
    assert ImageFolder(shared_folder, folder.classes).samples == folder.samples
    plain = ImageFolder(shared_folder)
    np.testing.assert_array_equal(plain.labels, np.arange(100))
    assert plain.classes == sorted(official, key=official.get)[::10]


def test_folder_listing(small_tree):
    folder = ImageFolder(small_tree)
    assert folder.classes == ["cat", "dog", "eel"]
    assert len(folder) == 7 + 8 + 9 and folder.labels.dtype == np.int64
    np.testing.assert_array_equal(folder.labels, [0] * 7 + [1] * 8 + [2] * 9)
    assert all(not p.endswith(("notes.txt", ".hidden.png")) for p, _ in folder.samples)
    assert [p for p, _ in folder.samples] == sorted(p for p, _ in folder.samples)
    reordered = ImageFolder(small_tree, ["eel", "cat", "dog", "fox"])
    assert reordered.class_to_idx == {"eel": 0, "cat": 1, "dog": 2, "fox": 3}
    np.testing.assert_array_equal(reordered.labels, [1] * 7 + [2] * 8 + [0] * 9)


def test_folder_errors(tmp_path, small_tree):
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no class folders"):
        ImageFolder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolder(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"hold no image files: \['b'\]"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match=r"not in class_index: \['eel'\]"):
        ImageFolder(small_tree, ["cat", "dog"])
    with pytest.raises(ValueError, match="more than once"):
        ImageFolder(small_tree, ["cat", "dog", "eel", "dog"])
    with pytest.raises(ValueError, match="exactly 0..K-1"):
        ImageFolder(small_tree, {"cat": 0, "dog": 2, "eel": 3})
    bad_json = tmp_path / "index.json"
    bad_json.write_text('{"0": 5}')
    with pytest.raises(ValueError, match="Keras-format"):
        ImageFolder(small_tree, bad_json)
    with pytest.raises(FileNotFoundError, match="class index file"):
        ImageFolder(small_tree, tmp_path / "absent.json")


# -------------------------------------------------------------------------------------------- decode

def test_load_image_converts_modes(tmp_path):
    rng = np.random.default_rng(1)
    rgb = _random_rgb(rng, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgb.png")), rgb)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (20, 30, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgba.png")), rgb)  # alpha dropped
    grey = np.tile(np.arange(0, 240, 8, dtype=np.uint8), (20, 1))
    Image.fromarray(grey, "L").save(tmp_path / "grey.jpg", quality=95)
    out = np.asarray(load_image(tmp_path / "grey.jpg"))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert np.abs(out[..., 0].astype(int) - grey).max() <= 6
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # cyan ink
    assert np.abs(np.asarray(load_image(tmp_path / "cmyk.jpg")).astype(int) - [0, 255, 255]).max() <= 6


def test_corrupt_files_raise_naming_the_file(tmp_path, small_tree):
    data = (small_tree / "cat" / "01.JPG").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) * 2 // 3])
    (tmp_path / "text.jpg").write_text("this is not a JPEG")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ["cut.jpg", "text.jpg", "empty.png"]:
        with pytest.raises(ImageDecodeError, match=name):
            load_image(tmp_path / name)
    # the same inside a stream, whichever thread decodes it
    root = tmp_path / "tree"
    (root / "x").mkdir(parents=True)
    for i in range(5):
        (root / "x" / f"{i}.jpg").write_bytes(data)
    (root / "x" / "3.jpg").write_bytes(data[:len(data) // 2])
    with pytest.raises(ImageDecodeError, match="3.jpg.*truncated"):
        list(iterate_batches(ImageFolder(root), 2, train=False, num_threads=2, size=32, resize=40))


def test_load_truncated_images_setting_is_refused(monkeypatch, small_tree):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(small_tree / "cat" / "00.png")


# ---------------------------------------------------------------------------------------- transforms

@pytest.mark.parametrize("width,height,expected", [(500, 375, (341, 256)), (332, 500, (256, 385)),
                                                   (256, 300, (256, 300)), (100, 100, (256, 256))])
def test_resize_shorter_shape_and_aspect(width, height, expected):
    out = resize_shorter(Image.new("RGB", (width, height), (10, 20, 30)), 256)
    assert out.size == expected and min(out.size) == 256
    assert abs(out.size[0] / out.size[1] - width / height) < 1 / 256 * max(width / height, height / width)
    assert np.all(np.asarray(out) == [10, 20, 30])  # bilinear keeps a constant image constant


@pytest.mark.parametrize("width,height,left,top", [(341, 256, 58, 16), (343, 256, 60, 16),
                                                   (256, 300, 16, 38), (256, 343, 16, 60), (224, 224, 0, 0)])
def test_center_crop_is_a_numpy_slice(width, height, left, top):
    arr = _random_rgb(np.random.default_rng(2), height, width)
    out = np.asarray(center_crop(Image.fromarray(arr), 224))  # offsets round half to even, as torchvision
    np.testing.assert_array_equal(out, arr[top:top + 224, left:left + 224])


def test_eval_transform_is_crop_of_resize(small_tree):
    img = load_image(small_tree / "dog" / "03.png")
    resized = np.asarray(resize_shorter(img, 256))
    h, w = resized.shape[:2]
    top, left = int(round((h - 224) / 2)), int(round((w - 224) / 2))
    np.testing.assert_array_equal(eval_transform(img), resized[top:top + 224, left:left + 224])
    with pytest.raises(ValueError, match="smaller than the crop"):
        center_crop(img, 224)


@pytest.mark.parametrize("height,width", [(375, 500), (500, 375), (100, 100), (57, 300)])
def test_random_resized_crop_box_within_bounds(height, width):
    rng = np.random.default_rng(3)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    areas, ratios = [], []
    for _ in range(2000):
        top, left, h, w = random_resized_crop_box(height, width, rng, scale, ratio)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
        if (h, w) != (height, width) and (top, left) != ((height - h) // 2, (width - w) // 2):
            # a drawn box: area and ratio within the bounds, up to the rounding of each side (+-0.5)
            assert (h + 0.5) * (w + 0.5) >= scale[0] * height * width
            assert (h - 0.5) * (w - 0.5) <= scale[1] * height * width
            assert (w + 0.5) / (h - 0.5) >= ratio[0] and (w - 0.5) / (h + 0.5) <= ratio[1]
            areas.append(h * w / (height * width))
            ratios.append(w / h)
    assert len(areas) > 1000  # most draws are not the fallback
    if 3 / 4 <= width / height <= 4 / 3:  # and they span the ranges (a strip allows only small areas)
        assert min(areas) < 0.1 and max(areas) > 0.6
        assert min(ratios) < 0.8 and max(ratios) > 1.25


def test_random_resized_crop_fallback_is_center():
    rng = np.random.default_rng(4)
    # a 20 x 1000 strip: no box of ratio <= 4/3 and area >= 0.5 fits, so the center 20 x 27 is taken
    for _ in range(20):
        assert random_resized_crop_box(20, 1000, rng, scale=(0.5, 1.0)) == (0, (1000 - 27) // 2, 20, 27)
    assert random_resized_crop_box(1000, 20, rng, scale=(0.5, 1.0)) == ((1000 - 27) // 2, 0, 27, 20)
    assert random_resized_crop_box(30, 30, rng, scale=(2.0, 3.0)) == (0, 0, 30, 30)
    with pytest.raises(ValueError, match="scale"):
        random_resized_crop_box(30, 30, rng, scale=(0.5, 0.1))


def test_random_resized_crop_and_flip_replay(small_tree):
    img = load_image(small_tree / "eel" / "04.JPG")
    arr = np.asarray(img)
    for seed in range(5):
        top, left, h, w = random_resized_crop_box(img.height, img.width, np.random.default_rng(seed))
        expected = np.asarray(Image.fromarray(arr[top:top + h, left:left + w]).resize((24, 24), Image.BILINEAR))
        out = np.asarray(random_resized_crop(img, 24, rng=np.random.default_rng(seed)))
        assert out.shape == (24, 24, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, expected)
        rng = np.random.default_rng(seed)
        crop = np.asarray(random_resized_crop(img, 24, rng=rng))
        flipped = rng.random() < 0.5
        np.testing.assert_array_equal(train_transform(img, np.random.default_rng(seed), 24),
                                      crop[:, ::-1] if flipped else crop)


def test_random_flip():
    arr = _random_rgb(np.random.default_rng(5), 6, 9)
    rng = np.random.default_rng(6)
    flips = 0
    for _ in range(400):
        out = random_flip(arr, rng=rng)
        flipped = np.array_equal(out, arr[:, ::-1])
        assert flipped or np.array_equal(out, arr)
        flips += flipped
    assert 160 < flips < 240  # Binomial(400, 1/2): 4 standard deviations


# ------------------------------------------------------------------------------------------ streaming

def test_eval_batches_match_shared_reference(shared_folder):
    folder = ImageFolder(shared_folder, IMAGENET / "imagenet_class_index.json")
    batches = list(iterate_batches(folder, 32, train=False, num_threads=2))
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    images = np.concatenate([x for x, _ in batches])
    assert images.shape == (100, 224, 224, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), folder.labels)
    with np.load(IMAGENET / "sample_224_subset100.npz") as z:
        reference = z["images"]  # resize 256 (bicubic, longer side rounded) + center crop 224 (floor)
    diff = np.abs(images.astype(np.int16) - reference).mean(axis=(1, 2, 3))
    assert diff.mean() < 4 and diff.max() < 25  # same images, same framing; filters and offsets differ


def test_batches_deterministic_across_threads_and_batch_sizes(small_tree):
    folder = ImageFolder(small_tree)

    def run(**kwargs):
        batch_size = kwargs.pop("batch_size", 5)
        options = dict(train=True, seed=7, size=32, num_threads=1, prefetch=2) | kwargs
        batches = list(iterate_batches(folder, batch_size, **options))
        return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])

    images, labels = run()
    assert images.shape == (24, 32, 32, 3) and labels.dtype == np.int64
    assert sorted(labels) == sorted(folder.labels) and not np.array_equal(labels, folder.labels)
    for kwargs in [dict(num_threads=2), dict(num_threads=3, prefetch=1), dict(batch_size=24), dict()]:
        other_images, other_labels = run(**kwargs)
        np.testing.assert_array_equal(other_images, images)
        np.testing.assert_array_equal(other_labels, labels)
    assert not np.array_equal(run(seed=8)[0], images)
    assert not np.array_equal(run(seed=(7, 1))[0], images)
    unshuffled, unshuffled_labels = run(shuffle=False)  # same crops per image, in folder order
    np.testing.assert_array_equal(unshuffled_labels, folder.labels)
    order = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(0,))).permutation(len(folder))
    np.testing.assert_array_equal(unshuffled[order], images)


def test_drop_last_and_partial_batch(small_tree):
    folder = ImageFolder(small_tree)
    kwargs = dict(train=False, size=32, resize=40, num_threads=2)
    sizes = [len(y) for _, y in iterate_batches(folder, 10, **kwargs)]
    assert sizes == [10, 10, 4]
    batches = list(iterate_batches(folder, 10, drop_last=True, **kwargs))
    assert [x.shape for x, _ in batches] == [(10, 32, 32, 3)] * 2
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), folder.labels[:20])
    expected = eval_transform(load_image(folder.samples[13][0]), 32, 40)
    np.testing.assert_array_equal(batches[1][0][3], expected)
    assert list(iterate_batches(folder, 100, drop_last=True, **kwargs)) == []


def test_in_flight_batches_are_bounded(monkeypatch, small_tree):
    folder = ImageFolder(small_tree)
    decoded, lock = [0], threading.Lock()
    original = imagenet.load_image

    def counting_load(path):
        with lock:
            decoded[0] += 1
        return original(path)

    monkeypatch.setattr(imagenet, "load_image", counting_load)
    batch_size, prefetch = 3, 2
    ahead, consumed = [], 0
    stream = iterate_batches(folder, batch_size, train=False, size=32, resize=40, num_threads=2,
                             prefetch=prefetch)
    for x, _ in stream:
        consumed += len(x)
        time.sleep(0.03)  # a slow consumer: the decoders run ahead as far as they may
        ahead.append(decoded[0] - consumed)
    assert max(ahead) <= prefetch * batch_size
    assert max(ahead) >= batch_size  # they did run ahead
    assert decoded[0] == len(folder)


def test_stopping_early_cancels_queued_decodes(monkeypatch, small_tree):
    decoded, original = [], imagenet.load_image

    def slow_load(path):
        decoded.append(path)
        time.sleep(0.15)
        return original(path)

    monkeypatch.setattr(imagenet, "load_image", slow_load)
    stream = iterate_batches(ImageFolder(small_tree), 2, train=False, size=32, resize=40, num_threads=1,
                             prefetch=2)
    next(stream)  # 3 batches (6 images) submitted, 2 decoded, the 3rd under way
    stream.close()
    finished = len(decoded)
    assert finished <= 4  # the queued decodes were dropped (the slack covers a late close)
    time.sleep(0.2)
    assert len(decoded) == finished


def test_progress_bar_and_argument_errors(small_tree, capsys):
    folder = ImageFolder(small_tree)
    assert sum(len(y) for _, y in iterate_batches(folder, 8, train=False, size=32, resize=40,
                                                  progress=True)) == 24
    assert "24/24" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch_size"):
        iterate_batches(folder, 0, train=False)
    with pytest.raises(ValueError, match="num_threads"):
        iterate_batches(folder, 4, train=False, num_threads=0)
    with pytest.raises(ValueError, match="resize"):
        iterate_batches(folder, 4, train=False, size=64, resize=32)
    with pytest.raises(TypeError, match="ImageFolder"):
        iterate_batches(str(small_tree), 4, train=False)
