"""The JAX backend's pairs per step: chosen for the device (checked with stand-in devices on the
CPU), and any setting gives the same kernel as one pair per step."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

import tangentless.kernels as tk
from tangentless.kernels import jax_backend as jb


def _device(platform, limit=None):
    stats = None if limit is None else {"bytes_limit": limit}
    return SimpleNamespace(platform=platform, memory_stats=lambda: stats)


def test_cpu_steps_are_cache_sized():
    assert jb.pairs_per_step(32, 32, _device("cpu")) == 1
    assert jb.pairs_per_step(16, 16, _device("cpu")) == 16
    assert jb.pairs_per_step(8, 8, _device("cpu")) * 8 ** 4 == 2 ** 20


@pytest.mark.parametrize("limit", [141 * 10 ** 9, 24 * 2 ** 30, None])
def test_accelerator_steps_fill_the_memory_budget(limit):
    pairs = jb.pairs_per_step(32, 32, _device("gpu", limit))
    budget = jb.ACCELERATOR_MEMORY_FRACTION * (limit or jb.ACCELERATOR_MEMORY_DEFAULT)
    per_pair = 32 ** 4 * 4 * jb.LIVE_TENSORS
    assert pairs * per_pair <= budget < (pairs + 1) * per_pair
    assert pairs > 100  # a GPU step holds many pairs, not one


def test_huge_images_still_step_one_pair():
    assert jb.pairs_per_step(512, 512, _device("gpu", 10 ** 9)) == 1


def test_block_size_follows_the_step():
    spec, shape = tk.myrtle(5), (32, 32, 3)
    assert jb.JaxBackend().preferred_block_size(spec, shape) == tk.default_block_size(32, 32)
    assert jb.JaxBackend(pairs=1441).preferred_block_size(spec, shape) == math.isqrt(1441)
    with pytest.raises(ValueError, match="pairs must be"):
        jb.JaxBackend(pairs=0)


@pytest.mark.parametrize("pairs", [3, 7, 40])
def test_any_step_gives_the_same_kernel(pairs):
    """Batches that divide neither Bx nor By (remainders) and steps larger than a row."""
    rng = np.random.default_rng(pairs)
    x = rng.standard_normal((5, 8, 8, 3)).astype(np.float32)
    y = rng.standard_normal((3, 8, 8, 3)).astype(np.float32)
    spec = tk.myrtle(5)
    one = spec.gram(x, y, backend=jb.JaxBackend(pairs=1), progress=False)
    many = spec.gram(x, y, backend=jb.JaxBackend(pairs=pairs), progress=False)
    np.testing.assert_allclose(many, one, rtol=1e-6, atol=1e-7)
