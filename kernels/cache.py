"""A Gram cache: kernel values kept in memory by image content, so that K over images it has seen
is sliced rather than recomputed. Cross-validation and grid searches over the same training
images (one model per candidate and fold, each asking for K(train fold) and K(test fold, train
fold)) then compute each distinct pair once::

    cache = GramCache()
    k = cache.gram(spec, x)                 # computed
    k_fold = cache.gram(spec, x[:40])       # sliced from k: no kernel evaluation
    k_test = cache.gram(spec, x[40:], x[:40])

Entries are keyed by the spec (its repr, as a Gram store records it) and the flip mode (the
flip-symmetrized kernel is the sum of the plain and the mirror entries, so a search over flips
off and on computes each pair once per half); images by
a digest of their bytes, shape and dtype, so a cached value is returned only for the very images
it was computed from (whitened images of another ZCA fit are other images). Values are float64
as :func:`~tangentless.kernels.gram` returns them; the cache holds an (m, m) float64 table per
entry for its m distinct images and starts an entry afresh when m would pass ``max_images``.

Copies share the cache: ``copy.deepcopy`` (which scikit-learn's ``clone`` applies to
parameters) returns the cache itself, as one ``joblib.Memory`` location serves every clone. It
serves one process: parallel ``n_jobs`` workers each get their own copy.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .layers import Layer

__all__ = ["GramCache"]


def image_digests(images: np.ndarray) -> list[bytes]:
    """One BLAKE2b digest per image (N, ...) of its bytes, shape and dtype."""
    images = np.ascontiguousarray(images)
    tag = f"{images.shape[1:]}{images.dtype.str}".encode()
    return [hashlib.blake2b(tag + row.tobytes(), digest_size=16).digest() for row in images]


@dataclasses.dataclass
class _Entry:
    """The kernel values of one (spec, flip) over the distinct images seen: ``index`` digest ->
    row, ``values`` (capacity, capacity) float64, NaN where a pair is not computed yet."""
    index: dict = dataclasses.field(default_factory=dict)
    values: np.ndarray = dataclasses.field(default_factory=lambda: np.full((0, 0), np.nan))

    def rows(self, digests: list[bytes]) -> np.ndarray:
        """The rows of these images, new ones appended (the table grown by doubling)."""
        for d in digests:
            self.index.setdefault(d, len(self.index))
        m, capacity = len(self.index), self.values.shape[0]
        if m > capacity:
            grown = np.full((max(m, 2 * capacity),) * 2, np.nan)
            grown[:capacity, :capacity] = self.values
            self.values = grown
        return np.array([self.index[d] for d in digests], dtype=np.intp)


class GramCache:
    """Kernel values by image content (see the module docstring). ``max_images``: distinct images
    per (spec, flip) entry before it is started afresh (memory 8 max_images^2 bytes).
    Attributes: ``evaluations`` (the kernel values it asked the engine for: a symmetric block's
    pairs once, a rectangular block's every entry), ``requested`` (the values it returned)."""

    def __init__(self, max_images: int = 20000):
        if int(max_images) < 1:
            raise ValueError(f"max_images must be >= 1; got {max_images}")
        self.max_images = int(max_images)
        self._entries: dict[tuple[str, str], _Entry] = {}
        self.evaluations = 0
        self.requested = 0

    def __deepcopy__(self, memo):
        return self

    def clear(self) -> None:
        """Forget every cached value."""
        self._entries.clear()

    def gram(self, spec: Layer, x: ArrayLike, y: ArrayLike | None = None, *, flip: bool | str = False,
             **options: Any) -> np.ndarray:
        """K(x, y) (K(x, x) for y=None), float64 (len(x), len(y)), as ``spec.gram(x, y,
        flip=flip, **options)`` returns it (to rounding: flip=True adds the cached plain and
        mirror halves), computing only the pairs not cached. ``options`` go to
        ``spec.gram`` (block_size, progress, backend); a store is not a cache's business."""
        if "store" in options:
            raise ValueError("GramCache.gram keeps values in memory; pass store= to spec.gram instead")
        if not isinstance(flip, str) and flip:   # K(x, y) + K(x, flip(y)): both halves cached
            return (self.gram(spec, x, y, flip=False, **options)
                    + self.gram(spec, x, y, flip="mirror", **options))
        x = np.asarray(x)
        y_images = x if y is None else np.asarray(y)
        digests_x = image_digests(x)
        digests_y = digests_x if y is None else image_digests(y_images)
        key = (repr(spec), str(flip))
        entry = self._entries.setdefault(key, _Entry())
        if len(set(entry.index) | set(digests_x) | set(digests_y)) > self.max_images:
            entry = self._entries[key] = _Entry()
        rows, cols = entry.rows(digests_x), entry.rows(digests_y)
        missing = np.isnan(entry.values[np.ix_(rows, cols)])
        if missing.any():
            need_rows = np.flatnonzero(missing.any(axis=1))
            if y is None:   # the missing pairs lie among the rows that miss one: their symmetric block
                need_cols = need_rows
                block = np.asarray(spec.gram(x[need_rows], flip=flip, **options))
                self.evaluations += need_rows.size * (need_rows.size + 1) // 2
            else:
                need_cols = np.flatnonzero(missing.any(axis=0))
                block = np.asarray(spec.gram(x[need_rows], y_images[need_cols], flip=flip, **options))
                self.evaluations += block.size
            r, c = rows[need_rows], cols[need_cols]
            entry.values[np.ix_(r, c)] = block
            entry.values[np.ix_(c, r)] = block.T    # k(a, b) = k(b, a) for every kernel here
        self.requested += rows.size * cols.size
        return entry.values[np.ix_(rows, cols)].copy()
