"""Training streamed from an ImageFolder (tangentless.scattering.train.fit_folder): it learns, resumes bit for
bit, refuses another folder's checkpoint, never holds more than a few batches, and rejects bad arguments."""
import shutil
import threading
import weakref

import jax
import numpy as np
import pytest
from PIL import Image

from tangentless.kernels._shared.images import to_unit_range
from tangentless.kernels._shared.standardize import fit_standardization
from tangentless.scattering import frontend, imagenet, model, train
from tangentless.scattering.imagenet import ImageFolder
from tangentless.scattering.sparse_coding import ISTCConfig

SIZE, RESIZE = 32, 40
CLASSES, PER_CLASS = ("blue", "green", "red"), 8


def _image(label: int, rng) -> np.ndarray:
    """48x48 RGB: the class's channel bright in stripes (horizontal, vertical, checker by class), plus noise."""
    yy, xx = np.mgrid[:48, :48]
    pattern = [(yy // 4) % 2, (xx // 4) % 2, (yy // 4 + xx // 4) % 2][label]
    img = rng.integers(0, 70, (48, 48, 3))
    img[..., 2 - label] += 120 + 60 * pattern        # blue, green, red: channels 2, 1, 0
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    """3 classes x 8 images, PNG and JPEG (quality 95) alternating."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            Image.fromarray(_image(label, rng)).save(root / name / f"{i:02d}.{'png' if i % 2 else 'jpg'}",
                                                     quality=95)
    return root


@pytest.fixture(scope="module")
def folder(folder_root):
    return ImageFolder(folder_root)


def _patches(images):
    """Cheap stand-in feature function: 4x4 space-to-depth, (B, 32, 32, 3) -> (B, 8, 8, 48)."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // 4, 4, w // 4, 4, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 4, w // 4, 16 * c)


PATCHES = jax.jit(_patches)


def _eval_images(folder, indices):
    """Independent reference: the evaluation transform of the given samples, uint8 (n, SIZE, SIZE, 3)."""
    return np.stack([imagenet.eval_transform(imagenet.load_image(folder.samples[i][0]), SIZE, RESIZE)
                     for i in indices])


@pytest.mark.slow
def test_streamed_training_learns_and_evaluates(folder):
    scattering = frontend.scattering_fn((SIZE, SIZE, 3), 2)
    config = model.ModelConfig(n_classes=3, projection=16, istc=ISTCConfig(dictionary_size=32, n_iter=3))
    tc = train.TrainConfig(epochs=4, batch_size=6, lr=0.01, augment=True, eval_batch_size=10)
    result = train.fit_folder(config, tc, folder, scattering, size=SIZE, resize=RESIZE, eval_folder=folder,
                              num_threads=2, progress=True)
    first, last = result.history[0], result.history[-1]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert last["loss"] < first["loss"], [h["loss"] for h in result.history]
    assert last["test_top1"] >= 0.75, [h["test_top1"] for h in result.history]      # chance: 1/3
    assert last["test_top5"] == 1.0 and last["images_per_s"] > 0 and 0 < last["coherence"] < 1

    # standardization: all 24 images (fewer than standardization_images), evaluation transform
    stats = fit_standardization(np.asarray(scattering(to_unit_range(
        _eval_images(folder, range(len(folder)))))))
    np.testing.assert_allclose(result.state["standardize"]["mean"], stats["mean"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.state["standardize"]["std"], stats["std"], rtol=1e-5)

    # streamed evaluation (batches of 10, the last one padded) equals one batch of all 24 references
    again = train.evaluate_folder(result.params, result.state, config, folder, scattering, size=SIZE,
                                  resize=RESIZE, batch_size=7)
    assert again["top1"] == pytest.approx(last["test_top1"]) and again["loss"] == pytest.approx(last["test_loss"])
    direct = train.evaluate(result.params, result.state, config, folder.labels,
                            images=_eval_images(folder, range(len(folder))), feature_fn=scattering, batch_size=24)
    assert direct["top1"] == pytest.approx(again["top1"]) and direct["loss"] == pytest.approx(again["loss"], rel=1e-4)


def _run(folder, checkpoint_dir, epochs, size=SIZE, standardization_images=10, lr=0.05):
    config = model.ModelConfig(n_classes=3, projection=8, istc=ISTCConfig(dictionary_size=16, n_iter=2, tied=False),
                               head="mlp", hidden=16)
    tc = train.TrainConfig(epochs=epochs, batch_size=8, lr=lr, step_epochs=1, augment=True, seed=3)
    return train.fit_folder(config, tc, folder, PATCHES, size=size, resize=RESIZE,
                            standardization_images=standardization_images, checkpoint_dir=checkpoint_dir,
                            num_threads=2)


def _without_timing(history):
    return [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in history]


@pytest.mark.slow
def test_resume_is_bit_for_bit_and_another_folder_is_refused(folder, folder_root, tmp_path):
    interrupted = tmp_path / "interrupted"
    first = _run(folder, interrupted, 1)
    resumed = _run(folder, interrupted, 2)
    straight = _run(folder, tmp_path / "straight", 2)
    for a, b in zip(jax.tree_util.tree_leaves((resumed.params, resumed.state)),
                    jax.tree_util.tree_leaves((straight.params, straight.state))):
        np.testing.assert_array_equal(a, b)
    assert _without_timing(resumed.history) == _without_timing(straight.history)
    assert _without_timing(resumed.history[:1]) == _without_timing(first.history)
    assert [h["lr"] for h in resumed.history] == pytest.approx([0.05, 0.005])

    # standardization: the first 10 images of the documented seeded order, evaluation transform
    images, _ = next(imagenet.iterate_batches(folder, 10, train=False, shuffle=True, seed=(3, 0, 1),
                                              size=SIZE, resize=RESIZE))
    stats = fit_standardization(np.asarray(_patches(to_unit_range(images))))
    np.testing.assert_allclose(straight.state["standardize"]["mean"], stats["mean"], rtol=1e-6)
    np.testing.assert_allclose(straight.state["standardize"]["std"], stats["std"], rtol=1e-6)

    # the same files under another root are the same folder (relative paths): resumes, nothing to do
    moved = tmp_path / "moved"
    shutil.copytree(folder_root, moved)
    assert _run(ImageFolder(moved), interrupted, 2).history == resumed.history
    # same number of images, one renamed: another sample list
    (moved / "red" / "00.jpg").rename(moved / "red" / "99.jpg")
    with pytest.raises(train.CheckpointError, match="data.samples_sha256"):
        _run(ImageFolder(moved), interrupted, 3)
    with pytest.raises(train.CheckpointError, match="data.size"):
        _run(folder, interrupted, 3, size=16)
    with pytest.raises(train.CheckpointError, match="data.standardization_images"):
        _run(folder, interrupted, 3, standardization_images=12)
    with pytest.raises(train.CheckpointError, match="train.lr"):
        _run(folder, interrupted, 3, lr=0.1)


def test_training_streams_in_bounded_memory(folder, monkeypatch):
    """Each epoch decodes every image once, through iterate_batches(train=True, seed=(seed, epoch),
    drop_last=True), and never holds more than the loader's prefetch plus two batches."""
    lock, calls = threading.Lock(), []
    counts = {"loaded": 0, "yielded": 0, "alive": 0, "max_ahead": 0, "max_alive": 0}
    load_image, iterate_batches = imagenet.load_image, imagenet.iterate_batches

    def counting_load(path):
        with lock:
            counts["loaded"] += 1
        return load_image(path)

    def released():
        counts["alive"] -= 1

    def watched_batches(folder, batch_size, **options):
        calls.append(dict(options, batch_size=batch_size))
        for images, labels in iterate_batches(folder, batch_size, **options):
            counts["yielded"] += len(images)
            counts["alive"] += 1
            weakref.finalize(images, released)
            with lock:
                counts["max_ahead"] = max(counts["max_ahead"], counts["loaded"] - counts["yielded"])
            counts["max_alive"] = max(counts["max_alive"], counts["alive"])
            yield images, labels

    monkeypatch.setattr(imagenet, "load_image", counting_load)
    monkeypatch.setattr(imagenet, "iterate_batches", watched_batches)
    config = model.ModelConfig(n_classes=3, projection=8, sparse=False)
    tc = train.TrainConfig(epochs=2, batch_size=4, augment=True, seed=5, eval_batch_size=4)
    train.fit_folder(config, tc, folder, PATCHES, size=SIZE, resize=RESIZE, standardization_images=5,
                     num_threads=2, prefetch=1)

    stats_call, *epoch_calls = calls
    assert stats_call["train"] is False and stats_call["shuffle"] is True
    assert [(c["seed"], c["train"], c["shuffle"], c["drop_last"], c["batch_size"], c["size"], c["resize"])
            for c in epoch_calls] == [((5, e), True, True, True, 4, SIZE, RESIZE) for e in range(2)]
    assert counts["yielded"] == 8 + 2 * len(folder)           # 2 batches for 5 statistics images, 2 epochs
    assert counts["loaded"] - counts["yielded"] <= 4          # the statistics pass stops early
    assert counts["max_ahead"] <= 4                           # prefetch (1) x batch: decoded, not yet taken
    assert counts["max_alive"] <= 2                           # taken batches still referenced
    assert counts["alive"] == 0


def test_fit_folder_input_errors(folder, folder_root, tmp_path):
    config = model.ModelConfig(n_classes=3, projection=8, sparse=False)
    tc = train.TrainConfig(batch_size=4)

    def fit(folder=folder, config=config, tc=tc, feature_fn=PATCHES, size=SIZE, resize=RESIZE, **options):
        return train.fit_folder(config, tc, folder, feature_fn, size=size, resize=resize, **options)

    with pytest.raises(ValueError, match="batch_size 25 is larger than ImageFolder.*24 images"):
        fit(tc=train.TrainConfig(batch_size=25))
    with pytest.raises(ValueError, match="size <= resize"):
        fit(size=48, resize=40)
    with pytest.raises(ValueError, match="size <= resize"):
        fit(size=32.0)
    with pytest.raises(ValueError, match=r"labels of ImageFolder.* must be integers in \[0, 2\).* from 0 to 2"):
        fit(config=model.ModelConfig(n_classes=2, projection=8, sparse=False))
    with pytest.raises(ValueError, match=r"labels of ImageFolder.*4 classes.* must be integers in \[0, 3\).* 1 to 3"):
        fit(eval_folder=ImageFolder(folder_root, ["extra", *CLASSES]))     # red gets label 3
    with pytest.raises(TypeError, match="must be an imagenet.ImageFolder; got PosixPath"):
        fit(folder=folder_root)
    with pytest.raises(ValueError, match="needs a feature_fn"):
        fit(feature_fn=None)
    with pytest.raises(ValueError, match="standardization_images must be a positive integer"):
        fit(standardization_images=0)
    with pytest.raises(ValueError, match="num_threads must be a positive integer"):
        fit(num_threads=0)
    with pytest.raises(ValueError, match="images must have shape"):    # scattering_fn sized for other images
        fit(feature_fn=frontend.scattering_fn((64, 64, 3), 2))
    small = tmp_path / "small"
    (small / "a").mkdir(parents=True)
    Image.fromarray(_image(0, np.random.default_rng(1))).save(small / "a" / "0.png")
    with pytest.raises(ValueError, match="need at least 2 training images"):
        fit(folder=ImageFolder(small), tc=train.TrainConfig(batch_size=1))
