"""The network diagnosis script's data flow: the unlabeled whitening never sees a held-out image,
and its per-variant summary is the mean and sample std of its trials."""
import numpy as np
import pytest

from tangentless.benchmarks import network_diagnosis
from tangentless.benchmarks.datasets import load_digits_images
from tangentless.kernels import ZCAWhitening


def test_the_unlabeled_whitening_is_fitted_outside_the_held_out_images(monkeypatch):
    images, labels = load_digits_images()
    x, y = images[:200], labels[:200]
    train, held = np.arange(40), np.arange(120, 200)
    seen = []
    fit = ZCAWhitening.fit

    def spy(self, data, target=None):
        seen.append(np.asarray(data).copy())
        return fit(self, data, target)

    monkeypatch.setattr(ZCAWhitening, "fit", spy)
    result = network_diagnosis.run_variant(
        "cnn", {"width": 8, "epochs": 1, "min_steps": 2, "augment": False, "zca_unlabeled": 1e-2},
        x, y, train, held, seed=0)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], x[:120].astype(np.float32))   # every image but the held-out
    assert 0 <= result["held_out"] <= 1 and 0 <= result["fit"] <= 1


def test_summary_is_the_mean_and_sample_std_over_trials():
    rows = [{"variant": "a", "method": "cnn", "held_out": h, "fit": f, "trial": t}
            for t, (h, f) in enumerate([(0.2, 0.5), (0.3, 0.7), (0.4, 0.6)])]
    rows.append({"variant": "b", "method": "resnet", "held_out": 0.5, "fit": 1.0})
    a, b = network_diagnosis.summarize(rows)
    assert a["trials"] == 3 and a["held_out"] == pytest.approx(0.3) and a["fit"] == pytest.approx(0.6)
    assert a["held_out_std"] == pytest.approx(0.1)        # sqrt(((-.1)^2 + 0 + .1^2) / 2)
    assert b == {"variant": "b", "method": "resnet", "trials": 1, "held_out": 0.5,
                 "held_out_std": None, "fit": 1.0}
