"""Test matrices with a chosen spectrum (shared by the solver tests)."""
import numpy as np


def with_spectrum(values, seed=0):
    """Q diag(values) Q^T for a random orthogonal Q, symmetrized exactly."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(values), len(values))))
    k = (q * values) @ q.T
    return (k + k.T) / 2
