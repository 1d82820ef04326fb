"""ISTC: iterative soft thresholding with a homotopy threshold schedule (Zarka et al., ICLR 2020).

Pure functions of ``params``, ``state`` and the input; pixel vectors x (..., k) are coded on a
dictionary D (k, m) of m atoms into non-negative codes z (..., m):

    z_0 = 0,   z_n = ReLU(z_{n-1} + W^T x - W^T D z_{n-1} - lambda_n),   n = 1..N,
    log lambda_n = (1 - n/N) log lambda_0 + (n/N) log lambda*   (so lambda_N = lambda*).

``tied=True``: W = D. ``tied=False``: a free W whose columns are projected so that diag(W^T D) = 1
(w_i <- w_i + (1 - <d_i, w_i>) d_i, the orthogonal projection onto that affine set; ALISTA-like).
D's columns are renormalized to unit norm at every forward, before W's projection.

lambda_0 (state, no gradient): in training, log lambda_0 <- mu log lambda_0 + (1 - mu) log M with M the
batch maximum of |W^T x| and mu = ``lambda0_momentum``; the first training batch sets lambda_0 = M
(``mu = 0`` is the reference code's default, lambda_0 = the previous batch's maximum). A forward
uses the lambda_0 it is given and returns the updated one, as batch norm does with its running
statistics; evaluation leaves it unchanged. Before any training lambda_0 = ``lambda0_init`` (1: the
largest |<d, x>| for unit atoms and unit x).

lambda* (learned, stored as ``log_lambda_star``, no weight decay): kept in [lb, hi] with
lb = ``lambda_star_min`` and hi = max(0.99 lambda_0, lb), so lb <= lambda* < lambda_0 whenever
lambda_0 > lb / 0.99. Two mechanisms, as the reference code's in-place clamp: (1)
:func:`project_onto_constraints`, called after every optimizer step, writes the clipped value
back into the parameters; (2) the forward clips again (against the lambda_0 it uses), passing
gradients straight through, so the bound holds for any params, and a lambda* sitting on its lower
bound (its default start, 0.05) still receives the gradient that lifts it.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from numpy.typing import ArrayLike

UPPER_RATIO = 0.99  # lambda* <= 0.99 lambda_0: strictly below lambda_0


@dataclasses.dataclass(frozen=True)
class ISTCConfig:
    """Hyperparameters of one ISTC layer (see the module docstring for the rules)."""

    dictionary_size: int = 2048
    n_iter: int = 12
    tied: bool = True
    lambda_star: float = 0.05
    lambda_star_min: float = 0.05
    lambda0_momentum: float = 0.9
    lambda0_init: float = 1.0

    def __post_init__(self):
        if self.dictionary_size < 1 or self.n_iter < 1:
            raise ValueError(f"dictionary_size and n_iter must be >= 1; got {self.dictionary_size}, "
                             f"{self.n_iter}")
        if not 0 < self.lambda_star_min <= self.lambda_star:
            raise ValueError(f"need 0 < lambda_star_min <= lambda_star; got {self.lambda_star_min}, "
                             f"{self.lambda_star}")
        if not self.lambda_star < UPPER_RATIO * self.lambda0_init:
            raise ValueError(f"lambda_star ({self.lambda_star}) must be below {UPPER_RATIO} x "
                             f"lambda0_init ({self.lambda0_init})")
        if not 0 <= self.lambda0_momentum < 1:
            raise ValueError(f"lambda0_momentum must be in [0, 1); got {self.lambda0_momentum}")


def normalize_columns(d: jax.Array) -> jax.Array:
    """(k, m) -> the same with unit-norm columns."""
    return d / jnp.maximum(jnp.linalg.norm(d, axis=0, keepdims=True), 1e-12)


def project_w(w: jax.Array, d: jax.Array) -> jax.Array:
    """Free W (k, m) projected so that diag(W^T D) = 1, for unit-norm columns of D (k, m)."""
    return w + d * (1.0 - jnp.sum(d * w, axis=0, keepdims=True))


def coherence(d: ArrayLike) -> jax.Array:
    """Mutual coherence of D (k, m): max_{i != j} |<d_i, d_j>| after normalizing the columns."""
    dn = normalize_columns(jnp.asarray(d, jnp.float32))
    gram = jnp.abs(dn.T @ dn)
    return jnp.max(jnp.where(jnp.eye(gram.shape[0], dtype=bool), 0.0, gram))


def lambda_schedule(lambda0, lambda_star, n_iter: int) -> jax.Array:
    """(N,) thresholds lambda_1..lambda_N of the homotopy: geometric from lambda_0 to lambda*."""
    t = jnp.arange(1, n_iter + 1, dtype=jnp.float32) / n_iter
    lams = jnp.exp((1 - t) * jnp.log(lambda0) + t * jnp.log(lambda_star))
    return lams.at[-1].set(lambda_star)


def ista(x: jax.Array, d: jax.Array, w: jax.Array, lambdas: jax.Array):
    """Positive ISTA with unit step and thresholds ``lambdas`` (N,), from z_0 = 0.

    x: (..., k); d, w: (k, m) used as given (no normalization). Returns z (..., m) and the
    diagnostics (no gradient): ``support_size`` (N,) mean number of active atoms per vector after
    each iteration, ``sparsity`` (N,) the active fraction, ``rec_error`` mean ||D z - x|| / ||x||,
    ``max_wtx`` max |W^T x|. With W = D and constant lambdas this is ISTA for
    min_{z >= 0} 1/2 ||x - D z||^2 + lambda ||z||_1, which converges for ||D||_2 <= 1.
    """
    wtx = x @ w

    def active(z):
        return jax.lax.stop_gradient(jnp.mean(jnp.sum(z > 0, axis=-1, dtype=jnp.float32)))

    def body(z, lam):
        z = jax.nn.relu(z + (x - z @ d.T) @ w - lam)
        return z, active(z)

    z1 = jax.nn.relu(wtx - lambdas[0])  # z_0 = 0: the first step needs no D z
    z, support = jax.lax.scan(body, z1, lambdas[1:])
    support = jnp.concatenate([active(z1)[None], support])
    zs, xs = jax.lax.stop_gradient(z), jax.lax.stop_gradient(x)
    rel = jnp.linalg.norm(zs @ d.T - xs, axis=-1) / jnp.maximum(jnp.linalg.norm(xs, axis=-1), 1e-12)
    diagnostics = {"support_size": support, "sparsity": support / d.shape[1],
                   "rec_error": jnp.mean(rel),
                   "max_wtx": jax.lax.stop_gradient(jnp.max(jnp.abs(wtx)))}
    return z, diagnostics


def init(key: jax.Array, config: ISTCConfig, k: int):
    """Params {"D": (k, m), ["W": (k, m),] "log_lambda_star": ()} and state
    {"log_lambda0": (), "updates": () int32} of an ISTC layer on k-dimensional pixel vectors."""
    kd, kw = jax.random.split(key)
    d = normalize_columns(jax.random.normal(kd, (k, config.dictionary_size), jnp.float32))
    params = {"D": d, "log_lambda_star": jnp.asarray(math.log(config.lambda_star), jnp.float32)}
    if not config.tied:
        w = normalize_columns(jax.random.normal(kw, (k, config.dictionary_size), jnp.float32))
        params["W"] = project_w(w, d)
    state = {"log_lambda0": jnp.asarray(math.log(config.lambda0_init), jnp.float32),
             "updates": jnp.asarray(0, jnp.int32)}
    return params, state


def _star_bounds(config: ISTCConfig, log_lambda0):
    lo = math.log(config.lambda_star_min)
    return lo, jnp.maximum(log_lambda0 + math.log(UPPER_RATIO), lo)


def lambda_star(params, state, config: ISTCConfig) -> jax.Array:
    """The lambda* a forward uses: exp(log_lambda_star) clipped to its bounds (gradient straight
    through the clip)."""
    raw = params["log_lambda_star"]
    lo, hi = _star_bounds(config, state["log_lambda0"])
    return jnp.exp(raw + jax.lax.stop_gradient(jnp.clip(raw, lo, hi) - raw))


def dictionaries(params, config: ISTCConfig):
    """(D, W) as the forward uses them: unit-norm D; W = D, or the free W projected."""
    d = normalize_columns(params["D"])
    return d, (d if config.tied else project_w(params["W"], d))


def apply(params, state, x: jax.Array, config: ISTCConfig, *, train: bool):
    """Code unit-norm pixel vectors x (..., k) -> (z (..., m), new_state, diagnostics).

    diagnostics: those of :func:`ista`, plus ``lambda0`` (used), ``lambda_star`` (used) and
    ``lambdas`` (N,).
    """
    d, w = dictionaries(params, config)
    lam_star = lambda_star(params, state, config)
    lam0 = jnp.exp(state["log_lambda0"])
    lambdas = lambda_schedule(jax.lax.stop_gradient(lam0), lam_star, config.n_iter)
    z, diag = ista(x, d, w, lambdas)
    diag.update(lambda0=lam0, lambda_star=jax.lax.stop_gradient(lam_star),
                lambdas=jax.lax.stop_gradient(lambdas))
    if train:
        log_max = jnp.log(jnp.maximum(diag["max_wtx"], 1e-12))
        mu = jnp.where(state["updates"] == 0, 0.0, config.lambda0_momentum)
        state = {"log_lambda0": mu * state["log_lambda0"] + (1 - mu) * log_max,
                 "updates": state["updates"] + 1}
    return z, state, diag


def project_onto_constraints(params, state, config: ISTCConfig):
    """Params written back onto their constraint sets (after an optimizer step): unit-norm D,
    projected W, log_lambda_star clipped to its bounds for ``state``'s lambda_0."""
    d, w = dictionaries(params, config)
    lo, hi = _star_bounds(config, state["log_lambda0"])
    out = dict(params, D=d, log_lambda_star=jnp.clip(params["log_lambda_star"], lo, hi))
    if not config.tied:
        out["W"] = w
    return out
