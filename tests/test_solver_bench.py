"""The solver benchmark's own arithmetic (tangentless.benchmarks.solver_bench): its Cholesky LOO
route against refitting without each point, and the target verdict it writes."""
import numpy as np
import pytest

from tangentless.benchmarks import solver_bench as S


def test_loo_by_cholesky_equals_refitting_without_each_point():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    k = np.exp(-0.5 * ((x[:, None] - x[None]) ** 2).sum(-1))
    y = np.eye(3)[rng.integers(0, 3, 12)]
    alphas = np.array([1e-3, 1e-1, 10.0])
    got = S.loo_by_cholesky(k, y, alphas)
    for a, alpha in enumerate(alphas):
        for i in range(12):
            rest = np.delete(np.arange(12), i)
            coef = np.linalg.solve(k[np.ix_(rest, rest)] + alpha * np.eye(11), y[rest])
            np.testing.assert_allclose(got[a, i], y[i] - k[i, rest] @ coef, rtol=1e-8, atol=1e-10)


def _record(loo_seconds, holdout_seconds, sklearn_seconds, accuracy=(0.45, 0.45, 0.45)):
    record = {"sklearn_gridsearchcv5": {"seconds": sklearn_seconds, "test_accuracy": accuracy[2]}}
    for route, seconds, acc in (("loo", loo_seconds, accuracy[0]), ("holdout", holdout_seconds, accuracy[1])):
        record[route] = {"seconds": seconds, "test_accuracy": acc, "speedup": round(sklearn_seconds / seconds, 2)}
    return record


def test_the_verdict_says_which_route_meets_the_target_and_by_how_much_one_misses():
    record = _record(5.72, 2.12, 15.85)
    record["loo_options"] = {"n": 4000, "eigh_evd": {"seconds": 5.51}, "eigh_evr": {"seconds": 6.42},
                             "cholesky_per_alpha": {"seconds": 6.19}}
    verdict = S.selection_verdict(record)
    assert verdict["allowed_seconds"] == pytest.approx(15.85 / 3, abs=0.01)
    assert verdict["holdout"] == {"met": True, "accuracy_no_worse": True, "missed_by": 0.0}
    assert not verdict["loo"]["met"]
    assert verdict["loo"]["missed_by"] == pytest.approx(1 - 2.77 / 3, abs=1e-3)
    # the fastest exact route alone takes longer than the target allows
    assert verdict["fastest_exact_loo"] == {"route": "eigh_evd", "seconds": 5.51, "within_allowed": False}


def test_a_fast_route_with_a_worse_test_accuracy_does_not_meet_the_target():
    verdict = S.selection_verdict(_record(1.0, 1.0, 10.0, accuracy=(0.44, 0.46, 0.45)))
    assert not verdict["loo"]["met"] and not verdict["loo"]["accuracy_no_worse"]
    assert verdict["holdout"]["met"] and "fastest_exact_loo" not in verdict
    assert verdict["loo"]["missed_by"] == 0.0   # fast enough: it misses on accuracy alone
