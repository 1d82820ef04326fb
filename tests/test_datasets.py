"""Dataset loaders on small files written here in the real formats, and on ../shared/data."""
import hashlib
import io
import os
import pathlib
import pickle
import struct
import tarfile
import urllib.error

import numpy as np
import pytest
from PIL import Image

from tangentless.benchmarks import datasets
from tangentless.benchmarks.datasets import (ChecksumError, DatasetNotAvailable, balanced_subset, data_dir,
                                             imagenetv2_folder, load_cifar10, load_cifar10_1, load_folder_arrays,
                                             load_image_folder, load_npz_images)

from conftest import SHARED_DATA


# ------------------------------------------------------------------ CIFAR-10 files in the real format

def py2_pickle(obj) -> bytes:
    """obj pickled as Python 2's cPickle wrote the official CIFAR-10 batches (protocol 2): bytes as py2
    str (SHORT_BINSTRING / BINSTRING), uint8 arrays through numpy.core.multiarray._reconstruct with a
    dtype('u1') state, as numpy 1.x reduced them."""
    out = bytearray(b"\x80\x02")

    def put(o):
        if o is None:
            out.extend(b"N")
        elif isinstance(o, bool):
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.extend(b"K" + bytes([o]) if 0 <= o < 256 else b"J" + struct.pack("<i", o))
        elif isinstance(o, bytes):
            out.extend(b"U" + bytes([len(o)]) + o if len(o) < 256 else b"T" + struct.pack("<I", len(o)) + o)
        elif isinstance(o, (tuple, list, dict)):
            out.extend({tuple: b"(", list: b"](", dict: b"}("}[type(o)])
            for item in (o.items() if isinstance(o, dict) else o):
                for x in (item if isinstance(o, dict) else (item,)):
                    put(x)
            out.extend({tuple: b"t", list: b"e", dict: b"u"}[type(o)])
        else:
            assert isinstance(o, np.ndarray) and o.dtype == np.uint8
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            put((0,))
            put(b"b")
            out.extend(b"\x87R(")  # TUPLE3 REDUCE, MARK of the state tuple
            put(1)
            put(tuple(o.shape))
            out.extend(b"cnumpy\ndtype\n")
            put((b"u1", 0, 1))
            out.extend(b"R")
            put((3, b"|", None, None, None, -1, -1, 0))
            out.extend(b"b")  # BUILD the dtype
            put(False)
            put(o.tobytes())
            out.extend(b"tb")  # TUPLE, BUILD the array
    put(obj)
    return bytes(out + b".")


def chw_rows(images):
    """HWC uint8 images -> the official (N, 3072) rows: 1024 red, 1024 green, 1024 blue, each row-major."""
    return np.stack([np.concatenate([img[:, :, c].ravel() for c in range(3)]) for img in images])


def make_split(seed, n):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def batch_bytes(images, labels, name):
    return py2_pickle({b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                       b"data": chw_rows(images), b"filenames": [b"img_%d.png" % i for i in range(len(labels))]})


def write_archive(path, splits, replace=None):
    """A cifar-10-python.tar.gz with the official members; splits: {batch name: (images, labels)}."""
    members = {name: batch_bytes(*splits[name], name) for name in splits}
    members["batches.meta"] = py2_pickle({b"num_cases_per_batch": 10000, b"num_vis": 3072,
                                          b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                                                           b"dog", b"frog", b"horse", b"ship", b"truck"]})
    members.update(replace or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return members


def official(monkeypatch, path):
    """Make path the 'official' archive: its md5 and size become the expected ones."""
    data = path.read_bytes()
    monkeypatch.setattr(datasets, "CIFAR10_MD5", hashlib.md5(data).hexdigest())
    monkeypatch.setattr(datasets, "CIFAR10_SIZE", len(data))


BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """tmp_path/cifar-10-python.tar.gz (3 images per train batch, 4 test) registered as official;
    returns (root, {batch name: (images, labels)})."""
    splits = {name: make_split(i, 4 if name == "test_batch" else 3) for i, name in enumerate(BATCH_NAMES)}
    write_archive(tmp_path / "cifar-10-python.tar.gz", splits)
    official(monkeypatch, tmp_path / "cifar-10-python.tar.gz")
    return tmp_path, splits


def test_fake_batches_are_valid_official_pickles():
    """The writer above is what an unrestricted pickle.load(encoding='bytes') reads as the CIFAR docs say."""
    images, labels = make_split(0, 2)
    batch = pickle.loads(batch_bytes(images, labels, "data_batch_1"), encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (2, 3072)
    np.testing.assert_array_equal(batch[b"data"], chw_rows(images))
    assert batch[b"labels"] == labels.tolist()


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TANGENTLESS_DATA", str(tmp_path / "data"))
    assert data_dir() == tmp_path / "data"
    monkeypatch.delenv("TANGENTLESS_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "tangentless"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "tangentless"


def test_archive_loads_hwc_in_official_order(fake_cifar, monkeypatch):
    root, splits = fake_cifar
    # a hand-made first image with known per-channel values replaces batch 1's first image
    known = np.zeros((32, 32, 3), np.uint8)
    known[..., 0] = np.arange(32)[:, None]          # red = row
    known[..., 1] = np.arange(32)[None, :] + 100    # green = 100 + column
    known[..., 2] = 255                             # blue
    known[5, 7] = (1, 2, 3)
    splits["data_batch_1"][0][0] = known
    write_archive(root / "cifar-10-python.tar.gz", splits)
    official(monkeypatch, root / "cifar-10-python.tar.gz")

    images, labels = load_cifar10("train", root=root)
    assert images.shape == (15, 32, 32, 3) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert labels.dtype == np.int64
    assert tuple(images[0, 5, 7]) == (1, 2, 3) and tuple(images[0, 31, 0]) == (31, 100, 255)
    assert tuple(images[0, 0, 31]) == (0, 131, 255)
    np.testing.assert_array_equal(images, np.concatenate([splits[f"data_batch_{i}"][0] for i in range(1, 6)]))
    np.testing.assert_array_equal(labels, np.concatenate([splits[f"data_batch_{i}"][1] for i in range(1, 6)]))
    test_images, test_labels = load_cifar10("test", root=root)
    np.testing.assert_array_equal(test_images, splits["test_batch"][0])
    np.testing.assert_array_equal(test_labels, splits["test_batch"][1])
    assert (root / "cifar-10-python.tar.gz.verified").is_file()
    assert {p.name for p in root.glob("cifar-10-*.npz")} == {"cifar-10-train.npz", "cifar-10-test.npz"}
    assert not list(root.glob(".*part"))
    with pytest.raises(ValueError, match="split must be one of"):
        load_cifar10("validation", root=root)


def test_checksum_is_verified_once_and_recorded(fake_cifar, monkeypatch):
    root, _ = fake_cifar
    load_cifar10("test", root=root)
    hashed = []
    monkeypatch.setattr(datasets, "_md5_file", lambda path: hashed.append(path) or "0" * 32)
    load_cifar10("test", root=root)
    assert hashed == []  # the .verified record matched: no rehash
    os.utime(root / "cifar-10-python.tar.gz", ns=(1, 1))  # a changed file is hashed again
    with pytest.raises(ChecksumError):
        load_cifar10("test", root=root)
    assert hashed == [root / "cifar-10-python.tar.gz"]


def test_cache_is_reused_and_invalidated(fake_cifar, monkeypatch):
    root, splits = fake_cifar
    load_cifar10("test", root=root)

    def no_decoding(path):
        raise AssertionError("decoded the archive although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(datasets, "_decode_cifar10_archive", no_decoding)
        images, _ = load_cifar10("test", root=root)
        np.testing.assert_array_equal(images, splits["test_batch"][0])
    # another archive (md5) invalidates the cache
    splits["test_batch"] = make_split(99, 5)
    write_archive(root / "cifar-10-python.tar.gz", splits)
    official(monkeypatch, root / "cifar-10-python.tar.gz")
    images, labels = load_cifar10("test", root=root)
    np.testing.assert_array_equal(images, splits["test_batch"][0])
    with np.load(root / "cifar-10-test.npz") as cache:
        assert len(cache["images"]) == 5 and str(cache["source_md5"]) == datasets.CIFAR10_MD5
    # an unreadable cache is rebuilt
    (root / "cifar-10-test.npz").write_bytes(b"garbage")
    np.testing.assert_array_equal(load_cifar10("test", root=root)[1], labels)
    assert len(np.load(root / "cifar-10-test.npz")["labels"]) == 5


def test_read_only_folder_still_loads(fake_cifar, monkeypatch):
    root, splits = fake_cifar

    def refuse(path, write):
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(datasets, "_atomic_write", refuse)
    with pytest.warns(UserWarning, match="could not write"):
        images, _ = load_cifar10("test", root=root)
    np.testing.assert_array_equal(images, splits["test_batch"][0])


def test_checksum_mismatch_is_reported(fake_cifar, monkeypatch):
    root, _ = fake_cifar
    monkeypatch.setattr(datasets, "CIFAR10_MD5", "0123456789abcdef0123456789abcdef")
    with pytest.raises(ChecksumError, match=r"cifar-10-python.tar.gz has md5 .*expected 0123456789abcdef"):
        load_cifar10("train", root=root)
    assert (root / "cifar-10-python.tar.gz").exists()  # the user's file is reported, not deleted
    assert not (root / "cifar-10-train.npz").exists()


def test_truncated_archive_is_reported(fake_cifar, monkeypatch):
    root, _ = fake_cifar
    path = root / "cifar-10-python.tar.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ChecksumError, match=rf"{path.name} is \d+ bytes, expected {datasets.CIFAR10_SIZE}"):
        load_cifar10("train", root=root)
    # had the checksum matched (it cannot for the real file), the archive reader would still refuse it
    official(monkeypatch, path)
    with pytest.raises(ValueError, match="cannot read the archive"):
        load_cifar10("train", root=root)


def test_archive_missing_a_batch(tmp_path, monkeypatch):
    splits = {name: make_split(0, 2) for name in BATCH_NAMES if name != "data_batch_3"}
    write_archive(tmp_path / "cifar-10-python.tar.gz", splits)
    official(monkeypatch, tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(ValueError, match="lacks cifar-10-batches-py/data_batch_3"):
        load_cifar10("test", root=tmp_path)


class Exploit:
    """Pickles as a call of os.system: an unrestricted pickle.load would run the command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload, message", [
    ("exploit", r"refused to load the global (posix|nt)\.system"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": Exception()}),
     "refused to load the global builtins.Exception"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), r"uint8 \(N, 3072\)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "ints in 0..9"),
    (pickle.dumps([1, 2]), "is a dict; got list"),
    (b"\x80\x02}q\x00(U\x04data", "not a readable CIFAR-10 batch"),
])
def test_forbidden_or_malformed_pickles_are_refused(fake_cifar, monkeypatch, payload, message):
    root, splits = fake_cifar
    marker = root / "pwned"
    if payload == "exploit":
        payload = pickle.dumps({b"data": Exploit(marker), b"labels": []})
    write_archive(root / "cifar-10-python.tar.gz", splits, replace={"test_batch": payload})
    official(monkeypatch, root / "cifar-10-python.tar.gz")
    with pytest.raises(ValueError, match=message) as err:
        load_cifar10("test", root=root)
    assert "test_batch" in str(err.value)
    assert not marker.exists()


def test_extracted_folder(fake_cifar, monkeypatch):
    root, splits = fake_cifar
    folder = root / "extracted"
    with tarfile.open(root / "cifar-10-python.tar.gz") as tar:
        tar.extractall(folder, filter="data")
    batch_md5 = {name: hashlib.md5((folder / "cifar-10-batches-py" / name).read_bytes()).hexdigest()
                 for name in BATCH_NAMES}
    monkeypatch.setattr(datasets, "CIFAR10_BATCH_MD5", batch_md5)
    images, labels = load_cifar10("test", root=folder, download=False)
    np.testing.assert_array_equal(images, splits["test_batch"][0])
    np.testing.assert_array_equal(labels, splits["test_batch"][1])
    assert len(load_cifar10("train", root=folder)[0]) == 15
    (folder / "cifar-10-batches-py" / "test_batch").write_bytes(b"corrupt")
    with pytest.raises(ChecksumError, match=rf"test_batch has md5 .*expected {batch_md5['test_batch']}"):
        load_cifar10("test", root=folder)
    (folder / "cifar-10-batches-py" / "data_batch_2").unlink()
    with pytest.raises(DatasetNotAvailable, match="data_batch_2 not found"):
        load_cifar10("train", root=folder)


# ------------------------------------------------------------------------------------------- download

class FakeResponse(io.BytesIO):
    """urlopen's response serving data; raises error after fail_after bytes."""

    def __init__(self, data, fail_after=None, error=ConnectionResetError("connection reset by peer")):
        super().__init__(data)
        self.fail_after, self.error = fail_after, error

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise self.error
        return super().read(size if self.fail_after is None else min(size, self.fail_after - self.tell()))


@pytest.fixture
def served_archive(tmp_path, monkeypatch):
    """The bytes of a fake official archive (not in the download folder) and the list of urlopen calls."""
    source = tmp_path / "source.tar.gz"
    splits = {name: make_split(i, 2) for i, name in enumerate(BATCH_NAMES)}
    write_archive(source, splits)
    official(monkeypatch, source)
    return source.read_bytes(), splits


def serve(monkeypatch, response):
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        if isinstance(response, Exception):
            raise response
        return response

    monkeypatch.setattr(datasets.urllib.request, "urlopen", urlopen)
    return calls


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download(served_archive, tmp_path, monkeypatch):
    data, splits = served_archive
    calls = serve(monkeypatch, FakeResponse(data))
    root = tmp_path / "new" / "folder"
    images, labels = load_cifar10("test", root=root)
    assert calls == [datasets.CIFAR10_URL]
    assert (root / "cifar-10-python.tar.gz").read_bytes() == data
    np.testing.assert_array_equal(images, splits["test_batch"][0])
    assert leftovers(root) == ["cifar-10-python.tar.gz", "cifar-10-python.tar.gz.verified",
                               "cifar-10-test.npz", "cifar-10-train.npz"]
    load_cifar10("train", root=root)
    assert len(calls) == 1  # not downloaded again


def test_interrupted_download_leaves_nothing(served_archive, tmp_path, monkeypatch):
    data, _ = served_archive
    serve(monkeypatch, FakeResponse(data, fail_after=len(data) // 2))
    with pytest.raises(DatasetNotAvailable, match=rf"broke off after {len(data) // 2} of {len(data)} bytes"):
        load_cifar10("train", root=tmp_path / "d")
    assert leftovers(tmp_path / "d") == []
    serve(monkeypatch, FakeResponse(data, fail_after=len(data) // 2, error=KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        load_cifar10("train", root=tmp_path / "d")
    assert leftovers(tmp_path / "d") == []


def test_download_with_wrong_bytes_is_deleted(served_archive, tmp_path, monkeypatch):
    data, _ = served_archive
    for wrong in (data[:-1] + bytes([data[-1] ^ 1]), data[:-10], data + b"extra"):
        serve(monkeypatch, FakeResponse(wrong))
        with pytest.raises(ChecksumError, match=rf"expected {len(data)} bytes with md5 {datasets.CIFAR10_MD5}; "
                                                "it was deleted"):
            load_cifar10("train", root=tmp_path / "d")
        assert leftovers(tmp_path / "d") == []


def test_no_network_says_where_to_put_the_archive(tmp_path, monkeypatch):
    serve(monkeypatch, urllib.error.URLError("[Errno -3] Temporary failure in name resolution"))
    root = tmp_path / "d"
    with pytest.raises(DatasetNotAvailable) as err:
        load_cifar10("train", root=root)
    message = str(err.value)
    assert "name resolution" in message and datasets.CIFAR10_URL in message
    assert f"put it at {root / 'cifar-10-python.tar.gz'}" in message and "170498071 bytes" in message
    assert leftovers(root) == []
    calls = serve(monkeypatch, AssertionError("download=False must not download"))
    with pytest.raises(DatasetNotAvailable, match="CIFAR-10 not found"):
        load_cifar10("train", root=root, download=False)
    assert calls == []


# ---------------------------------------------------------------------------------------- CIFAR-10.1

def test_cifar10_1_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(10, dtype=np.int32), 2)  # int32, as the official labels file
    np.save(tmp_path / "cifar10.1_v6_data.npy", images)
    np.save(tmp_path / "cifar10.1_v6_labels.npy", labels)
    x, y = load_cifar10_1(tmp_path)
    np.testing.assert_array_equal(x, images)
    assert y.dtype == np.int64 and y.tolist() == labels.tolist()
    with pytest.raises(DatasetNotAvailable, match=r"cifar10.1_v4_data.npy and cifar10.1_v4_labels.npy not "
                                                  r"found.*github.com/modestyachts/CIFAR-10.1"):
        load_cifar10_1(tmp_path, version="v4")


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, int), r"expected uint8 \(N, 32, 32, 3\)"),
    (np.zeros((4, 32, 32), np.uint8), np.zeros(4, int), r"expected uint8 \(N, 32, 32, 3\)"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4), "expected integer labels"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(5, int), "4 images but cifar10.1_v6_labels.npy 5 labels"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 2, 10]), r"labels must be in 0..9, found 0..10"),
    (b"not an npy file", np.zeros(4, int), "not a readable .npy"),
    ("npz", np.zeros(4, int), "an .npz archive"),
    (np.zeros((4, 32, 32, 3), np.uint8), "missing", "cifar10.1_v6_labels.npy not found"),
])
def test_cifar10_1_bad_files(tmp_path, images, labels, message):
    for kind, content in (("data", images), ("labels", labels)):
        path = tmp_path / f"cifar10.1_v6_{kind}.npy"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, np.ndarray):
            np.save(path, content)
        elif content == "npz":
            with open(path, "wb") as file:
                np.savez(file, images=np.zeros(1))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_cifar10_1(tmp_path)


# ------------------------------------------------------------------------------------ image folders

def write_png(path, color, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_imagenetv2_folder_labels_are_the_folder_numbers(tmp_path):
    for name, color in (("0", (255, 0, 0)), ("2", (0, 255, 0)), ("10", (0, 0, 255))):
        for j in range(2):
            write_png(tmp_path / "v2" / name / f"{j}.png", color)
    folder = imagenetv2_folder(tmp_path / "v2")
    assert len(folder.classes) == 1000 and folder.labels.tolist() == [0, 0, 10, 10, 2, 2]  # sorted "0","10","2"
    assert load_image_folder(tmp_path / "v2").labels.tolist() == [0, 0, 1, 1, 2, 2]  # torchvision's rule
    images, labels = load_folder_arrays(folder, size=8, resize=8)
    assert images.shape == (6, 8, 8, 3) and images.dtype == np.uint8 and labels.tolist() == [0, 0, 10, 10, 2, 2]
    assert tuple(images[2, 4, 4]) == (0, 0, 255) and tuple(images[4, 0, 0]) == (0, 255, 0)
    images, labels = load_folder_arrays(folder, size=8, resize=8, limit=3)  # evenly spaced: samples 0, 2, 4
    assert images.shape == (3, 8, 8, 3) and labels.tolist() == [0, 10, 2] and len(folder) == 6
    _, labels = load_folder_arrays(tmp_path / "v2", size=8, resize=10)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_folder_arrays(folder, limit=0)
    write_png(tmp_path / "v2" / "n01440764" / "a.png", (0, 0, 0))
    with pytest.raises(ValueError, match=r"named 0..999 .*\['n01440764'\]"):
        imagenetv2_folder(tmp_path / "v2")
    with pytest.raises(FileNotFoundError, match="not found"):
        imagenetv2_folder(tmp_path / "absent")


# ------------------------------------------------------------------------------------------ subsets

def test_balanced_subset_properties():
    labels = np.random.default_rng(0).integers(0, 10, 1000)
    for n in (10, 100, 200):
        idx = balanced_subset(labels, n, seed=3)
        assert idx.shape == (n,) and idx.dtype == np.int64
        assert np.all(np.diff(idx) > 0)  # sorted, no repeats
        assert np.bincount(labels[idx], minlength=10).tolist() == [n // 10] * 10
    np.testing.assert_array_equal(balanced_subset(labels, 100, seed=3), balanced_subset(labels, 100, seed=3))
    assert not np.array_equal(balanced_subset(labels, 100, seed=3), balanced_subset(labels, 100, seed=4))
    # nested in n for one seed
    assert set(balanced_subset(labels, 10, seed=3)) <= set(balanced_subset(labels, 50, seed=3))
    # a class's draw does not depend on which other classes are requested, nor on their order
    both = balanced_subset(labels, 20, seed=1, classes=[7, 2])
    np.testing.assert_array_equal(both, balanced_subset(labels, 20, seed=1, classes=[2, 7]))
    assert set(balanced_subset(labels, 10, seed=1, classes=[7])) <= set(both)
    assert set(labels[both]) == {2, 7}


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 15}, r"positive multiple of the number of classes \(10\)"),
    ({"n": 0}, "positive multiple"),
    ({"n": 10, "classes": [1, 1]}, "distinct non-negative"),
    ({"n": 10, "classes": [-1]}, "distinct non-negative"),
    ({"n": 10, "seed": -1}, "seed must be a non-negative integer"),
    ({"n": 10, "labels": np.zeros(5)}, "1-D integer array"),
    ({"n": 30, "classes": [0, 11]}, "class 11 has 0 examples, fewer than the 15"),
    ({"n": 10 * 200}, r"class \d has \d+ examples, fewer than the 200 per class"),
])
def test_balanced_subset_errors(kwargs, message):
    kwargs = {"labels": np.random.default_rng(0).integers(0, 10, 1000), "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        balanced_subset(**kwargs)


# ------------------------------------------------------------------------------- ../shared/data

def shared(*parts) -> pathlib.Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


def test_shared_cifar10_subset_npz():
    images, labels = load_npz_images(shared("cifar10", "train.npz"))
    assert images.shape == (4000, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert images[0, 0, :5, 0].tolist() == [59, 43, 50, 68, 98]  # train[0], red, first row
    test_images, test_labels = load_npz_images(shared("cifar10", "test.npz"))
    assert test_images[0, 0, :6, 0].tolist() == [158, 159, 165, 166, 160, 156]
    assert hashlib.sha256(test_images[0].tobytes()).hexdigest() == \
        "af12e1241a1e7a0c9ba326825279bef5fe961ceb5f95212a99f9b1f22711f913"
    assert test_labels[:20].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    idx = balanced_subset(labels, 1280, seed=0)  # the kernel paper's largest n fits the subset (>= 366/class)
    assert np.bincount(labels[idx]).tolist() == [128] * 10


def test_shared_cifar10_1_labels_with_loader(tmp_path):
    """The real v6 labels file (images are not in ../shared/data) through load_cifar10_1, with blank images."""
    labels = np.load(shared("cifar10_1", "cifar10.1_v6_labels.npy"))
    assert labels.shape == (2000,) and np.bincount(labels).tolist() == [200] * 10
    (tmp_path / "cifar10.1_v6_labels.npy").write_bytes(shared("cifar10_1", "cifar10.1_v6_labels.npy").read_bytes())
    np.save(tmp_path / "cifar10.1_v6_data.npy", np.zeros((2000, 32, 32, 3), np.uint8))
    _, loaded = load_cifar10_1(tmp_path)
    assert loaded.dtype == np.int64 and loaded.tolist() == labels.tolist()
    assert len(balanced_subset(loaded, 2000, seed=0)) == 2000
