"""The Myrtle architectures of "Neural Kernels Without Tangents", written with the public layers."""
from __future__ import annotations

from ._shared.defaults import MYRTLE_NAMES, MYRTLE_STAGES
from .layers import (AvgPool, Cast, Conv, Gaussian, GlobalAvgPool, Layer, Relu, Serial, project,
                     serial)

PRECISIONS = ("float32", "mixed", "float64")


def myrtle_depth(name: str) -> int:
    """5, 7 or 10 for "myrtle5", "myrtle7" or "myrtle10"; ValueError naming the choices otherwise."""
    if not isinstance(name, str) or name not in MYRTLE_NAMES:
        raise ValueError(f"architecture must be one of {', '.join(MYRTLE_NAMES)}; got {name!r}")
    return int(name[len("myrtle"):])


def myrtle(depth: int = 5, nonlinearity: str = "relu", head: str = "project", *,
           gamma: float = 1.0, precision: str = "mixed") -> Serial:
    """Myrtle5/7/10 kernel (and network) spec.

    Stages of conv3x3 + nonlinearity at full, 1/2 and 1/4 resolution (2/1/1, 2/2/2 or 3/3/3 repeats),
    AvgPool(2) between stages, a global average pool at the end (pool8 for 32x32 images, pool7 for
    28x28), then ``head="project"``: the paper's normalized ReLU (normalized Gaussian for
    ``nonlinearity="gaussian"``), or ``head="linear"``: stop at the pool (NNGP of a linear readout).
    precision: "mixed" (the paper's: float32 for the first two stages, float64 for the last stage and
    the head), "float32" or "float64" throughout.
    """
    if depth not in MYRTLE_STAGES:
        raise ValueError(f"Myrtle depth must be one of {sorted(MYRTLE_STAGES)}, got {depth}")
    if nonlinearity not in ("relu", "gaussian"):
        raise ValueError(f"nonlinearity must be 'relu' or 'gaussian', got {nonlinearity!r}")
    if head not in ("project", "linear"):
        raise ValueError(f"head must be 'project' or 'linear', got {head!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")

    def make() -> Layer:
        return Relu() if nonlinearity == "relu" else Gaussian(gamma)

    layers: list[Layer] = [Cast("float64")] if precision == "float64" else []
    for stage, repeats in enumerate(MYRTLE_STAGES[depth]):
        if stage == 2 and precision == "mixed":
            layers.append(Cast("float64"))
        for _ in range(repeats):
            layers += [Conv(3), make()]
        layers.append(AvgPool(2) if stage < 2 else GlobalAvgPool())
    if head == "project":
        layers.append(project(make()))
    return serial(*layers)
