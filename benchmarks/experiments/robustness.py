"""Robustness measures on shifted test sets, from per-image correctness (pure functions).

- Corruption accuracy and error (Hendrycks & Dietterich 2019): with E[s, c] the error of a model
  at severity s of corruption c and E_clean its clean error, the mean corruption accuracy mCA =
  1 - mean over (s, c) of E[s, c]; against a named reference model R, CE_c = sum_s E[s, c] /
  sum_s E_R[s, c], mCE = mean_c CE_c, and relative CE_c = sum_s (E[s, c] - E_clean) /
  sum_s (E_R[s, c] - E_R,clean), relative mCE = its mean over c.
- Effective robustness with intervals (Taori et al. 2020): the logit-linear fit of
  :func:`.generalization.fit_logit_line` over a family of reference models, a model's rho =
  acc_new - sigmoid(b1 logit(acc_orig) + b0), and percentile bootstrap intervals of b1, b0, the
  fit's residual spread and every model's rho, resampling the test images. A shifted set made from
  the original test images (corruptions, the JPEG shift) is paired: one resample of image indices
  serves both sets, so an interval reflects which images were drawn, not two independent draws.
"""
from __future__ import annotations

import numpy as np

from .generalization import effective_robustness, fit_logit_line, logit, sigmoid

__all__ = ["corruption_errors", "mean_corruption_accuracy", "mce", "relative_mce",
           "bootstrap_effective_robustness"]


def _errors(correct) -> np.ndarray:
    correct = np.asarray(correct)
    if correct.dtype != bool:
        raise ValueError(f"correctness must be boolean; got {correct.dtype}")
    return 1.0 - correct.mean(axis=-1)


def corruption_errors(correct) -> np.ndarray:
    """Errors (C, S) of one model from its correctness bool (C corruptions, S severities, N images)."""
    correct = np.asarray(correct)
    if correct.ndim != 3:
        raise ValueError(f"correctness must be (corruptions, severities, images); got {correct.shape}")
    return _errors(correct)


def mean_corruption_accuracy(errors) -> float:
    """1 - mean of errors (C, S)."""
    return float(1.0 - np.mean(errors))


def mce(errors, reference_errors) -> float:
    """Mean over corruptions of sum_s E[s, c] / sum_s E_R[s, c]; errors and reference (C, S)."""
    errors, reference = np.asarray(errors, float), np.asarray(reference_errors, float)
    if errors.shape != reference.shape or errors.ndim != 2:
        raise ValueError(f"errors {errors.shape} and reference {reference.shape} must both be (C, S)")
    if np.any(reference.sum(axis=1) <= 0):
        raise ValueError("the reference model makes no error on some corruption: CE is undefined")
    return float(np.mean(errors.sum(axis=1) / reference.sum(axis=1)))


def relative_mce(errors, clean_error: float, reference_errors, reference_clean_error: float) -> float:
    """Mean over corruptions of sum_s (E[s, c] - E_clean) / sum_s (E_R[s, c] - E_R,clean)."""
    errors, reference = np.asarray(errors, float), np.asarray(reference_errors, float)
    if errors.shape != reference.shape or errors.ndim != 2:
        raise ValueError(f"errors {errors.shape} and reference {reference.shape} must both be (C, S)")
    degradation = (reference - reference_clean_error).sum(axis=1)
    if np.any(degradation <= 0):
        raise ValueError("the reference model does not degrade on some corruption: relative CE is "
                         "undefined there")
    return float(np.mean((errors - clean_error).sum(axis=1) / degradation))


def _accuracies(correct: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Per model, the accuracy over images ``index`` of correct (M, N) or (M, G, N) (G sets of the
    same N images: their mean), clipped half an image away from 0 and 1 so that a logit exists in
    every resample."""
    n = correct.shape[-1] * (correct.shape[1] if correct.ndim == 3 else 1)
    mean = correct[..., index].reshape(len(correct), -1).mean(axis=1)
    return np.clip(mean, 0.5 / n, 1 - 0.5 / n)


def bootstrap_effective_robustness(orig_correct, new_correct, reference, *, paired: bool,
                                   replicates: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """The fit over the reference models and every model's effective robustness, with intervals.

    orig_correct: bool (M, N) per model and original test image; new_correct: bool (M, N') on
    the shifted set (N' = N and the same images in the same order when ``paired``), or, paired,
    (M, G, N): G shifted sets of the same N images pooled (a family of corruptions, all its
    severities), each resample drawing the same images in all of them; reference:
    bool (M,) or indices, the models that define the fit (at least 2). Returns {"b1", "b0",
    "residual_std" (the fit's residual standard deviation in logit units), "rho" (M,), each with
    "interval" (lo, hi) (percentile bootstrap at ``level`` over ``replicates`` resamples of the
    test images), plus "accuracy_orig", "accuracy_new" (M,)}. Point estimates use the full sets.
    """
    orig, new = np.asarray(orig_correct), np.asarray(new_correct)
    if orig.dtype != bool or new.dtype != bool or orig.ndim != 2 or new.ndim not in (2, 3):
        raise ValueError(f"correctness must be boolean (models, images); got {orig.dtype} {orig.shape}, "
                         f"{new.dtype} {new.shape}")
    if orig.shape[0] != new.shape[0]:
        raise ValueError(f"{orig.shape[0]} models on the original set but {new.shape[0]} on the new one")
    if (paired and new.shape[-1] != orig.shape[1]) or (new.ndim == 3 and not paired):
        raise ValueError(f"a paired shift needs the same images in both sets (and pooled sets "
                         f"are paired); got {orig.shape[1]} and {new.shape[-1]}")
    reference = np.asarray(reference)
    reference = np.flatnonzero(reference) if reference.dtype == bool else reference.astype(int)
    if len(reference) < 2:
        raise ValueError(f"the fit needs at least 2 reference models; got {len(reference)}")
    if not 0 < level < 1 or replicates < 2:
        raise ValueError(f"level must lie in (0, 1) and replicates be >= 2; got {level}, {replicates}")

    def estimate(i_orig, i_new):
        a, b = _accuracies(orig, i_orig), _accuracies(new, i_new)
        b1, b0 = fit_logit_line(a[reference], b[reference])
        residual = logit(b[reference]) - (b1 * logit(a[reference]) + b0)
        spread = float(np.sqrt(np.sum(residual ** 2) / max(len(reference) - 2, 1)))
        return b1, b0, spread, effective_robustness(a, b, b1, b0)

    n, n_new = orig.shape[1], new.shape[-1]
    b1, b0, spread, rho = estimate(np.arange(n), np.arange(n_new))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(replicates):
        i_orig = rng.integers(0, n, n)
        i_new = i_orig if paired else rng.integers(0, n_new, n_new)
        try:
            draws.append(estimate(i_orig, i_new))
        except ValueError:   # a resample where the reference models tie on the original set
            continue
    if len(draws) < replicates // 2:
        raise ValueError("the reference models' original accuracies tie in most resamples: no fit")
    tails = (100 * (1 - level) / 2, 100 * (1 + level) / 2)

    def interval(values):
        lo, hi = np.percentile(np.asarray(values, float), tails, axis=0)
        return (float(lo), float(hi)) if np.ndim(lo) == 0 else list(zip(lo.tolist(), hi.tolist()))

    return {"b1": b1, "b0": b0, "residual_std": spread, "rho": rho.tolist(),
            "b1_interval": interval([d[0] for d in draws]), "b0_interval": interval([d[1] for d in draws]),
            "residual_std_interval": interval([d[2] for d in draws]),
            "rho_interval": interval([d[3] for d in draws]), "replicates": len(draws), "level": level,
            "paired": paired, "reference": reference.tolist(),
            "accuracy_orig": orig.mean(axis=1).tolist(),
            "accuracy_new": new.reshape(len(new), -1).mean(axis=1).tolist(),
            "predicted_new": sigmoid(b1 * logit(_accuracies(orig, np.arange(n))) + b0).tolist()}
