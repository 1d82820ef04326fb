"""One PSD tolerance for every solver (issue 12, item 8), and clear errors for unfinished or
corrupted Gram stores (item 12).

The kernel: a linear Gram of 60 points (rank 6) with exact and near duplicates, perturbed
symmetrically by a few float32 ulps per entry, as a kernel computed with float32 stages and stored
as float64 is: its smallest eigenvalues are ~ -1e-7 x the largest, so K + alpha I with a small
alpha is indefinite although K is PSD up to the precision it was computed in.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from tangentless.solvers import (NotPositiveDefiniteError, as_block_source, bcd, eigen_path,
                                 nystrom_fit, pcg, solve_cholesky)
from tangentless.solvers.iterative import nystrom_preconditioner

BACKENDS = ("scipy", "jax")
FLOAT32_RTOL = 1e-5
N = 60


def rounded_kernel(seed=0) -> tuple[np.ndarray, np.ndarray]:
    """(N, N) float64 PSD-up-to-float32-rounding kernel with duplicates (see the docstring), and
    targets (N, 2) that are linear in the features (in the range of the exact kernel)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 6))
    x = np.concatenate([x, x[:10], x[10:20] + 1e-4 * rng.standard_normal((10, 6))])
    exact = x @ x.T
    noise = rng.uniform(-1, 1, exact.shape)
    k = exact + 8 * np.finfo(np.float32).eps * np.abs(exact) * (noise + noise.T) / 2
    return k, x @ rng.standard_normal((6, 2))


@pytest.fixture(scope="module")
def problem():
    k, y = rounded_kernel()
    alpha = 1e-8 * float(np.mean(np.diag(k)))
    return k, y, alpha


def clipped(k: np.ndarray) -> np.ndarray:
    """K with its negative eigenvalues set to 0."""
    e, v = np.linalg.eigh(k)
    return (v * np.maximum(e, 0)) @ v.T


def test_the_kernel_is_indefinite_at_float32_rounding_level(problem):
    k, _, alpha = problem
    e = np.linalg.eigvalsh(k)
    assert -1e-6 < e[0] / e[-1] < -1e-8  # PSD up to float32 rounding, not up to float64's
    assert e[0] + alpha < 0  # so K + alpha I is indefinite


def fitted(k, coef, centers=None):
    """Fitted values through the clipped kernel (the eigen path's model of K)."""
    kc = clipped(k)
    return (kc if centers is None else kc[:, centers]) @ coef


SOLVERS = {
    "cholesky": lambda k, y, a, **kw: solve_cholesky(k, y, a, **kw),
    "bcd": lambda k, y, a, **kw: bcd(k, y, a, block_size=30, epochs=300, tol=1e-4, **kw).coef,
    "pcg": lambda k, y, a, **kw: pcg(k, y, a, rank=N, tol=1e-10, max_iter=200, **kw).coef,
    "pcg_plain": lambda k, y, a, **kw: pcg(k, y, a, preconditioner=None, tol=1e-10,
                                           max_iter=2000, **kw).coef,
    "nystrom": lambda k, y, a, **kw: nystrom_fit(k, k, y, a, **kw),
    "falkon": lambda k, y, a, **kw: nystrom_fit(k, k, y, a, solver="falkon", tol=1e-12,
                                                max_iter=500, **kw),
}


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(SOLVERS))
def test_every_solver_fits_a_kernel_psd_up_to_its_computing_precision(problem, name, backend):
    k, y, alpha = problem
    reference = eigen_path(k, y, [alpha], psd_rtol=FLOAT32_RTOL, backend=backend)
    expected = fitted(k, reference.coef[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # silent: the jitter is below the rounding
        coef = SOLVERS[name](k, y, alpha, psd_rtol=FLOAT32_RTOL, backend=backend)
    error = np.linalg.norm(fitted(k, coef) - expected) / np.linalg.norm(expected)
    assert error < 1e-3, error


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_storage_precision_default_still_rejects_it(problem, backend):
    """Stored as float64, the kernel gets float64's tolerance, so the advice is needed."""
    k, y, alpha = problem
    with pytest.raises(NotPositiveDefiniteError, match="psd_rtol=1e-05"):
        eigen_path(k, y, [alpha], backend=backend)
    with pytest.raises(NotPositiveDefiniteError, match="psd_rtol=1e-05"):
        solve_cholesky(k, y, alpha, backend=backend)
    # float32 storage carries float32's tolerance by default
    solve_cholesky(k.astype(np.float32), y, alpha, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nystrom_preconditioner_accepts_the_rounded_kernel(problem, backend):
    k, _, alpha = problem
    r = np.random.default_rng(3).standard_normal((N, 2))
    apply = nystrom_preconditioner(as_block_source(k), N, alpha, psd_rtol=FLOAT32_RTOL,
                                   backend=backend)
    out = apply(r)
    assert out.shape == r.shape and np.isfinite(out).all()


def indefinite_kernel(k: np.ndarray) -> np.ndarray:
    """``k`` with one entry lowered so that its smallest eigenvalue is ~ -1e-2 x the largest, in
    the first diagonal block of 30 rows too."""
    bad = k.copy()
    bad[0, 0] -= 1e-2 * np.linalg.eigvalsh(k)[-1]
    return bad


ADVICE = ("if this kernel was computed in float32 (e.g. precision='mixed'), pass "
          "psd_rtol=1e-05 (or more), or increase alpha")

RAISING = dict(SOLVERS, eigen=lambda k, y, a, **kw: eigen_path(k, y, [a], **kw),
               preconditioner=lambda k, y, a, **kw: nystrom_preconditioner(
                   as_block_source(k), N, a, **kw))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(RAISING))
def test_clearly_indefinite_kernels_still_raise_with_advice(problem, name, backend):
    k, y, alpha = problem
    bad = indefinite_kernel(k)
    e = np.linalg.eigvalsh(bad)
    assert e[0] / e[-1] < -1e-3
    with pytest.raises(NotPositiveDefiniteError) as err:
        RAISING[name](bad, y, alpha, psd_rtol=FLOAT32_RTOL, backend=backend)
    message = str(err.value)
    assert ADVICE in message and "x the largest" in message, message
    assert "\n" not in message


def test_alpha_zero_on_a_singular_kernel_still_raises(problem):
    k, y, _ = problem
    with pytest.raises(NotPositiveDefiniteError, match="alpha > 0"):
        solve_cholesky(k, y, 0.0, psd_rtol=FLOAT32_RTOL)


def test_psd_rtol_is_checked(problem):
    k, y, alpha = problem
    for solve in RAISING.values():
        with pytest.raises(ValueError, match=r"psd_rtol must be a number in \[0, 1\)"):
            solve(k, y, alpha, psd_rtol=-1.0, backend="scipy")


def write_store(path: Path, k: np.ndarray, attrs=None, chunks=(15, 15), **kwargs):
    z = zarr.create_array(path, shape=k.shape, chunks=chunks, dtype=k.dtype, **kwargs)
    z[:] = k
    if attrs is not None:
        z.attrs.update(attrs)
    return zarr.open_array(path, mode="r")


def test_a_gram_store_carries_its_tolerance(problem, tmp_path):
    k, y, alpha = problem
    recorded = write_store(tmp_path / "k.zarr", k, {"tangentless": {"psd_rtol": FLOAT32_RTOL}})
    plain = write_store(tmp_path / "plain.zarr", k)
    assert as_block_source(recorded).psd_rtol == FLOAT32_RTOL
    assert as_block_source(plain).psd_rtol == 1e-8
    expected = fitted(k, eigen_path(k, y, [alpha], psd_rtol=FLOAT32_RTOL).coef[0])
    for solve in (SOLVERS["bcd"], SOLVERS["pcg"]):
        coef = solve(recorded, y, alpha)
        assert np.linalg.norm(fitted(k, coef) - expected) < 1e-3 * np.linalg.norm(expected)
        coef = solve(str(tmp_path / "k.zarr"), y, alpha)  # opened from its path
        assert np.linalg.norm(fitted(k, coef) - expected) < 1e-3 * np.linalg.norm(expected)
        with pytest.raises(NotPositiveDefiniteError, match="psd_rtol=1e-05"):
            solve(plain, y, alpha)
    # the in-memory solvers read the attribute of a Zarr array passed to them too
    solve_cholesky(recorded, y, alpha)


# ----------------------------------------------------------------------------- item 12

def test_zarr_blocks_read_chunk_by_chunk_match_the_array(problem, tmp_path):
    k = problem[0]
    source = as_block_source(write_store(tmp_path / "k.zarr", k))  # chunks of 15 x 15
    rows, cols = np.array([40, 3, 17, 59, 16]), np.array([44, 0, 29, 30])
    np.testing.assert_array_equal(source.block(slice(7, 52), slice(14, 46)), k[7:52, 14:46])
    np.testing.assert_array_equal(source.block(rows, slice(7, 52)), k[rows, 7:52])
    np.testing.assert_array_equal(source.block(slice(16, 17), cols), k[16:17][:, cols])
    np.testing.assert_array_equal(source.block(rows, cols), k[np.ix_(rows, cols)])
    np.testing.assert_array_equal(source.diagonal(), np.diag(k))


def test_unfinished_gram_store_blocks_say_resume(tmp_path):
    k = np.eye(30) + 0.1
    path = tmp_path / "gram.zarr"
    z = zarr.create_array(path, shape=k.shape, chunks=(10, 10), dtype="float32",
                          fill_value=np.nan)
    z[:20] = k[:20]  # the last row band of chunks was never written
    for solve in (bcd, pcg):
        with pytest.raises(ValueError) as err:
            solve(zarr.open_array(path, mode="r"), np.ones(30), 0.1, block_size=10)
        message = str(err.value)
        assert "unfinished blocks" in message and "resume the gram run" in message, message
        assert "K[20:30, 0:30]" in message and "chunk (2, 0)" in message, message
        assert f"tangentless gram --out {path}" in message, message
        assert "contains" not in message
    # NaN in an array that is not a store is still reported as NaN
    bad = k.copy()
    bad[25, 3] = np.nan
    with pytest.raises(ValueError, match="contains 1 NaN or inf entries"):
        bcd(bad, np.ones(30), 0.1, block_size=10)


CORRUPTED_READ = textwrap.dedent("""
    import sys
    import zarr
    import numpy as np
    from tangentless.solvers import bcd, eigen_path, pcg, solve_cholesky
    k = zarr.open_array(sys.argv[1], mode="r")
    solve = {"bcd": lambda: bcd(k, np.ones(400), 0.1, block_size=200),
             "pcg": lambda: pcg(k, np.ones(400), 0.1, block_size=200),
             "cholesky": lambda: solve_cholesky(k, np.ones(400), 0.1),
             "eigen": lambda: eigen_path(k, np.ones(400), [0.1])}[sys.argv[2]]
    try:
        solve()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    """)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["bcd", "pcg", "cholesky", "eigen"])
def test_corrupted_chunk_is_one_clear_error_without_asyncio_noise(tmp_path, solver):
    from zarr.codecs import Crc32cCodec

    n = 400
    x = np.random.default_rng(0).standard_normal((n, 5))
    path = tmp_path / "k.zarr"
    write_store(path, x @ x.T + np.eye(n), chunks=(20, 20), compressors=[Crc32cCodec()])
    chunk = path / "c" / "12" / "7"
    data = bytearray(chunk.read_bytes())
    data[10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    script = tmp_path / "read.py"
    script.write_text(CORRUPTED_READ)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(script), str(path), solver], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert "checksum" in lines[0] and "chunk (12, 7)" in lines[0], lines[0]
    assert "Task was destroyed" not in done.stderr
