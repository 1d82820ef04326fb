"""Shifted test sets made from real test images: the 15 CIFAR-10-C corruptions (Hendrycks &
Dietterich 2019) at their CIFAR severities, the paired JPEG shift of the shared data, and small
translations and rotations.

Corruptions. The image operations come from maintained libraries: ``imagecorruptions`` (the
``imagecorruptions-imaug`` fork, which runs on current scikit-image and NumPy: its defocus disk,
plasma fractal, zoom, motion-blur kernel, glass-blur pixel shuffle and frost textures),
scikit-image, OpenCV, SciPy and Pillow. That library only offers ImageNet-C's severities, which
are tuned for 224-pixel images; CIFAR-10-C used other, milder ones. :data:`CIFAR10C_SEVERITIES`
holds those, read from the script that made CIFAR-10-C (``ImageNet-C/create_c/make_cifar_c.py`` in
github.com/hendrycks/robustness), and each corruption below composes the library's operations the
way that script does. Differences from the published CIFAR-10-C files: motion blur (and the
motion-blurred snow layer) uses the library's NumPy line kernel in place of ImageMagick's
``MotionBlurImage`` (not installable from PyPI), its sums snapped to 1e-6 before truncation so
that the files do not depend on the CPU; random numbers come from NumPy generators seeded
per image, so the files are reproducible but not the published ones; the four extra "validation"
corruptions (speckle noise, Gaussian blur, spatter, saturate) are left out, as in the benchmark's
15. Every corruption returns uint8 (32, 32, 3), truncated after clipping to [0, 255] as the
script does.

Generation is seeded and cached (:func:`write_shifted_sets`): one ``.npz`` per shift holding the
images of all its severities, labels and the source images' indices, with a sidecar ``.json``
recording the generation settings and the file's SHA-256, verified on every load.
"""
from __future__ import annotations

import importlib.metadata
import importlib.resources
import io
import json
import pathlib
import zipfile
from typing import Callable

import numpy as np
from PIL import Image

from ..kernels._shared.atomic import atomic_write
from ..kernels._shared.digest import array_sha256, config_sha256, file_sha256

__all__ = ["CORRUPTIONS", "FAMILIES", "CIFAR10C_SEVERITIES", "DEFORMATIONS", "SHIFTS", "corrupt",
           "corrupt_images", "shift_images", "write_shifted_sets", "write_jpeg_set",
           "load_shifted_set", "jpeg_pairs", "ShiftedSetError"]

#: the 15 corruptions of CIFAR-10-C, in the benchmark's order
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
               "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
               "elastic_transform", "pixelate", "jpeg_compression")

#: the benchmark's four families
FAMILIES = {"noise": CORRUPTIONS[0:3], "blur": CORRUPTIONS[3:7], "weather": CORRUPTIONS[7:10],
            "digital": CORRUPTIONS[10:15]}

#: per corruption, its parameters at severities 1..5 (make_cifar_c.py, see the module docstring)
CIFAR10C_SEVERITIES: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),             # noise std (of [0, 1] pixels)
    "shot_noise": (500, 250, 100, 75, 50),                        # Poisson photons per unit
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),              # salt & pepper fraction
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),   # disk radius, alias blur
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, max shift, iterations
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma
    "zoom_blur": tuple(tuple(np.round(np.arange(1, top, 0.01), 2).tolist())
                       for top in (1.06, 1.11, 1.16, 1.21, 1.26)),  # zoom factors averaged
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),  # loc, scale, zoom, threshold, blur radius, sigma, image weight
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),   # image weight, frost weight
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),          # fog weight, fractal decay
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),                    # added to HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),                      # deviation from the mean scaled
    "elastic_transform": tuple(tuple(32 * v for v in c) for c in (
        (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03))),                                      # alpha, sigma, affine jitter (pixels)
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),                    # downscale factor (box filter)
    "jpeg_compression": (80, 65, 58, 50, 40),                     # JPEG quality
}

#: cheap deformations (not CIFAR-10-C): integer translations by c pixels (the largest of the two
#: displacements; drawn per image among those, edges replicated) and rotations in degrees (sign drawn per image, bilinear, reflected edges)
DEFORMATIONS: dict[str, tuple] = {"translate": (1, 2, 3, 4, 5), "rotate": (5, 10, 15, 20, 25)}

#: every generated shift, with its severities
SHIFTS = (*CORRUPTIONS, *DEFORMATIONS)

SIZE = 32
_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
_FORMAT = 1


class ShiftedSetError(ValueError):
    """A shifted set on disk that is unreadable, tampered with, or made with other settings."""


def _library():
    """The corruption library's module of operations, or one clear error naming the package."""
    try:
        from imagecorruptions import corruptions
    except ImportError as err:
        raise ImportError("the corruption shifts need the package imagecorruptions-imaug "
                          f"(pip install imagecorruptions-imaug): {err}") from None
    return corruptions


def _clip_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 255] floats to uint8, truncated as make_cifar_c.py's np.uint8 does."""
    return np.uint8(np.clip(x, 0, 255))


def _center_crop(x: np.ndarray, size: int = SIZE) -> np.ndarray:
    top, left = (x.shape[0] - size) // 2, (x.shape[1] - size) // 2
    return x[top:top + size, left:left + size]


def _zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The library's clipped zoom, trimmed back to the centre (as make_cifar_c.py trims)."""
    return _center_crop(_library().clipped_zoom(x, factor))


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian
    return gaussian(x, sigma=sigma, channel_axis=-1 if x.ndim == 3 else None)


def _with_global_seed(seed: int, draw: Callable[[], np.ndarray]) -> np.ndarray:
    """Run a library function that draws from NumPy's global generator under ``seed``, restoring
    the caller's global state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return draw()
    finally:
        np.random.set_state(state)


def gaussian_noise(x, c, rng):
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, c, rng):
    x = x / 255.0
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x, c, rng):
    from skimage.util import random_noise
    return np.clip(random_noise(x / 255.0, mode="s&p", amount=c, rng=rng), 0, 1) * 255


def defocus_blur(x, c, rng):
    import cv2
    kernel = _library().disk(radius=c[0], alias_blur=c[1])
    x = (x / 255.0).astype(np.float32)
    blurred = np.stack([cv2.filter2D(x[..., d], -1, kernel) for d in range(3)], axis=-1)
    return np.clip(blurred, 0, 1) * 255


def glass_blur(x, c, rng):
    shuffle = _library()._shuffle_pixels_njit_glass_blur
    x = np.uint8(_gaussian(x / 255.0, c[0]) * 255)
    x = shuffle(SIZE, SIZE, x, c, int(rng.integers(2 ** 31)))
    return np.clip(_gaussian(x / 255.0, c[0]), 0, 1) * 255


def motion_blur(x, c, rng):
    blurred = _library()._motion_blur(x.astype(np.float32), radius=c[0], sigma=c[1],
                                      angle=rng.uniform(-45, 45))
    # ~1% of the values (flat regions: v times weights that sum to 1) lie within rounding error
    # of an integer, where truncation turns the last bits of NumPy's exp and sin, which differ
    # between CPUs (SVML on AVX-512, libm elsewhere), into a gray level: snapped to 1e-6 first
    return np.clip(np.round(blurred, 6), 0, 255)


def zoom_blur(x, c, rng):
    x = (x / 255.0).astype(np.float32)
    out = sum(_zoom(x, factor) for factor in c)
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


def snow(x, c, rng):
    import cv2
    x = (x / 255.0).astype(np.float32)
    layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = _zoom(layer[..., np.newaxis], c[2])[..., 0]
    layer[layer < c[3]] = 0
    layer = np.uint8(np.clip(layer, 0, 1) * 255).astype(np.float32)   # the script's 8-bit layer
    layer = _library()._motion_blur(layer, radius=c[4], sigma=c[5], angle=rng.uniform(-135, -45))
    layer = (np.round(layer) / 255.0)[..., np.newaxis]
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., np.newaxis]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


_FROST_CACHE: dict[int, np.ndarray] = {}


def _frost_texture(index: int) -> np.ndarray:
    """The library's frost photograph ``index`` as RGB, scaled by 0.2 (make_cifar_c.py's size)."""
    if index not in _FROST_CACHE:
        import cv2
        ref = importlib.resources.files("imagecorruptions") / "frost" / _FROST_FILES[index]
        with ref.open("rb") as f:
            data = np.frombuffer(f.read(), np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        _FROST_CACHE[index] = cv2.resize(bgr, (0, 0), fx=0.2, fy=0.2)[..., ::-1].copy()
    return _FROST_CACHE[index]


def frost(x, c, rng):
    texture = _frost_texture(int(rng.integers(5)))   # the script draws among the first five
    top = int(rng.integers(0, texture.shape[0] - SIZE))
    left = int(rng.integers(0, texture.shape[1] - SIZE))
    return np.clip(c[0] * x + c[1] * texture[top:top + SIZE, left:left + SIZE], 0, 255)


def fog(x, c, rng):
    fractal = _with_global_seed(int(rng.integers(2 ** 31)),
                                lambda: _library().plasma_fractal(mapsize=SIZE, wibbledecay=c[1]))
    x = x / 255.0
    top = x.max()
    x = x + c[0] * fractal[:SIZE, :SIZE][..., np.newaxis]
    return np.clip(x * top / (top + c[0]), 0, 1) * 255


def brightness(x, c, rng):
    from skimage.color import hsv2rgb, rgb2hsv
    hsv = rgb2hsv(x / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def contrast(x, c, rng):
    x = x / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(x, c, rng):
    import cv2
    from scipy.ndimage import map_coordinates
    from skimage.filters import gaussian
    image = (x / 255.0).astype(np.float32)
    shape = image.shape
    center = np.float32(shape[:2]) // 2
    square = min(shape[:2]) // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square], center - square])
    pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    image = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts2), shape[:2][::-1],
                           borderMode=cv2.BORDER_REFLECT_101)
    dx, dy = ((gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3)
               * c[0]).astype(np.float32)[..., np.newaxis] for _ in range(2))
    xs, ys, zs = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = (ys + dy).reshape(-1, 1), (xs + dx).reshape(-1, 1), zs.reshape(-1, 1)
    warped = map_coordinates(image, indices, order=1, mode="reflect").reshape(shape)
    return np.clip(warped, 0, 1) * 255


def pixelate(x, c, rng):
    small = int(SIZE * c)
    image = Image.fromarray(x).resize((small, small), Image.Resampling.BOX)
    return np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BOX))


def jpeg_compression(x, c, rng):
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=c)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"))


def translate(x, c, rng):
    ring = [(dy, dx) for dy in range(-c, c + 1) for dx in range(-c, c + 1) if max(abs(dy), abs(dx)) == c]
    dy, dx = ring[int(rng.integers(len(ring)))]
    padded = np.pad(x, ((c, c), (c, c), (0, 0)), mode="edge")
    return padded[c - dy:c - dy + SIZE, c - dx:c - dx + SIZE]


def rotate(x, c, rng):
    from scipy.ndimage import rotate as nd_rotate
    degrees = c if rng.integers(2) else -c
    return nd_rotate(x.astype(np.float32), degrees, axes=(1, 0), reshape=False, order=1,
                     mode="reflect")


_FUNCTIONS = {name: globals()[name] for name in SHIFTS}


def _severities(name: str) -> tuple:
    if name in CIFAR10C_SEVERITIES:
        return CIFAR10C_SEVERITIES[name]
    if name in DEFORMATIONS:
        return DEFORMATIONS[name]
    raise ValueError(f"unknown shift {name!r}; expected one of {', '.join(SHIFTS)}")


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIZE, SIZE, 3):
        raise ValueError(f"images must be uint8 (N, {SIZE}, {SIZE}, 3) RGB; got {images.dtype} "
                         f"{images.shape}")
    return images


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 (32, 32, 3) RGB image under shift ``name`` (in ``SHIFTS``) at ``severity``
    1..5, drawing its randomness from ``rng``; uint8 (32, 32, 3)."""
    params = _severities(name)
    if isinstance(severity, bool) or severity not in range(1, 6):
        raise ValueError(f"severity must be an integer 1..5; got {severity!r}")
    image = _check_images(np.asarray(image)[np.newaxis])[0]
    return _clip_uint8(_FUNCTIONS[name](image, params[severity - 1], rng))


def corrupt_images(images: np.ndarray, name: str, severity: int, *, seed: int,
                   indices: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, 32, 32, 3) images under one shift and severity. Image i draws from a generator
    seeded by (seed, shift, severity, indices[i]) (default indices 0..N-1), so an image's
    corruption does not depend on which other images are corrupted with it."""
    images = _check_images(images)
    indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    if indices.shape != (len(images),):
        raise ValueError(f"indices must be ({len(images)},); got {indices.shape}")
    _severities(name)
    code = SHIFTS.index(name)
    out = np.empty_like(images)
    for i, (image, index) in enumerate(zip(images, indices)):
        rng = np.random.default_rng([seed, code, severity, int(index)])
        out[i] = corrupt(image, name, severity, rng)
    return out


def shift_images(images, name: str, *, seed: int, indices=None) -> np.ndarray:
    """uint8 (5, N, 32, 32, 3): ``images`` under shift ``name`` at severities 1..5."""
    return np.stack([corrupt_images(images, name, s, seed=seed, indices=indices)
                     for s in range(1, 6)])


#: shifts whose bytes changed within format 1, and their revision: a set made before is refused
#: (its record has no or another revision). motion_blur 2: snapped before truncation, so the
#: bytes no longer depend on the CPU (revision 1 files differ between AVX-512 and AVX2 machines)
_REVISIONS = {"motion_blur": 2}


def _settings(name: str, seed: int, source_sha256: str) -> dict:
    return {"format": _FORMAT, "shift": name, "seed": seed, "source_sha256": source_sha256,
            "parameters": [list(p) if isinstance(p, tuple) else p for p in _severities(name)],
            "library": "imagecorruptions-imaug " + importlib.metadata.version("imagecorruptions-imaug"),
            **({"revision": _REVISIONS[name]} if name in _REVISIONS else {})}


#: the distributions whose arithmetic a shifted set's bytes depend on
_MADE_WITH = ("numpy", "scipy", "scikit-image", "opencv-python", "imagecorruptions-imaug")


def _versions() -> dict[str, str | None]:
    """The installed version of each of :data:`_MADE_WITH` (None where absent), recorded with a
    set (not checked): what to compare when a regenerated file's SHA-256 differs."""
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {name: version(name) for name in _MADE_WITH}


def _paths(folder: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    return folder / f"{name}.npz", folder / f"{name}.json"


def _write_set(folder: pathlib.Path, settings: dict, images: np.ndarray, labels: np.ndarray,
               indices: np.ndarray) -> pathlib.Path:
    """``folder/<shift>.npz`` (images (S, N, 32, 32, 3), labels, index), then its record."""
    npz, meta = _paths(folder, settings["shift"])
    atomic_write(npz, lambda f: np.savez_compressed(f, images=images, labels=labels.astype(np.int64),
                                                    index=indices.astype(np.int64)))
    record = {**settings, "settings_sha256": config_sha256(settings), "file_sha256": file_sha256(npz),
              "images": int(images.shape[1]), "severities": int(images.shape[0]),
              "versions": _versions()}
    atomic_write(meta, lambda f: f.write(json.dumps(record, indent=1).encode()))
    return npz


def _check_labels(labels, n: int, what: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers ({n},); got {labels.dtype} {labels.shape}")
    return labels


def write_shifted_sets(images, labels, folder, *, seed: int = 0, names=SHIFTS, indices=None,
                       progress: bool = True) -> list[pathlib.Path]:
    """Generate (or reuse) ``folder/<shift>.npz`` for each shift in ``names``: ``images`` uint8
    (5, N, 32, 32, 3) (severities 1..5), ``labels`` (N,), ``index`` (N,) (``indices``, default
    0..N-1: the source images' own indices, e.g. official CIFAR-10 test indices), and
    ``folder/<shift>.json`` with the settings and the file's SHA-256. A shift already there with
    the same settings is verified and kept (a rerun resumes); one made with other settings, or
    whose file fails its checksum, raises :class:`ShiftedSetError` (delete it to regenerate).
    Files are written atomically, the record last. Returns the ``.npz`` paths."""
    from tqdm.auto import tqdm
    images = _check_images(images)
    labels = _check_labels(labels, len(images))
    indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    for name in names:
        _severities(name)
    source = array_sha256(images)
    folder = pathlib.Path(folder)
    paths = []
    for name in tqdm(list(names), desc="shifted sets", unit="shift", disable=not progress):
        settings = _settings(name, seed, source)
        npz, meta = _paths(folder, name)
        if meta.exists():
            load_shifted_set(folder, name, expect=settings)
        else:   # no record: absent, or a file whose writer was interrupted before its record
            _write_set(folder, settings, shift_images(images, name, seed=seed, indices=indices),
                       labels, indices)
        paths.append(npz)
    return paths


def write_jpeg_set(exact_test, jpeg_test, folder) -> pathlib.Path:
    """``folder/jpeg.npz``: the paired JPEG shift of :func:`jpeg_pairs` as a shifted set of one
    severity (images (1, N', 32, 32, 3), its ``index`` the official test indices), with the exact
    images of the same indices checksummed in its record. Reused when already there."""
    clean, jpeg, labels, index = jpeg_pairs(exact_test, jpeg_test)
    settings = {"format": _FORMAT, "shift": "jpeg", "seed": None, "source_sha256": array_sha256(clean),
                "parameters": ["the shared JPEG copy (quality 75, 4:2:0), paired by official index"],
                "library": None}
    folder = pathlib.Path(folder)
    if _paths(folder, "jpeg")[1].exists():
        load_shifted_set(folder, "jpeg", expect=settings)
        return _paths(folder, "jpeg")[0]
    return _write_set(folder, settings, jpeg[np.newaxis], labels, index)


def load_shifted_set(folder, name: str, *, expect: dict | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """``folder/<name>.npz`` verified against its ``.json``: images uint8 (S, N, 32, 32, 3) (S
    severities: 5, or 1 for the JPEG shift), labels int64 (N,), index int64 (N,), the record.
    :class:`ShiftedSetError` names the problem (missing file or record, checksum mismatch, other
    settings than ``expect``, arrays that do not match the record)."""
    npz, meta = _paths(pathlib.Path(folder), name)
    if not npz.is_file() or not meta.is_file():
        missing = npz if not npz.is_file() else meta
        raise ShiftedSetError(f"shifted set {name!r} is incomplete: no {missing}")
    try:
        record = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ShiftedSetError(f"{meta} is not a readable record ({err})") from None
    if record.get("file_sha256") != file_sha256(npz):
        raise ShiftedSetError(f"{npz} does not match the checksum in {meta.name} (tampered or "
                              "partly written); delete both to regenerate")
    if expect is not None:
        differing = sorted(k for k in expect if k != "library" and record.get(k) != expect[k])
        if differing:
            raise ShiftedSetError(f"{npz} was made with other settings ({', '.join(differing)} "
                                  "differ); delete it or write to another folder")
    try:
        with np.load(npz, allow_pickle=False) as data:
            images, labels, index = data["images"], data["labels"], data["index"]
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise ShiftedSetError(f"{npz} is not a shifted set ({type(err).__name__}: {err})") from None
    n, severities = record.get("images"), record.get("severities")
    if (images.shape != (severities, n, SIZE, SIZE, 3) or images.dtype != np.uint8
            or labels.shape != (n,) or index.shape != (n,)):
        raise ShiftedSetError(f"{npz}: arrays {images.dtype} {images.shape}, {labels.shape}, "
                              f"{index.shape} do not match its record ({severities} x {n} images)")
    return images, labels, index, record


def jpeg_pairs(exact_test, jpeg_test) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The paired JPEG shift: the exact test images and their JPEG recompressions, matched by
    official index. ``exact_test``: (images uint8 (N, 32, 32, 3), labels (N,), official indices
    (N,)); ``jpeg_test``: (images (M, ...), labels (M,), official indices (M,), -1 where unknown).
    Returns (exact images, JPEG images, labels, official indices) of the N' images in both, in
    ``exact_test``'s order; ValueError where a pair's labels disagree."""
    images, labels, index = (np.asarray(a) for a in exact_test)
    j_images, j_labels, j_index = (np.asarray(a) for a in jpeg_test)
    if len(np.unique(j_index[j_index >= 0])) != int((j_index >= 0).sum()):
        raise ValueError("the JPEG set's official indices repeat")
    position = {int(k): i for i, k in enumerate(j_index) if k >= 0}
    keep = np.array([i for i, k in enumerate(index) if int(k) in position], dtype=np.int64)
    if not len(keep):
        raise ValueError("no official index is in both test sets")
    partner = np.array([position[int(index[i])] for i in keep], dtype=np.int64)
    if np.any(labels[keep] != j_labels[partner]):
        bad = int(index[keep][np.argmax(labels[keep] != j_labels[partner])])
        raise ValueError(f"labels disagree between the exact and the JPEG image of official index {bad}")
    return images[keep], j_images[partner], labels[keep], index[keep]
