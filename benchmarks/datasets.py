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
