"""Wavelet scattering + sparse dictionary classifiers."""
from .features import ScatteringFeatures
from .frontend import num_channels, scatter, scattering_fn
from .imagenet import (ImageDecodeError, ImageFolder, center_crop, eval_transform, iterate_batches, load_image,
                       random_flip, random_resized_crop, random_resized_crop_box, resize_shorter, train_transform)

__all__ = ["num_channels", "scattering_fn", "scatter", "ScatteringFeatures",
           "ImageDecodeError", "ImageFolder", "center_crop", "eval_transform", "iterate_batches", "load_image",
           "random_flip", "random_resized_crop", "random_resized_crop_box", "resize_shorter", "train_transform"]
