"""Scattering features as a scikit-learn transformer, for the baselines "scattering + linear"
and "scattering + kernel ridge"."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..kernels._shared.images import validate_images
from ..kernels._shared.persist import Persistent, stored_shape
from .frontend import check_config, check_spatial, num_channels, scatter

__all__ = ["ScatteringFeatures"]


class ScatteringFeatures(Persistent, TransformerMixin, BaseEstimator):
    """Images (N, H, W, C) NHWC -> scattering features (N, h * w * C * K) float32, h = H / 2^J,
    w = W / 2^J (or (N, h, w, C * K) with ``flatten=False``); see :func:`.frontend.scatter` for the
    parameters (uint8 images are scaled to [0, 1]).

    fit only records the input shape (the transform has no learned parameters): input_shape_
    (H, W, C), output_shape_ (h, w, C * K). ``save(path)`` / ``ScatteringFeatures.load(path)``.
    """

    def __init__(self, J: int = 2, L: int = 8, max_order: int = 2, phase: bool = False,
                 batch_size: int | None = None, cache_dir: str | os.PathLike[str] | None = None,
                 flatten: bool = True, progress: bool = True) -> None:
        self.J = J
        self.L = L
        self.max_order = max_order
        self.phase = phase
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.flatten = flatten
        self.progress = progress

    def fit(self, images: ArrayLike, y: Any = None) -> ScatteringFeatures:
        """Check the images (N, H, W, C) and record their shape (H, W, C) and the output shape
        (h, w, C * K)."""
        check_config(self.J, self.L, self.max_order)
        self._set_shapes(*validate_images(images, "images", dtype=None).shape[1:])
        return self

    def _set_shapes(self, height: int, width: int, channels: int) -> None:
        check_spatial(height, width, self.J)
        scale = 2 ** self.J
        self.input_shape_ = (height, width, channels)
        self.output_shape_ = (height // scale, width // scale,
                              channels * num_channels(self.J, self.L, self.max_order, self.phase))

    def _params_to_json(self) -> dict:
        params = self.get_params(deep=False)
        return {**params, "cache_dir": None if params["cache_dir"] is None else str(params["cache_dir"])}

    def _fitted_state(self) -> tuple[dict, dict]:
        return {"input_shape": list(self.input_shape_), "output_shape": list(self.output_shape_)}, {}

    def _restore_fitted_state(self, meta: dict, arrays: dict) -> None:
        input_shape = stored_shape(meta, "input_shape", 3)
        check_config(self.J, self.L, self.max_order)
        self._set_shapes(*input_shape)                      # the output shape these params give
        if stored_shape(meta, "output_shape", 3) != self.output_shape_:
            raise ValueError(f"output_shape {meta['output_shape']} is not {list(self.output_shape_)}, "
                             f"what input_shape {list(input_shape)} gives with these parameters")

    def transform(self, images: ArrayLike) -> np.ndarray:
        """(N, H, W, C), the fitted (H, W, C) -> (N, h * w * C * K) or (N, h, w, C * K) float32."""
        check_is_fitted(self, "input_shape_")
        images = validate_images(images, "images", dtype=None)
        shape = images.shape
        if tuple(shape[1:]) != self.input_shape_:
            expected = ", ".join(map(str, self.input_shape_))
            raise ValueError(f"images must have shape (N, {expected}) as in fit; got {shape}")
        features = scatter(images, self.J, self.L, self.max_order, self.phase,
                           batch_size=self.batch_size, progress=self.progress,
                           cache_dir=self.cache_dir)
        return features.reshape(len(features), -1) if self.flatten else features
