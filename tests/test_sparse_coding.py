"""ISTC against independent references: scikit-learn's positive Lasso, the homotopy formula,
brute-force diagnostics; lambda bounds and the non-gradient lambda_0 state."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Lasso

from tangentless.scattering import sparse_coding as sc


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_ista_approaches_positive_lasso():
    """Unit-step ISTA with W = D and a constant lambda is ISTA for
    min_{z >= 0} 1/2 ||x - D z||^2 + lambda ||z||_1; the step 1 needs ||D||_2 <= 1 (here = 1).
    scikit-learn's Lasso minimizes 1/(2 k) ||x - D z||^2 + alpha ||z||_1 on k samples (the rows
    of D), the same problem with alpha = lambda / k."""
    rng = np.random.default_rng(0)
    k, m, lam = 24, 48, 0.02
    d = rng.normal(size=(k, m))
    d /= np.linalg.norm(d, 2)
    x = _unit_rows(rng.normal(size=(6, k)))
    reference = np.stack([
        Lasso(alpha=lam / k, positive=True, fit_intercept=False, tol=1e-12, max_iter=200_000)
        .fit(d, xi).coef_ for xi in x])
    assert 0 < (reference > 0).sum(1).min() and (reference > 0).sum(1).max() < m  # a real support

    errors = []
    for n_iter in (10, 100, 1000, 5000):
        z, diag = sc.ista(jnp.asarray(x, jnp.float32), jnp.asarray(d, jnp.float32),
                          jnp.asarray(d, jnp.float32), jnp.full((n_iter,), lam, jnp.float32))
        errors.append(float(np.linalg.norm(np.asarray(z) - reference) / np.linalg.norm(reference)))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3, errors
    assert errors[0] > 10 * errors[-1]


def test_homotopy_schedule_matches_formula():
    lam0, lam_star, n = 0.8, 0.05, 7
    got = np.asarray(sc.lambda_schedule(lam0, lam_star, n))
    want = [math.exp((1 - i / n) * math.log(lam0) + (i / n) * math.log(lam_star)) for i in range(1, n + 1)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[-1] == np.float32(lam_star)
    np.testing.assert_allclose(got[1:] / got[:-1], (lam_star / lam0) ** (1 / n), rtol=1e-5)


@pytest.fixture
def layer():
    config = sc.ISTCConfig(dictionary_size=40, n_iter=5, tied=True, lambda0_momentum=0.7)
    params, state = sc.init(jax.random.key(0), config, 16)
    x = jnp.asarray(_unit_rows(np.random.default_rng(1).normal(size=(3, 4, 16))), jnp.float32)
    return config, params, state, x


def test_apply_is_ista_on_the_schedule_with_brute_force_diagnostics(layer):
    config, params, state, x = layer
    z, _, diag = sc.apply(params, state, x, config, train=False)
    d = np.asarray(params["D"], np.float64)
    lambdas = np.asarray(sc.lambda_schedule(1.0, config.lambda_star, config.n_iter), np.float64)
    xs = np.asarray(x, np.float64).reshape(-1, 16)
    zz, support = np.zeros((len(xs), 40)), []
    for lam in lambdas:                        # the recursion as written in the paper
        zz = np.maximum(zz + xs @ d - (zz @ d.T) @ d - lam, 0)
        support.append((zz > 0).sum(1).mean())
    np.testing.assert_allclose(np.asarray(z).reshape(-1, 40), zz, atol=1e-5)
    np.testing.assert_allclose(diag["support_size"], support)
    np.testing.assert_allclose(diag["sparsity"], np.array(support) / 40)
    rel = np.linalg.norm(zz @ d.T - xs, axis=1) / np.linalg.norm(xs, axis=1)
    np.testing.assert_allclose(diag["rec_error"], rel.mean(), rtol=1e-4)
    np.testing.assert_allclose(diag["max_wtx"], np.abs(xs @ d).max(), rtol=1e-5)
    np.testing.assert_allclose(diag["lambdas"], lambdas, rtol=1e-6)


@pytest.mark.slow
def test_lambda0_tracks_batch_max_in_training_only_without_gradient(layer):
    config, params, state, x = layer
    _, same, _ = sc.apply(params, state, x, config, train=False)
    assert same is state
    _, first, diag = sc.apply(params, state, x, config, train=True)
    np.testing.assert_allclose(jnp.exp(first["log_lambda0"]), diag["max_wtx"], rtol=1e-6)
    _, second, diag2 = sc.apply(params, first, 0.5 * x, config, train=True)
    want = 0.7 * first["log_lambda0"] + 0.3 * jnp.log(diag2["max_wtx"])
    np.testing.assert_allclose(second["log_lambda0"], want, rtol=1e-6)
    assert int(second["updates"]) == 2

    def loss_of_state(s):
        return jnp.sum(sc.apply(params, s, x, config, train=True)[0])

    def lambda0_of_params(p):
        return sc.apply(p, state, x, config, train=True)[1]["log_lambda0"]

    assert float(jax.grad(loss_of_state, allow_int=True)(state)["log_lambda0"]) == 0.0
    grads = jax.grad(lambda0_of_params)(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.slow
@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_lambda_star_bounds_hold_after_gradient_steps(layer, direction):
    """Gradient steps that push lambda* down (direction 1: more active codes) or up, each followed
    by the projection: lambda* stays in [lambda_star_min, 0.99 lambda_0] and reaches the bound."""
    config, params, state, x = layer
    _, state, _ = sc.apply(params, state, x, config, train=True)
    lam0 = float(jnp.exp(state["log_lambda0"]))

    def loss(p):
        return -direction * jnp.sum(sc.apply(p, state, x, config, train=False)[0])

    @jax.jit
    def step(p):
        g = jax.grad(loss)(p)
        return sc.project_onto_constraints(jax.tree_util.tree_map(lambda a, b: a - 0.5 * b, p, g), state, config)

    g = jax.grad(loss)(params)["log_lambda_star"]
    assert float(g) != 0.0           # gradient through the clip even on the lower bound
    for _ in range(50):
        params = step(params)
        lam = float(sc.lambda_star(params, state, config))
        assert config.lambda_star_min * (1 - 1e-6) <= lam <= 0.99 * lam0 * (1 + 1e-6) < lam0
    bound = config.lambda_star_min if direction > 0 else 0.99 * lam0
    assert lam == pytest.approx(bound, rel=1e-5)


def test_forward_clips_lambda_star_for_any_params(layer):
    config, params, state, x = layer
    state = dict(state, log_lambda0=jnp.asarray(math.log(0.3), jnp.float32))
    for raw in (math.log(0.001), math.log(5.0)):
        p = dict(params, log_lambda_star=jnp.asarray(raw, jnp.float32))
        lam = float(sc.lambda_star(p, state, config))
        assert config.lambda_star_min * (1 - 1e-6) <= lam <= 0.99 * 0.3 * (1 + 1e-6)


def test_free_w_projection_and_unit_atoms():
    config = sc.ISTCConfig(dictionary_size=30, n_iter=3, tied=False)
    params, state = sc.init(jax.random.key(3), config, 12)
    params = dict(params, D=3.0 * params["D"], W=params["W"] + 0.3)   # off the constraint sets
    d, w = sc.dictionaries(params, config)
    np.testing.assert_allclose(np.linalg.norm(d, axis=0), 1, rtol=1e-6)
    np.testing.assert_allclose(np.diag(np.asarray(w).T @ np.asarray(d)), 1, rtol=1e-5)
    projected = sc.project_onto_constraints(params, state, config)
    np.testing.assert_allclose(projected["D"], d)
    np.testing.assert_allclose(sc.dictionaries(projected, config)[1], w, atol=1e-6)  # idempotent


def test_coherence_brute_force():
    d = np.random.default_rng(2).normal(size=(8, 20))
    dn = d / np.linalg.norm(d, axis=0)
    want = max(abs(dn[:, i] @ dn[:, j]) for i in range(20) for j in range(20) if i != j)
    assert float(sc.coherence(d)) == pytest.approx(want, rel=1e-5)


def test_config_errors():
    with pytest.raises(ValueError, match="lambda_star_min"):
        sc.ISTCConfig(lambda_star=0.01, lambda_star_min=0.05)
    with pytest.raises(ValueError, match="lambda0_momentum"):
        sc.ISTCConfig(lambda0_momentum=1.0)
    with pytest.raises(ValueError, match="n_iter"):
        sc.ISTCConfig(n_iter=0)
