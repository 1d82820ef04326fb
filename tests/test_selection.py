"""The selection protocol (tangentless.benchmarks.experiments.selection): every method selects its
hyperparameters on its training images only, from a stated grid; no test data reaches selection."""
import numpy as np
import pytest

from tangentless.benchmarks.cli import build_parser
from tangentless.benchmarks.cli.arguments import selection_grids
from tangentless.benchmarks.datasets import load_digits_images
from tangentless.benchmarks.experiments import selection, small_data
from tangentless.benchmarks.experiments.methods import METHODS, all_params
from tangentless.kernels._shared.defaults import SELECTION_GRIDS
from tangentless.solvers import KernelRidgeClassifier

TINY = {"kernel": {"flip": False, "zca_bias": 1e-2}, "scattering": {"J": 1},
        "cnn": {"width": 8, "epochs": 1, "min_steps": 2, "augment": False},
        "resnet": {"width": 0.0625, "epochs": 1, "min_steps": 2, "augment": False},
        "istc": {"J": 1, "projection": 16, "dictionary_size": 32, "n_iter": 2, "epochs": 1,
                 "min_steps": 2}}
TINY_GRIDS = {"kernel": {"zca_bias": [1e-3, 1e-1], "flip": [False, True]}, "scattering": {"J": [1]},
              "cnn": {"lr": [0.03, 0.1]}, "resnet": {"epochs": [1, 2]}, "istc": {"lr": [0.01, 0.03]}}


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images()
    return images[:400], labels[:400], images[1000:1060], labels[1000:1060]


def test_grid_points_are_the_cartesian_product_in_order():
    assert selection.grid_points({"a": [1, 2], "b": [True, False]}) == [
        {"a": 1, "b": True}, {"a": 1, "b": False}, {"a": 2, "b": True}, {"a": 2, "b": False}]
    assert selection.grid_points({}) == [{}]
    assert selection.best_index([0.5, 0.7, 0.7]) == 1          # ties: the first


def test_every_method_has_a_default_grid_over_its_own_parameters():
    params = all_params()
    assert set(SELECTION_GRIDS) == set(METHODS)
    for method, grid in SELECTION_GRIDS.items():
        selection.check_grid(method, grid, params[method])
    with pytest.raises(ValueError, match="'depth' is not one of its parameters"):
        selection.check_grid("cnn", {"depth": [1]}, params["cnn"])
    with pytest.raises(ValueError, match="expected a non-empty list"):
        selection.check_grid("cnn", {"lr": []}, params["cnn"])


def test_holdout_split_is_stratified_and_reproducible():
    labels = np.repeat(np.arange(4), [8, 4, 2, 1])
    fit, held = selection.holdout_split(labels, 0.25, seed=3)
    assert np.bincount(labels[held], minlength=4).tolist() == [2, 1, 1, 0]
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(len(labels)))
    again = selection.holdout_split(labels, 0.25, seed=3)
    np.testing.assert_array_equal(again[1], held)
    assert selection.holdout_split(np.arange(10), 0.25, seed=0) is None   # one image per class


def test_ridge_selection_is_the_loo_best_point():
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((30, 5)), np.arange(30) % 3
    kernels = {1.0: x @ x.T, 3.0: np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 3.0)}
    ridge, record, seconds = selection.ridge_selection(
        {"scale": [1.0, 3.0]}, (1e-3, 1e-1), lambda point: kernels[point["scale"]], labels)
    scores = [KernelRidgeClassifier(alphas=(1e-3, 1e-1)).fit(kernels[s], labels).loo_score_
              for s in (1.0, 3.0)]
    assert [s["score"] for s in record["scores"]] == scores
    assert record["chosen"]["scale"] == (1.0, 3.0)[int(np.argmax(scores))]
    assert record["chosen"]["alpha"] == ridge.alpha_ and record["grid_size"] == 4
    assert record["method"] == "loo" and record["grid"]["alpha"] == [1e-3, 1e-1] and seconds >= 0


def test_a_set_parameter_is_fixed_and_grid_overrides_the_defaults():
    args = build_parser().parse_args(["bench", "small-data", "--set", "cnn.lr=0.05",
                                      "--grid", "resnet.epochs=[3,4]", "--grid", "kernel.flip=[]"])
    grids = selection_grids(args, METHODS)
    assert "lr" not in grids["cnn"] and grids["cnn"]["epochs"] == SELECTION_GRIDS["cnn"]["epochs"]
    assert grids["resnet"]["epochs"] == [3, 4] and "flip" not in grids["kernel"]
    assert grids["kernel"]["zca_bias"] == SELECTION_GRIDS["kernel"]["zca_bias"]


def _run(digits, test_x, test_y, out):
    train_x, train_y, _, _ = digits
    config = small_data.SmallDataConfig(sizes=(10, 20), trials=1, methods=METHODS, pool_size=20,
                                        params=all_params(TINY), grids=TINY_GRIDS)
    return small_data.run(train_x, train_y, test_x, test_y, config, out, progress=False)


def _training_side(record: dict) -> dict:
    """What a record says about its training side: the selection (without its seconds), the
    ridge's alpha and LOO accuracy, the trial's seed."""
    return {"selection": {k: v for k, v in record["selection"].items() if k != "seconds"},
            **{field: record.get(field) for field in ("alpha", "loo_accuracy", "seed")}}


@pytest.mark.slow
def test_no_test_data_reaches_selection(digits, tmp_path):
    """A poisoned test set (garbage images, permuted labels) gives every method the same selected
    hyperparameters and training-side scores as the clean one; only the test accuracy may change."""
    _, _, test_x, test_y = digits
    rng = np.random.default_rng(1)
    garbage = rng.uniform(-1e3, 1e3, test_x.shape).astype(test_x.dtype)
    clean = _run(digits, test_x, test_y, tmp_path / "clean")
    poisoned = _run(digits, garbage, rng.permutation(test_y), tmp_path / "poisoned")
    key = lambda r: (r["method"], r["n"], r["trial"])   # noqa: E731
    clean_records = {key(r): r for r in clean["records"]}
    poisoned_records = {key(r): r for r in poisoned["records"]}
    assert set(clean_records) == set(poisoned_records) == {
        (m, n, 0) for m in METHODS for n in (10, 20)}
    for k, record in clean_records.items():
        assert _training_side(record) == _training_side(poisoned_records[k]), k
    assert any(record["accuracy"] != poisoned_records[k]["accuracy"]
               for k, record in clean_records.items())     # the poison reached the test side
    grids = {r["method"]: r["selection"] for r in clean["records"] if r["n"] == 20}
    assert grids["kernel"]["method"] == "loo" and grids["kernel"]["grid_size"] == 2 * 2 * 8
    assert grids["cnn"]["method"] == "holdout" and grids["cnn"]["holdout_fraction"] == 0.25
    assert {r["selection"]["method"] for r in clean["records"]
            if r["n"] == 10 and r["method"] in ("cnn", "resnet", "istc")} == {"none"}
    # the kernel's pool matrices: per ZCA bias one plain and one mirror half (flips on = plain +
    # mirror); test rows only for the chosen biases, their mirror half where flips on was chosen
    chosen = {(r["selection"]["chosen"]["zca_bias"], r["selection"]["chosen"]["flip"])
              for r in clean["records"] if r["method"] == "kernel"}
    folder = tmp_path / "clean"
    assert len(list(folder.glob("gram-*/pool.zarr"))) == len(list(folder.glob("gram-*/pool_mirror.zarr"))) == 2
    assert len(list(folder.glob("gram-*/test.zarr"))) == len({bias for bias, _ in chosen})
    assert len(list(folder.glob("gram-*/test_mirror.zarr"))) == len({b for b, f in chosen if f})
    for r in clean["records"]:
        assert r["cost_seconds"] >= r["fit_seconds"] + r["predict_seconds"] - 1e-3
        assert r["selection_seconds"] == r["selection"]["seconds"]
    kernel = next(r for r in clean["records"] if (r["method"], r["n"]) == ("kernel", 20))
    assert kernel["pairs"] == small_data.pool_test_pairs(20, 60, kernel["selection"]["chosen"]["flip"])
    text = (tmp_path / "clean" / "small_data.md").read_text()
    assert "Hyperparameter selection (training data only)" in text and "exact LOO" in text
    assert (tmp_path / "clean" / "small_data_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cnn", "istc", "kernel"])
def test_select_and_fit_takes_the_training_images_only(digits, method):
    train_x, train_y, _, _ = digits
    params = all_params(TINY)[method]
    model, chosen, record, seconds = selection.select_and_fit(
        method, params, TINY_GRIDS[method], train_x[:40], train_y[:40], seed=0)
    points = selection.grid_points(TINY_GRIDS[method])
    assert [{k: v for k, v in s.items() if k != "score"} for s in record["scores"]] == points
    assert all(chosen[k] == record["chosen"][k] for k in TINY_GRIDS[method])
    assert record["method"] == ("loo" if method == "kernel" else "holdout") and seconds > 0
    assert model.predict(train_x[40:50]).shape == (10,)


class _DivergesAbove:
    """A stand-in estimator whose training diverges above a learning rate (on ``diverge_on``
    image counts only, e.g. the refit on all images); otherwise it predicts class 0."""

    def __init__(self, limit, lr, diverge_on=None):
        self.limit, self.lr, self.diverge_on = limit, lr, diverge_on

    def fit(self, images, labels):
        from tangentless.kernels._shared.training import TrainingDivergedError

        if self.lr > self.limit and (self.diverge_on is None or len(labels) in self.diverge_on):
            raise TrainingDivergedError(f"loss is inf at lr {self.lr}")
        return self

    def predict(self, images):
        return np.zeros(len(images), dtype=np.int64)


def _diverging(monkeypatch, limit, diverge_on=None):
    monkeypatch.setattr(selection, "make_estimator", lambda method, params, n, **kw: _DivergesAbove(
        limit, params["lr"], diverge_on))


def test_a_diverging_grid_point_scores_none_and_the_search_goes_on(digits, monkeypatch):
    train_x, train_y, _, _ = digits
    x, y = train_x[:40], train_y[:40]
    grid = {"lr": [0.3, 0.01, 1.0]}
    _diverging(monkeypatch, limit=0.1)
    model, chosen, record, _ = selection.select_and_fit("cnn", all_params(TINY)["cnn"], grid, x, y)
    assert chosen["lr"] == 0.01 and record["chosen"] == {"lr": 0.01}
    assert [s["score"] for s in record["scores"]][0] is None and record["diverged"] == [
        {"lr": 0.3}, {"lr": 1.0}]
    # the best point's refit on all 40 images diverges (here: lr 0.3 trains on the 30 fit images)
    _diverging(monkeypatch, limit=0.1, diverge_on={40})
    _, chosen, record, _ = selection.select_and_fit("cnn", all_params(TINY)["cnn"],
                                                    {"lr": [0.3, 0.01]}, x, y)
    assert chosen["lr"] == 0.01 and record["refit_diverged"] == [{"lr": 0.3}]
    _diverging(monkeypatch, limit=0.001)
    from tangentless.kernels._shared.training import TrainingDivergedError
    with pytest.raises(TrainingDivergedError, match="diverged at every point"):
        selection.select_and_fit("cnn", all_params(TINY)["cnn"], grid, x, y)


def test_without_a_hold_out_a_diverging_configured_lr_gives_way_to_the_grid_s_lower_ones(digits, monkeypatch):
    from tangentless.kernels._shared.training import TrainingDivergedError

    train_x, train_y, _, _ = digits
    one_each = np.array([np.flatnonzero(train_y == c)[0] for c in range(10)])
    x, y = train_x[one_each], train_y[one_each]
    params = {**all_params(TINY)["cnn"], "lr": 0.1}
    grid = {"lr": [0.3, 0.1, 0.03, 0.01]}
    _diverging(monkeypatch, limit=0.05)
    _, chosen, record, _ = selection.select_and_fit("cnn", params, grid, x, y)
    assert record["method"] == "none" and chosen["lr"] == 0.03 == record["chosen"]["lr"]
    assert record["diverged"] == [{"lr": 0.1}]
    _diverging(monkeypatch, limit=1.0)       # no divergence: the configured values, nothing listed
    _, chosen, record, _ = selection.select_and_fit("cnn", params, grid, x, y)
    assert chosen["lr"] == 0.1 and "diverged" not in record
    _diverging(monkeypatch, limit=0.001)
    with pytest.raises(TrainingDivergedError, match="every lower learning rate"):
        selection.select_and_fit("cnn", params, grid, x, y)


def test_the_kernel_search_shares_kernel_halves_and_scores_as_separate_fits(digits, monkeypatch):
    from tangentless.benchmarks.experiments.methods import make_estimator
    from tangentless.kernels import myrtle
    train_x, train_y = digits[0][:30], digits[1][:30]
    params = {**all_params(TINY)["kernel"], "arch": "myrtle5"}
    grid = {"zca_bias": [1e-2], "flip": [False, True]}
    evaluated = []
    engine = type(myrtle(5)).gram

    def counting(spec, a, b=None, **options):
        evaluated.append((len(a), options.get("flip")))
        return engine(spec, a, b, **options)

    monkeypatch.setattr(type(myrtle(5)), "gram", counting)
    model, chosen, record, _ = selection.select_and_fit("kernel", params, grid, train_x, train_y)
    # flips off, then on: the plain half once, the mirror half once, never the flipped kernel whole
    assert evaluated == [(30, False), (30, "mirror")]
    separate = [make_estimator("kernel", {**params, **point}, 30).fit(train_x, train_y).ridge_.loo_score_
                for point in selection.grid_points(grid)]
    assert model.ridge_.loo_score_ == pytest.approx(max(separate))
    assert model.cache is None and chosen["flip"] == [False, True][int(np.argmax(separate))]


def test_the_kernel_whitens_with_all_the_training_images_given(digits, tmp_path):
    from tangentless.kernels import ZCAWhitening
    from tangentless.solvers import CompositionalKernelClassifier
    pool, labels = digits[0][:200], digits[1][:200]
    params = {**all_params(TINY)["kernel"], "arch": "myrtle5"}
    model, *_ = selection.select_and_fit("kernel", params, {"zca_bias": [1e-3, 1e-1]}, pool[:40],
                                         labels[:40], whitening_images=pool)
    expected = ZCAWhitening(bias=model.zca_bias).fit(pool)
    np.testing.assert_allclose(model.zca_.whitening_, expected.whitening_)
    own = CompositionalKernelClassifier("myrtle5", zca_bias=model.zca_bias, flip=False).fit(pool[:40], labels[:40])
    assert not np.allclose(own.zca_.whitening_, expected.whitening_)     # 40 images alone differ
    with pytest.raises(ValueError, match="zca is a ZCAWhitening of bias 0.1 but zca_bias is 0.001"):
        CompositionalKernelClassifier("myrtle5", zca=ZCAWhitening(bias=0.1).fit(pool),
                                      zca_bias=1e-3).fit(pool[:40], labels[:40])
    loaded = CompositionalKernelClassifier.load(model.save(tmp_path / "model.npz"))
    np.testing.assert_array_equal(loaded.predict(digits[2][:20]), model.predict(digits[2][:20]))


@pytest.mark.parametrize("progress", [True, False])
def test_a_search_shows_its_progress_on_stderr_only_when_asked(digits, capsys, progress):
    train_x, train_y = digits[0][:20], digits[1][:20]
    params = {**all_params(TINY)["kernel"], "arch": "myrtle5"}
    selection.select_and_fit("kernel", params, {"zca_bias": [1e-2, 1e-1]}, train_x, train_y,
                             progress=progress)
    out, err = capsys.readouterr()
    assert not out and (("kernel selection" in err) == progress)


@pytest.mark.slow
@pytest.mark.parametrize("grid", [TINY_GRIDS["kernel"], {"zca_bias": [1e-3, 1e-1], "flip": [True]},
                                  {"zca_bias": [1e-3], "flip": [False]}])
def test_selection_pairs_are_the_kernel_evaluations_the_search_computed(digits, monkeypatch, grid):
    from tangentless.benchmarks.experiments.gram_cache import selection_pairs
    from tangentless.kernels import GramCache

    caches = []

    class CountingCache(GramCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            caches.append(self)

    monkeypatch.setattr(selection, "GramCache", CountingCache)
    train_x, train_y, _, _ = digits
    params = all_params(TINY)["kernel"]
    _, _, record, _ = selection.select_and_fit("kernel", params, grid, train_x[:30], train_y[:30])
    assert len(caches) == 1
    assert selection_pairs(record, 30, params["flip"]) == caches[0].evaluations


def test_the_selection_table_counts_the_trials_whose_training_diverged():
    from tangentless.benchmarks.report import selection_table

    def record(**extra):
        return {"method": "cnn", "n": 10, "selection": {
            "method": "none", "reason": "no class has two training images", "grid": {"lr": [0.03, 0.1]},
            "grid_size": 2, "scores": [], "chosen": {"lr": 0.03 if extra else 0.1}, "seconds": 0.0,
            **extra}}

    table = selection_table([record(), record(diverged=[{"lr": 0.1}]), record()])
    row = next(line for line in table.splitlines() if line.startswith("| cnn"))
    assert "diverged at some values in 1 of 3 trials" in row and "lr: 0.1 (2), 0.03" in row
    assert "diverged" not in selection_table([record()])
