"""Wavelet scattering + sparse dictionary classifiers."""
from .estimators import SparseScatteringClassifier
from .features import ScatteringFeatures
from .frontend import num_channels, scatter, scattering_fn
from .imagenet import (ImageDecodeError, ImageFolder, center_crop, eval_transform, iterate_batches, load_image,
                       random_flip, random_resized_crop, random_resized_crop_box, resize_shorter, train_transform)
from .model import ModelConfig
from .ridge import ScatteringRidgeClassifier
from .sparse_coding import ISTCConfig, coherence
from .train import CheckpointError, TrainConfig, TrainResult

__all__ = ["num_channels", "scattering_fn", "scatter", "ScatteringFeatures",
           "ImageDecodeError", "ImageFolder", "center_crop", "eval_transform", "iterate_batches", "load_image",
           "random_flip", "random_resized_crop", "random_resized_crop_box", "resize_shorter", "train_transform",
           "SparseScatteringClassifier", "ModelConfig", "ISTCConfig", "coherence", "CheckpointError", "TrainConfig",
           "TrainResult"]
