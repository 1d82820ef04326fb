"""The experiments (small-data, full-data, generalization), their reports, and the `quickstart`,
`fit`, `predict` and `bench` subcommands, at tiny sizes on scikit-learn's digits."""
import dataclasses
import json
import math

import numpy as np
import pytest

from tangentless.benchmarks import report
from tangentless.benchmarks.cli import bench, build_parser, models
from tangentless.benchmarks.datasets import balanced_subset, load_digits_images
from tangentless.benchmarks.experiments import full_data, generalization, small_data
from tangentless.benchmarks.experiments.gram_cache import pool_test_gram, pool_test_pairs
from tangentless.benchmarks.experiments.methods import all_params, make_estimator
from tangentless.benchmarks.experiments.persist import load_model, save_model
from tangentless.kernels import Conv, GlobalAvgPool, Relu, ZCAWhitening, myrtle, serial
from tangentless.solvers import KernelRidgeClassifier

PNG = b"\x89PNG\r\n\x1a\n"
# cheap settings for 8x8 digits: no flips (digits are not mirror-symmetric), J=1, tiny networks
TINY = {"kernel": {"flip": False, "zca_bias": 1e-2}, "scattering": {"J": 1},
        "cnn": {"width": 8, "epochs": 1, "min_steps": 2, "augment": False},
        "resnet": {"width": 0.0625, "epochs": 1, "min_steps": 2, "augment": False},
        "istc": {"J": 1, "projection": 16, "dictionary_size": 32, "n_iter": 2, "epochs": 1,
                 "min_steps": 2}}
# no hyperparameter search beyond the ridge alphas (the tests written before selection existed)
FIXED = {m: {} for m in TINY}


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_images()
    return images[:1000], labels[:1000], images[1000:1100], labels[1000:1100]


def _small_config(**changes):
    settings = dict(sizes=(10, 20), trials=2, methods=("kernel", "scattering"), pool_size=40,
                    test_size=None, params=all_params(TINY), grids=FIXED)
    return small_data.SmallDataConfig(**{**settings, **changes})


# --- report ---------------------------------------------------------------------------------------

def test_summary_table_and_plots(tmp_path):
    records = [{"method": "a", "n": 10, "trial": t, "accuracy": acc, "seconds": 1.0 + t}
               for t, acc in enumerate([0.2, 0.4, 0.3])]
    records.append({"method": "b", "n": 20, "trial": 0, "accuracy": 0.5, "seconds": 2.0})
    summary = report.summarize(records)
    assert [(r["method"], r["n"], r["trials"]) for r in summary] == [("a", 10, 3), ("b", 20, 1)]
    assert summary[0]["mean"] == pytest.approx(0.3)
    assert summary[0]["std"] == pytest.approx(math.sqrt((0.01 + 0.01 + 0) / 2))  # ddof = 1
    assert summary[0]["seconds"] == pytest.approx(2.0) and summary[1]["std"] is None
    table = report.accuracy_table(summary)
    assert "30.00 ± 10.00 (3), 2.0 s" in table and "| 10 |" in table and "50.00 (1)" in table
    assert report.plot_accuracy_vs_n(summary, tmp_path / "n.png").read_bytes()[:8] == PNG
    fig = report.accuracy_vs_n_figure(summary, chance=0.1, title="pool 40, test 20")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["a (3 trials)", "b (1 trial)", "chance (10%)"]
    assert "pool 40, test 20" in ax.get_title() and "std over trials" in ax.get_title()
    chance_line = [line for line in ax.get_lines() if list(line.get_ydata()) == [10.0, 10.0]]
    assert chance_line and chance_line[0].get_linestyle() == "--"
    from matplotlib.collections import PathCollection
    hollow = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_facecolors()) == 0]
    assert [list(c.get_offsets()[0]) for c in hollow] == [[20.0, 50.0]]     # b's single trial
    models = [{"name": "x", "orig": 0.9, "new": 0.8}, {"name": "y", "orig": 0.6, "new": 0.45}]
    assert report.plot_robustness(models, tmp_path / "r.png", 1.0, -0.5).read_bytes()[:8] == PNG
    path = report.write_json(tmp_path / "r.json", {"value": np.float32(0.5), "a": np.arange(2)})
    payload = json.loads(path.read_text())
    assert payload["value"] == 0.5 and payload["a"] == [0, 1] and "cpu" in payload["machine"]
    assert report.format_seconds(7300) == "2.0 h" and report.format_seconds(90) == "90.0 s"


# --- effective robustness -------------------------------------------------------------------------

def test_effective_robustness_against_a_hand_computed_logit_fit():
    orig, new = [0.9, 0.7, 0.5, 0.8], [0.85, 0.55, 0.35, 0.6]
    x = [math.log(a / (1 - a)) for a in orig]
    y = [math.log(a / (1 - a)) for a in new]
    mx, my = sum(x) / 4, sum(y) / 4
    b1 = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)
    b0 = my - b1 * mx
    analysis = generalization.analyze([{"name": str(i), "orig": o, "new": n}
                                       for i, (o, n) in enumerate(zip(orig, new))])
    assert analysis["fit"]["b1"] == pytest.approx(b1) and analysis["fit"]["b0"] == pytest.approx(b0)
    assert "4 models" in analysis["fit"]["source"]
    for model, o, n in zip(analysis["models"], orig, new):
        assert model["rho"] == pytest.approx(n - 1 / (1 + math.exp(-(b1 * math.log(o / (1 - o)) + b0))))
        assert model["drop"] == pytest.approx(o - n)
    # the reference ImageNet -> V2 fit, ResNet-50: 76.13 -> 63.21
    fit = generalization.IMAGENET_V2_FIT
    rho = generalization.analyze([{"name": "r50", "orig": 0.7613, "new": 0.6321}], fit)
    expected = 0.6321 - 1 / (1 + math.exp(-(0.923 * math.log(0.7613 / 0.2387) - 0.498)))
    assert rho["models"][0]["rho"] == pytest.approx(expected) and rho["fit"] is fit
    with pytest.raises(ValueError, match="at least 2 models"):
        generalization.fit_logit_line([0.5], [0.4])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        generalization.logit([1.0])


# --- small data -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_pool_test_gram_is_the_kernel_of_pool_and_test_and_is_reused(tmp_path):
    from tangentless.kernels.store import GramStore

    rng = np.random.default_rng(0)
    pool, test = rng.standard_normal((10, 4, 4, 2)), rng.standard_normal((5, 4, 4, 2))
    spec = serial(Conv(3), Relu(), Conv(3), Relu(), GlobalAvgPool())
    expected = spec.gram(np.concatenate([pool, test]).astype(np.float32),
                         pool.astype(np.float32), progress=False)
    k, info = pool_test_gram(spec, pool, test, flip=True, folder=tmp_path, progress=False)
    np.testing.assert_allclose(k, expected + spec.gram(
        np.concatenate([pool, test]).astype(np.float32), pool[:, :, ::-1].astype(np.float32),
        progress=False), rtol=1e-6)
    np.testing.assert_array_equal(k[:10], k[:10].T)
    assert info["pairs"] == pool_test_pairs(10, 5, True) == (55 + 50) * 2
    assert info["evaluations"] >= info["pairs"]   # diagonal blocks are computed whole
    again, _ = pool_test_gram(spec, pool, test, flip=True, folder=tmp_path, progress=False)
    np.testing.assert_array_equal(again, k)
    assert [GramStore(tmp_path / f"{name}.zarr").runs()[-1]["computed"]
            for name in ("pool", "test")] == [0, 0]


@pytest.mark.slow
def test_small_data_runs_resumes_and_reports(tmp_path, digits, monkeypatch):
    train_x, train_y, test_x, test_y = digits
    config = _small_config()
    payload = small_data.run(train_x, train_y, test_x, test_y, config, tmp_path, data="digits",
                             progress=False)
    records = payload["records"]
    assert sorted((r["method"], r["n"], r["trial"]) for r in records) == sorted(
        (m, n, t) for m in config.methods for n in (10, 20) for t in range(2))
    # one kernel trial, recomputed independently: ZCA on all training images, the trial's kernels
    pool = balanced_subset(train_y, 40, seed=0)
    subset = pool[balanced_subset(train_y[pool], 20, seed=small_data.trial_seed(0, 1))]
    zca = ZCAWhitening(bias=1e-2).fit(train_x)   # every training image given, labels unused
    a, b = zca.transform(train_x[subset]), zca.transform(test_x)
    ridge = KernelRidgeClassifier(alphas=tuple(config.params["kernel"]["alphas"]))
    ridge.fit(myrtle(5).gram(a, progress=False), train_y[subset])
    expected = np.mean(ridge.predict(myrtle(5).gram(b, a, progress=False)) == test_y)
    record = next(r for r in records if (r["method"], r["n"], r["trial"]) == ("kernel", 20, 1))
    assert record["accuracy"] == pytest.approx(expected) and record["alpha"] == ridge.alpha_
    assert payload["config"]["pool_size"] == 40 and payload["config"]["test_size"] == 100
    summary = {(r["method"], r["n"]): r for r in payload["summary"]}
    assert summary["kernel", 20]["trials"] == 2
    saved = json.loads((tmp_path / "small_data.json").read_text())
    assert saved["records"] == json.loads(json.dumps(records)) and saved["checksum"]
    assert "| 10 |" in (tmp_path / "small_data.md").read_text()
    assert (tmp_path / "small_data.png").read_bytes()[:8] == PNG
    assert len(list(tmp_path.glob("gram-*/pool.zarr"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("a finished entry was recomputed")

    monkeypatch.setattr(small_data, "_kernel_matrix", refuse)
    monkeypatch.setattr(small_data, "_scattering_matrix", refuse)
    again = small_data.run(train_x, train_y, test_x, test_y, config, tmp_path, progress=False)
    assert again["records"] == records and len(again["sessions"]) == 2
    monkeypatch.undo()
    more = small_data.run(train_x, train_y, test_x, test_y,
                          _small_config(trials=(3, 2), methods=("kernel",)), tmp_path, progress=False)
    new = more["records"][len(records):]
    assert [(r["method"], r["n"], r["trial"], r["session"]) for r in new] == [("kernel", 10, 2, 2)]
    with pytest.raises(ValueError, match="different configuration"):
        small_data.run(train_x, train_y, test_x, test_y, _small_config(pool_size=60), tmp_path,
                       progress=False)


def test_a_pool_of_every_training_image_keeps_the_class_counts(tmp_path, digits):
    """A pool size equal to the number of training images is all of them, not class-balanced (the
    exact CIFAR-10 subset's n = 4,000): n = that size trains on every image, checked against the
    kernel recomputed on them, and the report says the pool is not class-balanced."""
    train_x, train_y, test_x, test_y = digits
    balanced = balanced_subset(train_y, 40, seed=0)
    extra = np.flatnonzero(train_y == 0)[~np.isin(np.flatnonzero(train_y == 0), balanced)][:10]
    images, labels = train_x[np.r_[balanced, extra]], train_y[np.r_[balanced, extra]]
    assert np.bincount(labels).tolist() == [14] + [4] * 9
    config = _small_config(sizes=(10, 50), trials=1, methods=("kernel",), pool_size=50)
    payload = small_data.run(images, labels, test_x, test_y, config, tmp_path, progress=False)
    assert payload["pool_index"] == list(range(50)) and payload["pool_class_counts"] == [14] + [4] * 9
    zca = ZCAWhitening(bias=1e-2).fit(images)
    a, b = zca.transform(images), zca.transform(test_x)
    ridge = KernelRidgeClassifier(alphas=tuple(config.params["kernel"]["alphas"]))
    ridge.fit(myrtle(5).gram(a, progress=False), labels)
    expected = np.mean(ridge.predict(myrtle(5).gram(b, a, progress=False)) == test_y)
    record = {r["n"]: r for r in payload["records"]}
    assert record[50]["accuracy"] == pytest.approx(expected)
    assert "pool of all 50 training images given, not class-balanced (4-14 per class)" in (
        tmp_path / "small_data.md").read_text()


@pytest.mark.parametrize("changes, message", [
    ({"sizes": (15,)}, "multiples of the number of classes"),
    ({"trials": (2, 2, 2)}, "one per size"),
    ({"pool_size": 10}, "smaller than the largest n"),
    ({"methods": ("svm",)}, "methods must be among"),
])
def test_small_data_config_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        _small_config(**changes).check(10)


# --- full data and generalization ------------------------------------------------------------------

@pytest.mark.slow
def test_full_data_measures_cost_and_projects_it(tmp_path, digits):
    """(Replaces the budget test: the fixed time budget gave way to accuracy against compute.)"""
    params = all_params(TINY)
    kernel = {"n_train": 40, "n_test": 100, "fit_seconds": 1.0, "predict_seconds": 1.0,
              "pairs": full_data.pool_test_pairs(40, 100, False), "selection": {"chosen": {"flip": False}}}
    projected = full_data.project("kernel", params["kernel"], [kernel], (400, 100), eigh_c=0.0)
    assert projected["seconds"] == pytest.approx(2.0 * (400 * 401 / 2 + 100 * 400) / (40 * 41 / 2 + 4000))
    assert "pairs" in projected["assumption"] and projected["from_n"] == [40]
    network = {"n_train": 100, "n_test": 50, "fit_seconds": 2.0, "predict_seconds": 0.5,
               "selection": {"chosen": {"epochs": 1}}}
    # epochs at n = 100: max(1, ceil(2 min_steps / 4 steps per epoch)) = 1; at 1,000 still 1
    projected = full_data.project("cnn", params["cnn"], [network], (1000, 500), eigh_c=0.0)
    assert projected["seconds"] == pytest.approx(1000 * 2.0 / 100 + 500 * 0.5 / 50)
    # two sizes: the slope, so that a fixed cost (here 1 s) cancels
    smaller = {**network, "n_train": 50, "fit_seconds": 1.0 + 50 * 0.01}
    larger = {**network, "fit_seconds": 1.0 + 100 * 0.01}
    projected = full_data.project("cnn", params["cnn"], [larger, smaller], (1000, 500), eigh_c=0.0)
    assert projected["seconds"] == pytest.approx(1000 * 0.01 + 500 * 0.5 / 50)
    assert projected["from_n"] == [50, 100] and "slope" in projected["assumption"]
    train_x, train_y, test_x, test_y = digits
    config = full_data.FullDataConfig(sizes=(20, 40), methods=("scattering", "istc"), test_size=50,
                                      full=(50_000, 10_000), params=params,
                                      grids={"scattering": {}, "istc": {"lr": [0.01, 0.03]}})
    payload = full_data.run((train_x, train_y), (test_x, test_y), config, tmp_path, progress=False)
    assert sorted((r["method"], r["n"]) for r in payload["records"]) == [
        ("istc", 20), ("istc", 40), ("scattering", 20), ("scattering", 40)]
    for record in payload["records"]:
        assert record["n_test"] == 50 and 0 <= record["accuracy"] <= 1
        assert record["fit_seconds"] > 0 and record["predict_seconds"] > 0
        assert record["selection"]["grid_size"] == (8 if record["method"] == "scattering" else 2)
    assert set(payload["projection"]) == {"scattering", "istc"}
    assert all(p["from_n"] == [20, 40] and p["seconds"] > 0 for p in payload["projection"].values())
    text = (tmp_path / "full_data.md").read_text()
    assert "Projection to 50,000 training" in text and "hold-out 0.25" in text
    assert (tmp_path / "full_data.png").read_bytes()[:8] == PNG
    # a later run of one method at another size adds to the file; the report describes it all
    payload = full_data.run((train_x, train_y), (test_x, test_y),
                            dataclasses.replace(config, sizes=(60,), methods=("scattering",)),
                            tmp_path, progress=False)
    assert len(payload["records"]) == 5 and len(payload["sessions"]) == 2
    text = (tmp_path / "full_data.md").read_text()
    assert "training sets of 20, 40, 60 images" in text
    assert "| istc | sparse scattering (ISTC)" in text and "| scattering | scattering" in text
    assert text.rstrip().endswith("GiB.") and "Machine: " in text   # one machine ran both
    payload["sessions"][0] = {**payload["sessions"][0], "cpu_vector_extensions": ["avx2"]}
    payload["sessions"][1] = {**payload["sessions"][1], "cpu_vector_extensions": ["avx512f"]}
    full_data.write_outputs(payload, tmp_path)
    assert "Machines (seconds compare only within one): " in (tmp_path / "full_data.md").read_text()
    with pytest.raises(ValueError, match="multiples of the number of classes"):
        full_data.run((train_x, train_y), (test_x, test_y),
                      full_data.FullDataConfig(sizes=(15,), methods=("istc",), params=params),
                      tmp_path / "bad", progress=False)


@pytest.mark.slow
def test_generalization_run_fits_the_logit_line_over_its_models(tmp_path, digits):
    train_x, train_y, test_x, test_y = digits
    shifted = np.clip(test_x + np.random.default_rng(0).normal(0, 0.25, test_x.shape), 0, 1)
    config = generalization.GeneralizationConfig(sizes=(20, 50), methods=("kernel", "scattering"),
                                                 params=all_params(TINY))
    payload = generalization.run((train_x, train_y), (test_x, test_y), (shifted, test_y), config,
                                 tmp_path, data="digits -> noisy digits", progress=False)
    models = payload["analysis"]["models"]
    assert len(models) == 4 and "4 models" in payload["analysis"]["fit"]["source"]
    b1, b0 = generalization.fit_logit_line([m["orig"] for m in models], [m["new"] for m in models])
    assert payload["analysis"]["fit"]["b1"] == pytest.approx(b1)
    for m in models:
        logit = math.log(m["orig"] / (1 - m["orig"]))
        assert m["rho"] == pytest.approx(m["new"] - 1 / (1 + math.exp(-(b1 * logit + b0))))
    assert (tmp_path / "generalization.png").read_bytes()[:8] == PNG
    assert "rho" in (tmp_path / "generalization.md").read_text()
    with pytest.raises(ValueError, match="at least 2 models"):
        generalization.run((train_x, train_y), (test_x, test_y), (shifted, test_y),
                           generalization.GeneralizationConfig(sizes=(20,), methods=("kernel",)),
                           tmp_path / "one", progress=False)


# --- models on disk -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method", ["kernel", "scattering", "cnn", "istc"])
def test_saved_models_predict_like_the_fitted_ones(tmp_path, digits, method):
    train_x, train_y, test_x, _ = digits
    params = all_params(TINY)[method]
    model = make_estimator(method, params, 60).fit(train_x[:60], train_y[:60])
    save_model(tmp_path / "m.npz", method, params, model)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as saved:   # plain arrays only
        assert json.loads(str(saved["__record__"]))["params"]["method"] == method
    loaded_method, loaded_params, loaded = load_model(tmp_path / "m.npz")
    assert (loaded_method, loaded_params) == (method, params)
    np.testing.assert_array_equal(loaded.predict(test_x), model.predict(test_x))


def test_load_model_rejects_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", images=np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="not a tangentless model"):
        load_model(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="no such model file"):
        load_model(tmp_path / "missing.npz")


# --- the subcommands ------------------------------------------------------------------------------

def _parser():
    return build_parser()


def _run(argv):
    args = _parser().parse_args(argv)
    return args.run(args)


@pytest.fixture
def digits_files(tmp_path, digits):
    train_x, train_y, test_x, test_y = digits
    np.savez(tmp_path / "train.npz", images=train_x, labels=train_y)
    np.savez(tmp_path / "test.npz", images=test_x, labels=test_y)
    return tmp_path


def test_subcommands_parse():
    args = _parser().parse_args(["bench", "small-data", "--sizes", "10,20", "--trials", "3,1",
                                 "--methods", "kernel,cnn", "--set", "cnn.epochs=5",
                                 "--set", "kernel.flip=false"])
    assert args.sizes == (10, 20) and args.trials == (3, 1) and args.methods == ("kernel", "cnn")
    assert args.set == [("cnn", "epochs", 5), ("kernel", "flip", False)]
    assert _parser().parse_args(["quickstart"]).out == models.DEFAULT_REPORT
    args = _parser().parse_args(["bench", "cifar10", "--sizes", "100,200", "--grid", "cnn.lr=[0.1]"])
    assert args.sizes == (100, 200) and args.run is bench.run_cifar10   # --sizes replaced --budget
    assert args.grid == [("cnn", "lr", [0.1])]
    args = _parser().parse_args(["bench", "architectures", "--archs", "myrtle5,myrtle10", "--n", "40"])
    assert args.archs == ("myrtle5", "myrtle10") and args.n == 40 and args.run is bench.run_architectures


@pytest.mark.parametrize("argv, message", [
    (["fit", "--data", "missing.npz", "--model", "m.npz"], "no such file: missing.npz"),
    (["predict", "--model", "missing.npz", "--data", "x.npz", "--out", "p.npy"], "no such file"),
    (["bench", "small-data", "--sizes", "10,x"], "comma-separated integers"),
    (["bench", "small-data", "--methods", "kernel,svm"], "unknown method"),
    (["bench", "small-data", "--set", "cnn-epochs"], "METHOD.NAME=VALUE"),
    (["bench", "imagenet", "--data", "missing", "--val", "."], "no such folder: missing"),
    (["bench"], "required"),
])
def test_bad_arguments_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["bench", "small-data", "--data", "{tmp}"], "expected train.npz and test.npz"),
    (["bench", "small-data", "--data", "{tmp}/missing"], "no such file or folder"),
    (["bench", "cifar10", "--generalization", "--cifar10-1", "{tmp}"],
     "cifar10.1_v6_data.npy and cifar10.1_v6_labels.npy not found"),
    (["bench", "small-data", "--data", "{tmp}/train.npz"], "also pass --test"),
    (["bench", "small-data", "--data", "{tmp}/train.npz", "--test", "{tmp}/train.npz",
      "--sizes", "15"], "multiples of the number of classes"),
    (["bench", "small-data", "--data", "{tmp}/train.npz", "--test", "{tmp}/train.npz",
      "--set", "cnn.depth=3"], "cnn has no parameter"),
    (["bench", "imagenet", "--data", "{tmp}", "--val", "{tmp}"], "download ImageNetV2"),
    (["predict", "--model", "{tmp}/train.npz", "--data", "{tmp}/train.npz", "--out", "{tmp}/p.txt"],
     "use a .npy or .csv"),
])
def test_bad_configurations_exit_with_a_clear_message(argv, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "train.npz", images=np.zeros((20, 8, 8, 1)), labels=np.arange(20) % 10)
    argv = [a.replace("{tmp}", str(tmp_path if "npz" in a else tmp_path / "empty")) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        _run(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_fit_and_predict_commands(digits_files, capsys):
    model, out = digits_files / "model.npz", digits_files / "pred.csv"
    assert _run(["fit", "--data", str(digits_files / "train.npz"), "--method", "scattering",
                 "--model", str(model), "--set", "scattering.J=1", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["train_images"] == 1000
    assert _run(["predict", "--model", str(model), "--data", str(digits_files / "test.npz"),
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    predictions = np.loadtxt(out, skiprows=1)
    assert predictions.shape == (100,) and summary["accuracy"] > 0.9
    assert summary["accuracy"] == np.mean(predictions == np.load(digits_files / "test.npz")["labels"])


@pytest.mark.slow
def test_bench_small_data_command(digits_files, capsys):
    out = digits_files / "report"
    assert _run(["bench", "small-data", "--data", str(digits_files), "--sizes", "10,20",
                 "--trials", "1", "--pool-size", "20", "--methods", "scattering,resnet",
                 "--set", "scattering.J=1", "--set", "resnet.width=0.0625",
                 "--set", "resnet.epochs=1", "--set", "resnet.min_steps=1",
                 "--set", "resnet.augment=false", "--out", str(out), "--quiet"]) == 0
    assert "| 20 |" in capsys.readouterr().out
    payload = json.loads((out / "small_data.json").read_text())
    assert {(r["method"], r["n"]) for r in payload["records"]} == {
        (m, n) for m in ("scattering", "resnet") for n in (10, 20)}
    assert payload["config"]["params"]["resnet"]["width"] == 0.0625
    # the data described without this machine's paths: folder and file names, image counts
    assert str(digits_files.parent) not in payload["data"]
    assert payload["data"] == f"{digits_files.name}/train.npz (1000 images), {digits_files.name}/test.npz (100 images)"


@pytest.mark.slow
def test_bench_cifar10_measures_accuracy_against_compute(digits_files, capsys):
    out = digits_files / "cost"
    assert _run(["bench", "cifar10", "--data", str(digits_files), "--sizes", "20,40",
                 "--test-size", "50", "--methods", "istc", "--set", "istc.J=1",
                 "--set", "istc.projection=16", "--set", "istc.dictionary_size=32",
                 "--set", "istc.epochs=1", "--set", "istc.min_steps=2",
                 "--grid", "istc.lr=[0.01,0.03]",
                 "--out", str(out), "--quiet"]) == 0
    assert "Projection to 50,000 training" in capsys.readouterr().out
    payload = json.loads((out / "full_data.json").read_text())
    assert [(r["method"], r["n"]) for r in payload["records"]] == [("istc", 20), ("istc", 40)]
    projection = payload["projection"]["istc"]
    assert projection["from_n"] == [20, 40] and "epochs x N" in projection["assumption"]
    assert all(r["selection"]["grid"] == {"lr": [0.01, 0.03]} for r in payload["records"])


@pytest.mark.slow
def test_quickstart_writes_its_report(tmp_path, monkeypatch, capsys):
    tiny = {**models.QUICKSTART, "train": 100, "test": 100,
            "params": {**TINY, "kernel": {"flip": False}}}
    monkeypatch.setattr(models, "QUICKSTART", tiny)
    assert _run(["quickstart", "--out", str(tmp_path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for method in ("kernel", "scattering", "cnn", "resnet"):
        assert f"| {method} |" in printed
    payload = json.loads((tmp_path / "quickstart.json").read_text())
    assert [r["method"] for r in payload["results"]] == ["kernel", "scattering", "cnn", "resnet"]
    assert payload["results"][0]["accuracy"] > 0.8 and "machine" in payload
    # every method selected on the training digits: the default grids less what digits fix
    selection = {r["method"]: r["selection"] for r in payload["results"]}
    assert selection["kernel"]["method"] == "loo" and "zca_bias" in selection["kernel"]["grid"]
    assert "flip" not in selection["kernel"]["grid"]          # fixed: digits are not mirror-symmetric
    assert selection["cnn"]["method"] == "holdout" and list(selection["cnn"]["grid"]) == ["lr"]
    assert selection["kernel"]["grid_size"] == len(selection["kernel"]["grid"]["zca_bias"]) * len(
        selection["kernel"]["grid"]["alpha"])
    assert (tmp_path / "quickstart.md").read_text().startswith("# Quickstart")
    assert (tmp_path / "quickstart.png").stat().st_size > 0


def test_bench_imagenet_on_tiny_folders(tmp_path, capsys):
    """ImageNet-style folders written here (3 classes, JPEGs): train/val by sorted wnid names,
    ImageNetV2 by folder names 0..2; the published logit fit is used, not a new one."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, names in (("train", ["n01", "n02", "n03"]), ("val", ["n01", "n02", "n03"]),
                         ("v2", ["0", "1", "2"])):
        for label, name in enumerate(names):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(4):
                pixels = np.clip(rng.normal(60 + 70 * label, 30, (40, 48, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / split / name / f"{i}.JPEG")
    out = tmp_path / "report"
    assert _run(["bench", "imagenet", "--data", str(tmp_path / "train"), "--val",
                 str(tmp_path / "val"), "--v2", str(tmp_path / "v2"), "--size", "16",
                 "--sizes", "6,12", "--methods", "scattering", "--set", "scattering.J=1",
                 "--out", str(out), "--quiet"]) == 0
    assert "b1 = 0.9230, b0 = -0.4980" in capsys.readouterr().out
    payload = json.loads((out / "generalization.json").read_text())
    assert payload["test_sizes"] == {"original": 12, "recollected": 12}
    assert [m["n"] for m in payload["analysis"]["models"]] == [6, 12]


def test_small_data_command_adds_methods_to_one_results_file(digits_files, capsys):
    """The help's promise: rerunning into the same --out with other methods adds to the results
    there (the checksum covers every method's grid, not only those of this run)."""
    common = ["bench", "small-data", "--data", str(digits_files), "--sizes", "10", "--trials", "1",
              "--test-size", "20", "--pool-size", "20", "--grid", "scattering.J=[1]",
              "--set", "istc.J=1", "--set", "istc.epochs=1", "--set", "istc.min_steps=1",
              "--grid", "istc.lr=[]", "--out", str(digits_files / "out"), "--quiet"]
    assert _run(common + ["--methods", "scattering"]) == 0
    assert _run(common + ["--methods", "istc"]) == 0
    saved = json.loads((digits_files / "out" / "small_data.json").read_text())
    assert sorted(r["method"] for r in saved["records"]) == ["istc", "scattering"]
    capsys.readouterr()


def test_small_data_flip_grid_shares_the_plain_kernel_and_matches_the_flip_kernel(tmp_path, digits):
    """Flips off and on at one ZCA bias: one plain and one mirror pool store (not a plain and a
    flip-symmetrized one), and a flip-on trial scores what gram(flip=True) gives independently."""
    train_x, train_y, test_x, test_y = digits
    config = _small_config(sizes=(20,), trials=1, methods=("kernel",), pool_size=20,
                           grids={"kernel": {"flip": [False, True]}})
    payload = small_data.run(train_x, train_y, test_x, test_y, config, tmp_path, progress=False)
    (folder,) = tmp_path.glob("gram-*")
    assert sorted(p.name for p in folder.glob("*.zarr")) == sorted(
        ["pool.zarr", "pool_mirror.zarr", "test.zarr"]
        + (["test_mirror.zarr"] if payload["records"][0]["selection"]["chosen"]["flip"] else []))
    pool = balanced_subset(train_y, 20, seed=0)
    zca = ZCAWhitening(bias=1e-2).fit(train_x)
    a, b = zca.transform(train_x[pool]), zca.transform(test_x)
    scores = {}
    for flip in (False, True):
        ridge = KernelRidgeClassifier(alphas=tuple(config.params["kernel"]["alphas"]))
        ridge.fit(myrtle(5).gram(a, flip=flip, progress=False), train_y[pool])
        scores[flip] = (ridge.loo_score_, np.mean(
            ridge.predict(myrtle(5).gram(b, a, flip=flip, progress=False)) == test_y))
    record = payload["records"][0]
    chosen = record["selection"]["chosen"]["flip"]
    assert chosen == (scores[True][0] > scores[False][0])
    assert record["accuracy"] == pytest.approx(scores[chosen][1])
    assert [s["score"] for s in record["selection"]["scores"]] == pytest.approx(
        [scores[False][0], scores[True][0]])


def test_architectures_trains_each_depth_on_the_same_images_and_resumes(tmp_path, digits,
                                                                      monkeypatch):
    from scipy.stats import pearsonr

    from tangentless.benchmarks.experiments import architectures

    train_x, train_y, test_x, test_y = digits
    config = architectures.ArchitecturesConfig(
        n=20, network_trials=2, test_size=30, params=TINY,
        grids={"kernel": {"zca_bias": [1e-3, 1e-1]}, "cnn": {}})
    payload = architectures.run(train_x, train_y, test_x, test_y, config, tmp_path, data="digits",
                                progress=False)
    assert [row["arch"] for row in payload["rows"]] == ["myrtle5", "myrtle7", "myrtle10"]
    pools = set()
    for arch in config.archs:
        saved = json.loads((tmp_path / arch / "small_data.json").read_text())
        pools.add(tuple(saved["pool_index"]))
        assert saved["config"]["params"]["kernel"]["arch"] == saved["config"]["params"]["cnn"][
            "arch"] == arch
        assert sorted((r["method"], r["trial"]) for r in saved["records"]) == [
            ("cnn", 0), ("cnn", 1), ("kernel", 0)]
        assert {r["n"] for r in saved["records"]} == {20}
    assert len(pools) == 1   # every kernel and network trained on the same 20 images
    kernel, network = ([row[k] for row in payload["rows"]] for k in ("kernel_error", "network_error"))
    if payload["pearson_r"] is not None:
        assert payload["pearson_r"] == pytest.approx(pearsonr(kernel, network).statistic)
    assert architectures.correlation([1.0, 2.0, 3.0], [2.0, 4.1, 5.9]) == pytest.approx(
        pearsonr([1.0, 2.0, 3.0], [2.0, 4.1, 5.9]).statistic)
    assert (tmp_path / "architectures.png").read_bytes()[:8] == PNG
    assert "myrtle10" in (tmp_path / "architectures.md").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished entry was recomputed")

    monkeypatch.setattr(small_data, "_kernel_matrix", refuse)
    monkeypatch.setattr(small_data, "select_and_fit", refuse)
    again = architectures.run(train_x, train_y, test_x, test_y, config, tmp_path, data="digits",
                              progress=False)
    assert again["rows"] == payload["rows"]
    with pytest.raises(ValueError, match="archs must be among"):
        architectures.ArchitecturesConfig(archs=("myrtle6",)).check()


def test_cifar10_command_adds_methods_and_sizes_to_one_results_file(digits_files, capsys):
    """Runs of other methods or sizes into one --out add to its results (the checksum covers every
    method's parameters and grid, not only those of the run)."""
    common = ["bench", "cifar10", "--data", str(digits_files), "--test-size", "20",
              "--set", "istc.J=1", "--set", "istc.projection=16", "--set", "istc.dictionary_size=32",
              "--set", "istc.epochs=1", "--set", "istc.min_steps=2", "--grid", "istc.lr=[0.01]",
              "--grid", "scattering.J=[1]", "--out", str(digits_files / "cost"), "--quiet"]
    assert _run(common + ["--methods", "scattering", "--sizes", "20"]) == 0
    assert _run(common + ["--methods", "istc", "--sizes", "20,40"]) == 0
    payload = json.loads((digits_files / "cost" / "full_data.json").read_text())
    assert sorted((r["method"], r["n"]) for r in payload["records"]) == [
        ("istc", 20), ("istc", 40), ("scattering", 20)]
    capsys.readouterr()


def test_small_data_records_each_methods_settings_and_refuses_a_changed_recipe(tmp_path, digits):
    """One method's recipe can change without invalidating the others: its settings are recorded
    per method; rerunning it with other settings is refused while its results exist, and a
    method without results may join with any settings."""
    train_x, train_y, test_x, test_y = digits
    base = dict(sizes=(10,), trials=1, pool_size=20, test_size=None, grids=FIXED)
    first = small_data.SmallDataConfig(methods=("scattering",), params=all_params(TINY), **base)
    small_data.run(train_x, train_y, test_x, test_y, first, tmp_path, progress=False)
    saved = json.loads((tmp_path / "small_data.json").read_text())
    assert saved[small_data.config_key("scattering")]["params"]["J"] == 1
    changed = all_params({**TINY, "scattering": {"J": 1, "alphas": [1.0]},
                          "istc": {**TINY["istc"], "lr": 0.03}})
    with pytest.raises(ValueError, match=r"scattering results made with other settings \(alphas"):
        small_data.run(train_x, train_y, test_x, test_y,
                       small_data.SmallDataConfig(methods=("scattering",), params=changed, **base),
                       tmp_path, progress=False)
    # istc has no results yet: it joins with its own (changed) recipe; scattering's is untouched
    payload = small_data.run(train_x, train_y, test_x, test_y,
                             small_data.SmallDataConfig(methods=("istc",), params=changed, **base),
                             tmp_path, progress=False)
    assert sorted(r["method"] for r in payload["records"]) == ["istc", "scattering"]
    assert payload[small_data.config_key("istc")]["params"]["lr"] == 0.03
    assert payload[small_data.config_key("scattering")]["params"]["alphas"] == list(
        first.params["scattering"]["alphas"])
    assert "lr 0.03" in small_data.method_descriptions(payload)["istc"]


def test_a_method_line_says_selected_where_selection_replaces_the_fixed_value():
    from tangentless.benchmarks.experiments.methods import describe
    from tangentless.benchmarks.experiments.selection import default_grids
    params, grids = all_params(), default_grids(["kernel", "scattering", "cnn", "istc"])
    fixed = describe("kernel", {**params["kernel"], "zca_bias": 1e-5, "flip": True})
    assert "bias 1e-05" in fixed and "flip-symmetrized" in fixed
    searched = describe("kernel", params["kernel"], grids["kernel"])
    assert "ZCA (bias selected)" in searched and "flips selected" in searched
    assert "1e-05" not in searched and "symmetrized" not in searched
    assert "J selected" in describe("scattering", params["scattering"], grids["scattering"])
    network = describe("cnn", params["cnn"], grids["cnn"])
    assert "lr selected" in network and "epochs selected" in network and "peak lr" not in network
    assert "lr selected" in describe("istc", params["istc"], grids["istc"])
    # a grid that searches nothing describes the fixed recipe
    assert describe("cnn", params["cnn"], {}) == describe("cnn", params["cnn"])
