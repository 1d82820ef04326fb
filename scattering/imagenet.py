"""ImageNet-style folders read with Pillow: the standard transforms and batches streamed in bounded memory.

- :class:`ImageFolder`: torchvision's layout ``root/<class>/<image files>``; labels follow the official
  ImageNet-1k indices when given ``imagenet_class_index.json``.
- Transforms, small pure functions of a PIL image (or array) and an explicit ``numpy.random.Generator``:
  evaluation :func:`resize_shorter` (256) + :func:`center_crop` (224); training
  :func:`random_resized_crop` (224) + :func:`random_flip`. Resampling is bilinear (Pillow's, antialiased),
  torchvision's default. Like torchvision's loader, EXIF orientation is not applied.
- :func:`iterate_batches`: ``(images uint8 (B, 224, 224, 3), labels int64 (B,))`` decoded by a thread pool
  (Pillow releases the GIL while decoding and resampling), a fixed number of batches in flight, and
  results that depend on the seed only, never on thread timing.

:func:`measure_throughput` times the decode + transform of a folder.
"""
from __future__ import annotations

import collections
import itertools
import json
import os
import pathlib
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageFile
from tqdm.auto import tqdm

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "ImageFolder", "center_crop", "eval_transform",
           "iterate_batches", "load_image", "measure_throughput", "random_flip", "random_resized_crop",
           "random_resized_crop_box", "resize_shorter", "train_transform"]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
RESAMPLE = Image.Resampling.BILINEAR


class ImageDecodeError(OSError):
    """An image file Pillow cannot decode completely: corrupt, truncated, or not an image."""


# ----------------------------------------------------------------------------------------- folders

def _read_keras_class_index(path: pathlib.Path) -> dict[str, int]:
    """{wnid: index} from a Keras-format ``{"0": ["n01440764", "tench"], ...}`` file."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"class index file not found: {path}") from None
    except ValueError as exc:
        raise ValueError(f"class index file {path} is not JSON: {exc}") from exc
    entries = raw.items() if isinstance(raw, dict) else []
    if not entries or not all(key.isdigit() and isinstance(entry, list) and entry and isinstance(entry[0], str)
                              for key, entry in entries):
        raise ValueError(f'{path} is not a Keras-format class index ({{"0": ["n01440764", "tench"], ...}})')
    return {entry[0]: int(key) for key, entry in entries}


def _class_list(class_index) -> list[str]:
    """Class names ordered by label from a sequence of names, a {name: label} mapping or a JSON path."""
    if isinstance(class_index, (str, os.PathLike)):
        class_index = _read_keras_class_index(pathlib.Path(class_index))
    if isinstance(class_index, Mapping):
        labels = sorted(class_index.values())
        if labels != list(range(len(labels))):
            raise ValueError("class_index mapping: labels must be exactly 0..K-1, each once; "
                             f"got {len(labels)} labels from {labels[:1]} to {labels[-1:]}")
        return sorted(class_index, key=class_index.__getitem__)
    names = [str(name) for name in class_index]
    duplicates = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"class_index lists these classes more than once: {duplicates[:5]}")
    return names


def _image_files(folder: pathlib.Path) -> list[str]:
    """Paths of the image files under folder (recursive, symlinks followed, hidden entries skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f) for f in filenames
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


class ImageFolder:
    """Images in torchvision's layout ``root/<class>/<image files>`` (files found recursively in each
    class folder, sorted by path; extensions .jpeg/.jpg/.png in any case; other files and hidden
    entries ignored).

    class_index: how class folder names become labels.
      - None: the sorted subdirectory names, labels 0..K-1 (torchvision's rule).
      - a sequence of class names: label = position in it.
      - a mapping {class name: label} with labels exactly 0..K-1.
      - a path to a Keras-format ``imagenet_class_index.json`` (``{"0": ["n01440764", "tench"], ...}``):
        the official ImageNet-1k labels of the wnid folders.
      With an explicit index the folders may be any subset of its classes, but each must be in it.

    Attributes: ``root``; ``classes`` (classes[label] = name, all K classes of the index);
    ``class_to_idx``; ``samples``, a list of (path, label); ``labels``, int64 (N,).
    Raises FileNotFoundError for a missing root, no class folders or no images, and ValueError for
    a folder missing from the class index or a class folder without images.
    """

    def __init__(self, root: str | os.PathLike[str],
                 class_index: Sequence[str] | Mapping[str, int] | str | os.PathLike[str] | None = None) -> None:
        self.root = pathlib.Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder root not found or not a directory: {self.root}")
        folders = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        if not folders:
            raise FileNotFoundError(f"no class folders in {self.root} (expected root/<class>/<image files>)")
        self.classes = folders if class_index is None else _class_list(class_index)
        self.class_to_idx = {name: label for label, name in enumerate(self.classes)}
        unknown = [name for name in folders if name not in self.class_to_idx]
        if unknown:
            raise ValueError(f"{len(unknown)} class folder(s) of {self.root} are not in class_index: "
                             f"{unknown[:5]}")
        files = {name: _image_files(self.root / name) for name in folders}
        empty = [name for name in folders if not files[name]]
        if len(empty) == len(folders):
            raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders "
                                    f"of {self.root}")
        if empty:
            raise ValueError(f"{len(empty)} class folder(s) of {self.root} hold no image files: {empty[:5]}")
        self.samples = [(path, self.class_to_idx[name]) for name in folders for path in files[name]]
        self.labels = np.array([label for _, label in self.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}: {len(self)} images, {len(self.classes)} classes)"


# -------------------------------------------------------------------------------------- transforms

def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """The whole file decoded to an RGB PIL image (grey, CMYK, palette converted; alpha dropped, as
    torchvision's loader does). ImageDecodeError naming the file if Pillow cannot decode all of it.

    Truncated files are errors only while ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is False (Pillow
    otherwise fills the missing part with grey silently), so a True there is refused.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images would decode "
                           "as partly grey without an error; set it back to False")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... by format
        raise ImageDecodeError(f"cannot decode image file {path}: {type(exc).__name__}: {exc}") from exc


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Bilinear resize: shorter side `size`, longer int(size * long / short) (torchvision's Resize(int))."""
    width, height = img.size
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    return img.resize(new_size, RESAMPLE)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The central size x size square, offsets int(round((H - size) / 2)) as torchvision's CenterCrop.
    ValueError if the image is smaller than size (torchvision pads with zeros instead)."""
    width, height = img.size
    if width < size or height < size:
        raise ValueError(f"center_crop: image {width}x{height} is smaller than the crop {size}x{size}")
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop: torchvision's RandomResizedCrop.get_params.

    Up to 10 attempts draw an area fraction uniformly in `scale` and an aspect ratio w/h log-uniformly
    in `ratio`, sides rounded to integers; the first box that fits is placed uniformly at random.
    If none fits: a center crop of the whole image, clamped to the nearest ratio bound.
    """
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"random_resized_crop: need 0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1], "
                         f"got scale={scale}, ratio={ratio}")
    area = height * width
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = np.exp(rng.uniform(*log_ratio))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(img: Image.Image, size: int, *, rng: np.random.Generator,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """The box of :func:`random_resized_crop_box`, cropped then resized (bilinear) to size x size."""
    top, left, h, w = random_resized_crop_box(img.height, img.width, rng, scale, ratio)
    return img.crop((left, top, left + w, top + h)).resize((size, size), RESAMPLE)


def random_flip(arr: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """(H, W, C) array mirrored left-right (arr[:, ::-1], a view) with probability 1/2, else arr."""
    return arr[:, ::-1] if rng.random() < 0.5 else arr


def eval_transform(img: Image.Image, size: int = 224, resize: int = 256) -> np.ndarray:
    """Evaluation: resize the shorter side to `resize`, center crop: uint8 (size, size, 3)."""
    return np.asarray(center_crop(resize_shorter(img, resize), size))


def train_transform(img: Image.Image, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """Training: random resized crop, then random flip (in that order of draws): uint8 (size, size, 3)."""
    return random_flip(np.asarray(random_resized_crop(img, size, rng=rng)), rng=rng)


# --------------------------------------------------------------------------------------- streaming

def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"iterate_batches: {name} must be a positive integer, got {value!r}")
    return int(value)


def iterate_batches(folder: ImageFolder, batch_size: int, *, train: bool, seed: int | Sequence[int] = 0,
                    shuffle: bool | None = None, drop_last: bool = False,
                    num_threads: int = min(8, os.cpu_count() or 1), prefetch: int = 2, size: int = 224,
                    resize: int = 256, progress: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One pass over folder: (images uint8 (B, size, size, 3), labels int64 (B,)) batches.

    train: :func:`train_transform` (random resized crop + flip) if True, else :func:`eval_transform`
    (resize the shorter side to `resize`, center crop). shuffle: a seeded permutation; defaults to `train`.
    drop_last: drop the final partial batch (else it comes out with B < batch_size).

    seed (an int or a sequence of ints, as numpy's SeedSequence takes): the order depends on the seed
    only and image i's crop and flip on (seed, i) only, so the batches are identical across runs,
    num_threads and prefetch whatever the thread timing. Pass a new seed each epoch, e.g. (seed, epoch).

    Memory: `num_threads` threads decode images into batch arrays allocated when their batch is
    submitted; at most `prefetch` batches are submitted beyond the one last yielded, so the loader holds
    at most (prefetch + 1) * batch_size * size * size * 3 bytes of batches plus one full-size decoded
    image per thread, whatever the dataset size. Stopping early cancels the queued work.
    A file that does not decode raises ImageDecodeError naming it.
    """
    if not isinstance(folder, ImageFolder):
        raise TypeError(f"iterate_batches: folder must be an ImageFolder, got {type(folder).__name__}")
    batch_size = _check_positive_int("batch_size", batch_size)
    num_threads = _check_positive_int("num_threads", num_threads)
    prefetch = _check_positive_int("prefetch", prefetch)
    size, resize = _check_positive_int("size", size), _check_positive_int("resize", resize)
    if not train and resize < size:
        raise ValueError(f"iterate_batches: resize ({resize}) must be >= size ({size}) for the center crop")
    entropy = np.random.SeedSequence(seed).entropy
    shuffle = train if shuffle is None else shuffle
    n = len(folder)
    if shuffle:
        order = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(0,))).permutation(n)
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_last else n

    def decode_into(out: np.ndarray, j: int, index: int) -> None:
        img = load_image(folder.samples[index][0])
        if train:
            rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(1, int(index))))
            out[j] = train_transform(img, rng, size)
        else:
            out[j] = eval_transform(img, size, resize)

    return _stream(decode_into, folder.labels, order[:stop], batch_size, num_threads, prefetch, size, progress)


def _stream(decode_into, labels: np.ndarray, order: np.ndarray, batch_size: int, num_threads: int,
            prefetch: int, size: int, progress: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of `order` decoded by a pool, at most `prefetch` batches submitted past the last yielded."""
    starts = iter(range(0, len(order), batch_size))
    pending: collections.deque = collections.deque()  # (images, labels, futures) per submitted, not yet yielded batch
    with ThreadPoolExecutor(num_threads, thread_name_prefix="imagefolder") as pool, \
            tqdm(total=len(order), unit="img", desc="images", disable=not progress) as bar:

        def submit(start: int) -> None:
            indices = order[start:start + batch_size]
            images = np.empty((len(indices), size, size, 3), np.uint8)
            futures = [pool.submit(decode_into, images, j, index) for j, index in enumerate(indices)]
            pending.append((images, labels[indices], futures))

        try:
            for start in itertools.islice(starts, prefetch):
                submit(start)
            while pending:
                images, batch_labels, futures = pending[0]
                for future in futures:
                    future.result()
                pending.popleft()
                following = next(starts, None)
                if following is not None:
                    submit(following)
                bar.update(len(batch_labels))
                yield images, batch_labels
        finally:
            for _, _, futures in pending:
                for future in futures:
                    future.cancel()


def measure_throughput(folder: ImageFolder, thread_counts=(1, 2), batch_size: int = 32,
                       repeats: int = 3) -> dict[tuple[str, int], float]:
    """Decode + transform images/s of iterate_batches: {("eval" | "train", threads): best of `repeats`}."""
    rates = {}
    for train in (False, True):
        for threads in thread_counts:
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in iterate_batches(folder, batch_size, train=train, num_threads=threads):
                    pass
                best = min(best, time.perf_counter() - start)
            rates["train" if train else "eval", threads] = len(folder) / best
    return rates
