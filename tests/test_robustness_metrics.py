"""Robustness measures (tangentless.benchmarks.experiments.robustness) against hand computations
and against synthetic models whose effective robustness is known by construction."""
import numpy as np
import pytest

from tangentless.benchmarks.experiments import robustness as R
from tangentless.benchmarks.experiments.generalization import logit, sigmoid


def test_corruption_errors_mca_mce_and_relative_mce_by_hand():
    # one model, 2 corruptions x 2 severities x 4 images
    correct = np.array([[[1, 1, 1, 0], [1, 1, 0, 0]],
                        [[1, 0, 0, 0], [0, 0, 0, 0]]], bool)
    errors = R.corruption_errors(correct)
    assert errors.tolist() == [[0.25, 0.5], [0.75, 1.0]]
    assert R.mean_corruption_accuracy(errors) == pytest.approx(1 - 2.5 / 4)
    reference = np.array([[0.5, 0.5], [0.5, 1.0]])
    # CE_1 = 0.75 / 1.0, CE_2 = 1.75 / 1.5
    assert R.mce(errors, reference) == pytest.approx((0.75 + 1.75 / 1.5) / 2)
    # relative: clean errors 0.1 (model) and 0.25 (reference)
    expected = ((0.15 + 0.4) / (0.25 + 0.25) + (0.65 + 0.9) / (0.25 + 0.75)) / 2
    assert R.relative_mce(errors, 0.1, reference, 0.25) == pytest.approx(expected)
    assert R.mce(reference, reference) == 1 and R.relative_mce(reference, 0.25, reference, 0.25) == 1


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="boolean"):
        R.corruption_errors(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="makes no error"):
        R.mce(np.ones((2, 5)) * 0.1, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="does not degrade"):
        R.relative_mce(np.ones((1, 5)) * 0.3, 0.1, np.ones((1, 5)) * 0.2, 0.2)
    ok = np.ones((3, 10), bool)
    with pytest.raises(ValueError, match="same images"):
        R.bootstrap_effective_robustness(ok, ok[:, :5], [0, 1], paired=True)
    with pytest.raises(ValueError, match="at least 2 reference"):
        R.bootstrap_effective_robustness(ok, ok, [0], paired=True)


def _model(rng, acc_orig, acc_new, n):
    """Correctness of a model with exactly these accuracies on n paired images."""
    orig = np.zeros(n, bool)
    orig[rng.permutation(n)[:round(acc_orig * n)]] = True
    new = np.zeros(n, bool)
    new[rng.permutation(n)[:round(acc_new * n)]] = True
    return orig, new


def test_bootstrap_recovers_a_known_line_and_a_known_effective_robustness():
    rng = np.random.default_rng(0)
    b1, b0, n = 0.8, -0.4, 4000
    family = [0.35, 0.45, 0.55, 0.65, 0.75, 0.85]
    models = [_model(rng, a, sigmoid(b1 * logit(a) + b0), n) for a in family]
    robust_orig = 0.6
    models.append(_model(rng, robust_orig, sigmoid(b1 * logit(robust_orig) + b0) + 0.10, n))
    models.append(_model(rng, 0.5, sigmoid(b1 * logit(0.5) + b0), n))   # on the line, not in the fit
    orig = np.stack([m[0] for m in models])
    new = np.stack([m[1] for m in models])
    result = R.bootstrap_effective_robustness(orig, new, np.arange(len(family)), paired=True,
                                              replicates=300, seed=1)
    assert result["b1"] == pytest.approx(b1, abs=0.02) and result["b0"] == pytest.approx(b0, abs=0.02)
    lo, hi = result["b1_interval"]
    assert lo <= b1 <= hi and hi - lo < 0.3
    robust, plain = result["rho_interval"][-2], result["rho_interval"][-1]
    assert robust[0] > 0.05 and robust[0] <= 0.10 <= robust[1]
    assert plain[0] <= 0 <= plain[1]
    assert result["rho"][-2] == pytest.approx(0.10, abs=0.01)
    assert result["residual_std"] < 0.02


def test_smaller_test_sets_give_wider_intervals_and_unpaired_sets_work():
    rng = np.random.default_rng(2)
    widths = []
    for n in (250, 4000):
        models = [_model(rng, a, a - 0.1, n) for a in (0.4, 0.5, 0.6, 0.7)]
        orig, new = np.stack([m[0] for m in models]), np.stack([m[1] for m in models])
        result = R.bootstrap_effective_robustness(orig, new[:, : n // 2], [0, 1, 2, 3], paired=False,
                                                  replicates=200, seed=0)
        (lo, hi), = [result["rho_interval"][1]]
        widths.append(hi - lo)
    assert widths[0] > 2 * widths[1]


def test_pooled_paired_sets_average_their_members():
    rng = np.random.default_rng(3)
    n = 400
    family = [0.4, 0.5, 0.6, 0.7]
    orig = np.stack([_model(rng, a, a, n)[0] for a in family])
    # two shifted sets of the same images: accuracies a - 0.1 and a - 0.2, pooled a - 0.15
    new = np.stack([np.stack([_model(rng, a, a - 0.1, n)[1], _model(rng, a, a - 0.2, n)[1]])
                    for a in family])
    result = R.bootstrap_effective_robustness(orig, new, [0, 1, 2, 3], paired=True, replicates=50)
    assert result["accuracy_new"] == pytest.approx([a - 0.15 for a in family], abs=1e-9)
    with pytest.raises(ValueError, match="pooled sets are paired"):
        R.bootstrap_effective_robustness(orig, new, [0, 1], paired=False)
