"""Image datasets as NHWC arrays. The embedded default is scikit-learn's bundled digits.

- :func:`load_digits_images`, :func:`load_npz_images`, :func:`load_packed_jpeg_npz`: local files.
- :func:`load_cifar10`: the official python archive, downloaded into :func:`data_dir` and verified by md5,
  or its extracted ``cifar-10-batches-py/`` folder; the pickled batches are read by an unpickler that
  builds nothing but numpy uint8 arrays, lists, bytes and ints.
- :func:`load_cifar10_1`: CIFAR-10.1's ``.npy`` pair (no download).
- :func:`load_image_folder`, :func:`imagenetv2_folder`, :func:`load_folder_arrays`: ImageNet-style folders
  through :class:`tangentless.scattering.imagenet.ImageFolder`.
- :func:`balanced_subset`: seeded class-balanced subsets, nested in n.
"""
from __future__ import annotations

import copy
import hashlib
import http.client
import io
import json
import os
import pathlib
import pickle
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from tqdm.auto import tqdm

from ..kernels._shared.atomic import atomic_write as _atomic_write  # a module name the tests patch
from .data_folder import data_dir, resolve_data
from ..scattering.imagenet import ImageFolder, iterate_batches


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 bundled 8x8 digits: images (N, 8, 8, 1) float32 in [0, 1], labels int64."""
    digits = load_digits()
    return (digits.images[..., None] / 16.0).astype(np.float32), digits.target.astype(np.int64)


def load_npz_images(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An .npz with ``images`` (N, H, W, C) (uint8 or float) and optionally ``labels`` (N,)."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, expected an .npz file")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ("images", "labels") if name in data.files}
            names = sorted(data.files)
    except (OSError, EOFError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz file ({type(err).__name__}: {err})") from None
    if "images" not in arrays:
        raise ValueError(f"{path} has no 'images' array (found {names})")
    images = arrays["images"]
    labels = integer_labels(arrays["labels"], f"{path}: 'labels'") if "labels" in arrays else None
    if images.ndim != 4:
        raise ValueError(f"{path}: 'images' must be (N, H, W, C); got shape {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def integer_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Labels (N,) as int64: integers, bools, or floats with integral values (1.0); ValueError
    naming ``name`` for anything else (0.5, NaN, text) rather than a silent truncation."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be (N,) labels; got shape {labels.shape}")
    if labels.dtype.kind in "iub":
        return labels.astype(np.int64)
    if labels.dtype.kind != "f":
        raise ValueError(f"{name} must be integer class labels; got dtype {labels.dtype}")
    bad = ~np.isfinite(labels) | (labels != np.round(labels)) | (np.abs(labels) > 2 ** 53)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be integer class labels; label {i} is {float(labels[i])!r}")
    return labels.astype(np.int64)


def load_packed_jpeg_npz(path: str | pathlib.Path, limit: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Images stored as concatenated JPEG files: ``jpeg`` (bytes as uint8), ``offsets`` (N+1,),
    ``labels`` (N,) (the layout of ``cifar10_jpeg/`` in the shared data folder). Returns uint8 (N, H, W, 3), int64."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            buffer, offsets, labels = data["jpeg"], data["offsets"], data["labels"]
    except KeyError as err:
        raise ValueError(f"{path} lacks the array {err} of the packed-JPEG layout") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz file ({type(err).__name__}: {err})") from None
    count = len(offsets) - 1 if limit is None else min(limit, len(offsets) - 1)
    if len(labels) != len(offsets) - 1 or np.any(np.diff(offsets) <= 0) or offsets[-1] > len(buffer):
        raise ValueError(f"{path}: offsets and labels do not describe the JPEG buffer")
    images = []
    for i in range(count):
        try:
            with Image.open(io.BytesIO(buffer[offsets[i]:offsets[i + 1]].tobytes())) as image:
                images.append(np.asarray(image.convert("RGB")))
        except OSError as err:
            raise ValueError(f"{path}: image {i} is not a valid JPEG ({err})") from None
    return np.stack(images), labels[:count].astype(np.int64)


class ChecksumError(ValueError):
    """A data file whose size or md5 is not the official one (truncated, corrupt or another file)."""


class DatasetNotAvailable(FileNotFoundError):
    """A dataset neither on disk nor downloadable (no network, or downloads not allowed)."""


def _try_atomic_write(path: pathlib.Path, write, what: str) -> None:
    """atomic_write, with a warning instead of an error where the folder is not writable (a read-only
    data folder still loads, just without the record or cache)."""
    try:
        _atomic_write(path, write)
    except OSError as err:
        warnings.warn(f"could not write the {what} {path} ({err}); continuing without it", stacklevel=3)


def _md5_file(path: pathlib.Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: pathlib.Path, md5: str, size: int | None = None) -> None:
    """ChecksumError naming path unless its size (if given) and md5 are the expected ones.

    A success is recorded in the sidecar ``<name>.verified`` (JSON: size, mtime_ns, md5), so a file whose
    size and modification time are unchanged is not hashed again (an in-place change keeping both would
    go unnoticed)."""
    fingerprint = _fingerprint(path, md5)
    try:
        if json.loads(path.with_name(path.name + ".verified").read_text()) == fingerprint:
            return
    except (OSError, ValueError):
        pass
    if size is not None and fingerprint["size"] != size:
        raise ChecksumError(f"{path} is {fingerprint['size']} bytes, expected {size} bytes with md5 {md5}: "
                            "truncated or not the official file; replace it with the official file")
    actual = _md5_file(path)
    if actual != md5:
        raise ChecksumError(f"{path} has md5 {actual}, expected {md5}: corrupt or not the official file; "
                            "replace it with the official file")
    _record_verified(path, fingerprint)


def _fingerprint(path: pathlib.Path, md5: str) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "md5": md5}


def _record_verified(path: pathlib.Path, fingerprint: dict) -> None:
    _try_atomic_write(path.with_name(path.name + ".verified"),
                      lambda out: out.write(json.dumps(fingerprint).encode()), "checksum record")


def _download(url: str, dest: pathlib.Path, size: int, md5: str) -> None:
    """url -> dest through a temporary file in dest's folder, checked for size and md5 before the atomic
    rename; a tqdm bar shows progress. DatasetNotAvailable without network or if the transfer breaks,
    ChecksumError for the wrong bytes; either way nothing is left behind."""
    by_hand = (f"Without network access, download {url} ({size} bytes, md5 {md5}) by other means and put "
               f"it at {dest} (or point $TANGENTLESS_DATA or root= at the folder holding it).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, received = hashlib.md5(), 0

    def write(out) -> None:
        nonlocal received
        try:
            response = urllib.request.urlopen(url, timeout=60)
        except (OSError, http.client.HTTPException) as err:  # URLError and HTTPError are OSErrors
            raise DatasetNotAvailable(f"could not download {url} ({err}). {by_hand}") from None
        with response, tqdm(total=size, unit="B", unit_scale=True, desc=dest.name) as bar:
            while True:
                try:
                    chunk = response.read(1 << 20)
                except (OSError, http.client.HTTPException) as err:
                    raise DatasetNotAvailable(f"the download of {url} broke off after {received} of {size} "
                                              f"bytes ({type(err).__name__}: {err}); nothing was saved. "
                                              f"{by_hand}") from None
                if not chunk:
                    break
                received += len(chunk)
                if received > size:
                    break
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        if received != size or digest.hexdigest() != md5:
            got = f"more than {size} bytes" if received > size else f"{received} bytes with md5 {digest.hexdigest()}"
            raise ChecksumError(f"the download of {url} gave {got}, expected {size} bytes with md5 {md5}; it "
                                f"was deleted. Try again later. {by_hand}")

    _atomic_write(dest, write)
    _record_verified(dest, _fingerprint(dest, md5))


# ------------------------------------------------------------------------------------------ CIFAR-10

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_SIZE = 170_498_071
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_SPLITS = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
# md5 of the files inside the archive (as torchvision checks them)
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}

# The official batches (Python 2 cPickle, protocol 2) reference exactly these globals: an ndarray is
# rebuilt by numpy's _reconstruct(ndarray, shape, typecode) with a dtype('u1', ...). numpy >= 2 moved the
# function to numpy._core; both names are accepted. ndarray.__reduce__ returns the function itself.
_NUMPY_RECONSTRUCT = np.zeros(0, np.uint8).__reduce__()[0]
_PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
                   ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
                   ("numpy", "ndarray"): np.ndarray,
                   ("numpy", "dtype"): np.dtype}


class _BatchUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, tuples, bytes, numbers and numpy arrays: every global other than numpy's
    array reconstruction and dtype is refused, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name}: CIFAR-10 batches hold "
                                         "only numpy arrays, lists and bytes") from None


def _parse_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch (dict with b'data' uint8 (N, 3072) rows R(1024) G(1024) B(1024), each channel
    row-major, and b'labels' N ints) -> images uint8 (N, 32, 32, 3), labels int64 (N,)."""
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # malformed pickles raise many exception types
        raise ValueError(f"{where} is not a readable CIFAR-10 batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{where}: a CIFAR-10 batch is a dict; got {type(batch).__name__}")
    batch = {key.decode("latin-1") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{where}: b'data' must be a uint8 (N, 3072) array; got {got}")
    if not (isinstance(labels, list) and len(labels) == len(data)
            and all(type(label) is int and 0 <= label < 10 for label in labels)):
        raise ValueError(f"{where}: b'labels' must be a list of {len(data)} ints in 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.array(labels, dtype=np.int64)


def _join(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Batches concatenated in order: C-contiguous images uint8 (N, 32, 32, 3), labels int64 (N,)."""
    images = np.empty((sum(len(b[1]) for b in batches), 32, 32, 3), np.uint8)  # one copy of the HWC views
    start = 0
    for batch_images, batch_labels in batches:
        images[start:start + len(batch_labels)] = batch_images
        start += len(batch_labels)
    return images, np.concatenate([b[1] for b in batches])


def _decode_cifar10_archive(archive: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both splits from the .tar.gz in one pass, without extracting anything to disk."""
    wanted = {f"{CIFAR10_FOLDER}/{name}": name for names in CIFAR10_SPLITS.values() for name in names}
    batches = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is not None and member.isfile():
                    batches[name] = _parse_batch(tar.extractfile(member).read(), f"{archive}: {member.name}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise ValueError(f"cannot read the archive {archive} ({type(err).__name__}: {err})") from None
    missing = [member for member, name in wanted.items() if name not in batches]
    if missing:
        raise ValueError(f"{archive} is not the CIFAR-10 python archive: it lacks {', '.join(missing)}")
    return {split: _join([batches[name] for name in names]) for split, names in CIFAR10_SPLITS.items()}


def _read_cache(path: pathlib.Path, source_md5: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (images, labels) if path holds a readable cache decoded from the archive with this md5:
    uint8 (N, 32, 32, 3) images and N integer labels in 0..9, checked on every load (the cache, like the
    ``.verified`` record that spares the archive's md5, is only a file next to the data)."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache["source_md5"]) != source_md5:
                return None
            images, labels = cache["images"], cache["labels"]
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    if (images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3) or labels.shape != images.shape[:1]
            or labels.dtype.kind not in "iu" or (len(labels) and (labels.min() < 0 or labels.max() > 9))):
        return None
    return images, labels.astype(np.int64)


def _write_cache(path: pathlib.Path, images: np.ndarray, labels: np.ndarray, source_md5: str) -> None:
    _try_atomic_write(path, lambda out: np.savez(out, images=images, labels=labels,
                                                 source_md5=np.array(source_md5)), "decoded-array cache")


def load_cifar10(split: str = "train", *, root: str | os.PathLike | None = None,
                 download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10: images uint8 (N, 32, 32, 3) RGB (HWC), labels int64 (N,) in the official order
    (train: data_batch_1..5, N = 50,000; test: test_batch, N = 10,000).

    root (default: :func:`data_dir`'s order) holds the official ``cifar-10-python.tar.gz`` or, failing that, its
    extracted ``cifar-10-batches-py/``. If neither is there and download is True, the archive (163 MiB) is
    downloaded into root. Files are checked against the official md5 once (a ``.verified`` record next to
    each), ChecksumError otherwise. The archive's decoded splits are cached as ``cifar-10-{train,test}.npz``
    next to it (rebuilt when unreadable or from another archive). DatasetNotAvailable where the data is
    absent and cannot be downloaded; ValueError for unreadable batches.
    """
    if split not in CIFAR10_SPLITS:
        raise ValueError(f"split must be one of {sorted(CIFAR10_SPLITS)}, got {split!r}")
    root = data_dir(root)
    archive, folder = root / CIFAR10_ARCHIVE, root / CIFAR10_FOLDER
    if not archive.is_file() and folder.is_dir():
        return _load_cifar10_folder(folder, split)
    if not archive.is_file():
        if not download:
            raise DatasetNotAvailable(f"CIFAR-10 not found: neither {archive} nor {folder}/ exists. Pass "
                                      f"download=True, or download {CIFAR10_URL} and put it there.")
        _download(CIFAR10_URL, archive, CIFAR10_SIZE, CIFAR10_MD5)
    _verify(archive, CIFAR10_MD5, CIFAR10_SIZE)
    cached = _read_cache(root / f"cifar-10-{split}.npz", CIFAR10_MD5)
    if cached is not None:
        return cached
    decoded = _decode_cifar10_archive(archive)
    for name, (images, labels) in decoded.items():
        _write_cache(root / f"cifar-10-{name}.npz", images, labels, CIFAR10_MD5)
    return decoded[split]


def _load_cifar10_folder(folder: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split from the extracted ``cifar-10-batches-py/``, each batch file checked against its md5."""
    batches = []
    for name in CIFAR10_SPLITS[split]:
        path = folder / name
        if not path.is_file():
            raise DatasetNotAvailable(f"{path} not found: {folder} is not a complete extraction of "
                                      f"{CIFAR10_ARCHIVE}")
        _verify(path, CIFAR10_BATCH_MD5[name])
        batches.append(_parse_batch(path.read_bytes(), str(path)))
    return _join(batches)


# ---------------------------------------------------------------------------------------- CIFAR-10.1

CIFAR10_1_URL = "https://github.com/modestyachts/CIFAR-10.1"


def _load_npy(path: pathlib.Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path} is not a readable .npy file ({type(err).__name__}: {err})") from None
    if not isinstance(array, np.ndarray):  # np.load returns an NpzFile for a zip archive
        array.close()
        raise ValueError(f"{path} is an .npz archive, not a .npy array")
    return array


def load_cifar10_1(root: str | os.PathLike | None = None, version: str = "v6") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10.1 (Recht et al. 2018), a re-collected CIFAR-10 test set: images uint8 (N, 32, 32, 3),
    labels int64 (N,) in 0..9 (N = 2,000 for v6, 200 per class; 2,021 for v4).

    Reads ``cifar10.1_{version}_data.npy`` and ``cifar10.1_{version}_labels.npy`` in root (default
    :func:`data_dir`); nothing is downloaded (DatasetNotAvailable says where to get them). ValueError for
    files of the wrong shape, dtype, length or label range.
    """
    root = data_dir(root)
    data_path, labels_path = (root / f"cifar10.1_{version}_{kind}.npy" for kind in ("data", "labels"))
    missing = [path.name for path in (data_path, labels_path) if not path.is_file()]
    if missing:
        raise DatasetNotAvailable(f"CIFAR-10.1 {version}: {' and '.join(missing)} not found in {root}. Download "
                                  f"{data_path.name} and {labels_path.name} from {CIFAR10_1_URL} (folder "
                                  "datasets/) and put them there.")
    images, labels = _load_npy(data_path), _load_npy(labels_path)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"{data_path}: expected uint8 (N, 32, 32, 3) images, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{labels_path}: expected integer labels (N,), got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{data_path.name} holds {len(images)} images but {labels_path.name} {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{labels_path}: labels must be in 0..9, found {labels.min()}..{labels.max()}")
    return images, labels.astype(np.int64)


# ----------------------------------------------------------------------------- ImageNet-style folders

def load_image_folder(root: str | os.PathLike, *, class_index=None) -> ImageFolder:
    """An ImageNet-style folder ``root/<class>/<images>`` as :class:`~tangentless.scattering.imagenet.
    ImageFolder` (class_index: None for sorted folder names, or e.g. the path of
    ``imagenet_class_index.json`` for the official ImageNet-1k labels of wnid folders)."""
    return ImageFolder(root, class_index=class_index)


def imagenetv2_folder(root: str | os.PathLike) -> ImageFolder:
    """ImageNetV2 (e.g. MatchedFrequency, 10,000 images): class folders named ``0`` .. ``999`` are the
    standard ImageNet-1k labels, so folder ``"17"`` gets label 17 (not its rank in sorted names)."""
    root = pathlib.Path(root)
    if root.is_dir():
        names = {str(i) for i in range(1000)}
        bad = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
                     and e.name not in names)
        if bad:
            raise ValueError(f"{root} is not in ImageNetV2's layout: class folders must be named 0..999 "
                             f"(the ImageNet-1k class indices); found {bad[:5]}")
    return ImageFolder(root, class_index={str(i): i for i in range(1000)})


def load_folder_arrays(folder, size: int = 224, resize: int = 256, limit: int | None = None, *,
                       progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A small evaluation set in memory: images uint8 (N, size, size, 3) after the evaluation transform
    (shorter side to `resize`, center crop `size`), labels int64 (N,).

    folder: an ImageFolder or a folder path (sorted-name labels). limit: at most this many images, evenly
    spaced over the folder's sorted samples (so classes keep their proportions), else all of them.
    """
    if not isinstance(folder, ImageFolder):
        folder = ImageFolder(folder)
    n = len(folder)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        if limit < n:
            keep = np.arange(limit) * n // limit
            folder = copy.copy(folder)
            folder.samples = [folder.samples[i] for i in keep]
            folder.labels = folder.labels[keep]
            n = limit
    images = np.empty((n, size, size, 3), np.uint8)
    start = 0
    for batch, _ in iterate_batches(folder, 64, train=False, size=size, resize=resize, progress=progress):
        images[start:start + len(batch)] = batch
        start += len(batch)
    return images, folder.labels.copy()


# ----------------------------------------------------------------------------------------- subsets

def balanced_subset(labels, n: int, *, seed: int, classes=None) -> np.ndarray:
    """Sorted indices int64 (n,) of a class-balanced subset: n / K examples of each of the K classes
    (default: the classes present in labels), drawn without replacement.

    Guarantees, for given labels and seed: reproducible; class c's examples are the first n / K of a
    permutation of c's positions seeded by (seed, c) alone, so subsets for growing n with one seed are
    nested (the kernel paper's n = 10, 20, ... share their examples), and the draw within a class does
    not depend on `classes` or on the other classes' labels. Indices are positions, so permuting labels
    changes the result. ValueError if n is not a positive multiple of K or a class has fewer than n / K
    examples; labels, classes and seed must be non-negative integers.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    if (classes.ndim != 1 or not len(classes) or classes.dtype.kind not in "iu" or classes.min() < 0
            or len(np.unique(classes)) != len(classes)):
        raise ValueError(f"classes must be distinct non-negative integers, got {classes.tolist()}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    k = len(classes)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 or n % k:
        raise ValueError(f"n must be a positive multiple of the number of classes ({k}), got {n!r}")
    per_class = n // k
    picks = []
    for c in np.sort(classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class:
            raise ValueError(f"class {c} has {len(pool)} examples, fewer than the {per_class} per class "
                             f"that n={n} over {k} classes needs")
        rng = np.random.default_rng([int(seed), int(c)])
        picks.append(pool[rng.permutation(len(pool))[:per_class]])
    return np.sort(np.concatenate(picks))
