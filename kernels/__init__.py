"""Compositional convolutional kernels: layer algebra, Myrtle architectures, ZCA and the Gram engine."""
from .architectures import myrtle
from .cuda import CudaBackend, CudaFallbackWarning
from .gram import JaxBackend, default_block_size, gram, validate_images
from .layers import (AvgPool, Cast, Conv, DirectSum, Gaussian, GlobalAvgPool, Layer, Normalize,
                     Polynomial, Relu, Serial, project, serial)
from .network import empirical_kernel, network
from .preprocess import ZCAWhitening

__all__ = [
    "AvgPool", "Cast", "Conv", "CudaBackend", "CudaFallbackWarning", "DirectSum", "Gaussian",
    "GlobalAvgPool", "JaxBackend", "Layer", "Normalize", "Polynomial", "Relu", "Serial", "ZCAWhitening", "default_block_size",
    "empirical_kernel", "gram", "myrtle", "network", "project", "serial", "validate_images",
]
