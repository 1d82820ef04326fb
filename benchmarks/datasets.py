"""Image datasets as NHWC arrays. The embedded default is scikit-learn's bundled digits."""
from __future__ import annotations

import pathlib
import zipfile

import numpy as np


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 bundled 8x8 digits: images (N, 8, 8, 1) float32 in [0, 1], labels int64."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return (digits.images[..., None] / 16.0).astype(np.float32), digits.target.astype(np.int64)


def load_npz_images(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An .npz with ``images`` (N, H, W, C) (uint8 or float) and optionally ``labels`` (N,)."""
    path = pathlib.Path(path)
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
    labels = arrays["labels"].astype(np.int64) if "labels" in arrays else None
    if images.ndim != 4:
        raise ValueError(f"{path}: 'images' must be (N, H, W, C); got shape {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def load_packed_jpeg_npz(path: str | pathlib.Path, limit: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Images stored as concatenated JPEG files: ``jpeg`` (bytes as uint8), ``offsets`` (N+1,),
    ``labels`` (N,) (the layout of ../shared/data/cifar10_jpeg). Returns uint8 (N, H, W, 3), int64."""
    import io

    from PIL import Image

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
