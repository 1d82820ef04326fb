"""The distribution-shift experiment (tangentless.benchmarks.experiments.shifts) end to end on real
CIFAR-10 images and shifted sets made in the test, and its analysis on synthetic records."""
import json

import numpy as np
import pytest

from tangentless.benchmarks import corruptions as C
from tangentless.benchmarks.datasets import balanced_subset
from tangentless.benchmarks.experiments import robustness, shifts
from tangentless.benchmarks.experiments.methods import all_params, make_estimator
from tangentless.benchmarks.experiments.selection import select_and_fit


@pytest.fixture(scope="module")
def shifted_folder(cifar10_subset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shifted")
    images, labels = cifar10_subset[2][:60], cifar10_subset[3][:60]
    index = np.arange(60)
    C.write_shifted_sets(images, labels, folder, names=("contrast", "fog"), indices=index,
                         progress=False)
    jpeg = np.stack([C.corrupt(x, "jpeg_compression", 5, np.random.default_rng(0)) for x in images])
    C.write_jpeg_set((images, labels, index), (jpeg, labels, index), folder)
    return folder


def _config(**changes):
    params = all_params({"scattering": {"J": 1}})
    # deterministic members of different accuracy (a CNN family trains minutes, not seconds)
    family = (shifts.FamilyMember("scattering", (("J", 2), ("alphas", [1e-3]))),
              shifts.FamilyMember("scattering", (("J", 1), ("alphas", [10.0]))))
    config = shifts.ShiftsConfig(n=40, methods=("scattering",), family=family, severities=(1, 5),
                                 test_size=20, reference="scattering", replicates=50,
                                 params=params, grids={"scattering": {}})
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_end_to_end_accuracies_match_an_independent_fit_and_the_run_resumes(
        cifar10_subset, shifted_folder, tmp_path):
    train_x, train_y, test_x, test_y = cifar10_subset
    test = (test_x[:60], test_y[:60], np.arange(60))
    out = tmp_path / "out"
    payload = shifts.run((train_x, train_y), test, shifted_folder, _config(), out, progress=False)
    assert set(payload["sets"]) == {"contrast@1", "contrast@5", "fog@1", "fog@5", "jpeg"}
    records = {r["name"]: r for r in payload["records"]}
    assert set(records) == {"scattering", "scattering J=2, alphas=[0.001]", "scattering J=1, alphas=[10.0]"}
    # the same method fitted here, outside the experiment, on the same training subset
    subset = balanced_subset(train_y, 40, seed=0)
    keep = balanced_subset(test[1], 20, seed=0)
    model, *_ = select_and_fit("scattering", all_params({"scattering": {"J": 1}})["scattering"], {},
                               train_x[subset], train_y[subset])
    assert records["scattering"]["accuracy"]["clean"] == pytest.approx(
        np.mean(model.predict(test_x[keep]) == test_y[keep]))
    contrast, _, index, _ = C.load_shifted_set(shifted_folder, "contrast")
    assert records["scattering"]["accuracy"]["contrast@5"] == pytest.approx(
        np.mean(model.predict(contrast[4][keep]) == test_y[keep]))
    groups = payload["analysis"]["groups"]
    assert set(groups) == {"contrast", "fog", "jpeg", "family: digital", "family: weather",
                           "all corruptions"}
    names = payload["analysis"]["models"]
    pooled = groups["all corruptions"]["accuracy_new"][names.index("scattering")]
    assert pooled == pytest.approx(np.mean([records["scattering"]["accuracy"][k]
                                            for k in ("contrast@1", "contrast@5", "fog@1", "fog@5")]))
    assert (out / "shifts_weather.png").is_file() and (out / "shifts_jpeg.png").is_file()
    assert "eff. robustness" in (out / "shifts.md").read_text()
    # a rerun trains nothing: every record keeps the first session's index
    again = shifts.run((train_x, train_y), test, shifted_folder, _config(), out, progress=False)
    assert len(again["sessions"]) == 2 and {r["session"] for r in again["records"]} == {0}


def test_an_interrupted_model_resumes_from_the_sets_it_finished(cifar10_subset, shifted_folder, tmp_path,
                                                               monkeypatch):
    from tangentless.scattering import ScatteringRidgeClassifier
    train_x, train_y, test_x, test_y = cifar10_subset
    test = (test_x[:60], test_y[:60], np.arange(60))
    whole = shifts.run((train_x, train_y), test, shifted_folder, _config(), tmp_path / "whole", progress=False)
    predict, calls = ScatteringRidgeClassifier.predict, []

    def interrupted(self, images):
        calls.append(len(images))
        if len(calls) == 3:           # the first model's clean set and one shifted set are done
            raise KeyboardInterrupt
        return predict(self, images)

    monkeypatch.setattr(ScatteringRidgeClassifier, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shifts.run((train_x, train_y), test, shifted_folder, _config(), tmp_path / "out", progress=False)
    stored = json.loads((tmp_path / "out" / "shifts.json").read_text())
    assert stored["records"] == [] and len(stored["partial"]["scattering"]["correct"]) == 2
    calls.clear()
    monkeypatch.setattr(ScatteringRidgeClassifier, "predict", lambda self, x: calls.append(1) or predict(self, x))
    resumed = shifts.run((train_x, train_y), test, shifted_folder, _config(), tmp_path / "out", progress=False)
    sets = 1 + len(whole["sets"])                       # the clean images and each shifted set
    assert len(calls) == 3 * sets - 2                   # the two finished sets are not predicted again
    assert resumed["partial"] == {}
    assert ({r["name"]: r["correct"] for r in resumed["records"]}
            == {r["name"]: r["correct"] for r in whole["records"]})


def test_shifted_sets_that_do_not_match_the_test_images_are_refused(cifar10_subset, shifted_folder,
                                                                  tmp_path):
    train_x, train_y, test_x, test_y = cifar10_subset
    with pytest.raises(ValueError, match="lacks test images of official index"):
        shifts.run((train_x, train_y), (test_x[:80], test_y[:80], np.arange(80)), shifted_folder,
                   _config(test_size=None), tmp_path, progress=False)
    labels = test_y[:60].copy()
    labels[:30] = (labels[:30] + 1) % 10
    with pytest.raises(ValueError, match="disagrees with the test set's labels"):
        shifts.run((train_x, train_y), (test_x[:60], labels, np.arange(60)), shifted_folder,
                   _config(test_size=None), tmp_path, progress=False)


def test_a_run_reusing_an_earlier_runs_family_gets_its_correctness_on_its_own_images(
        cifar10_subset, shifted_folder, tmp_path):
    train_x, train_y, test_x, test_y = cifar10_subset
    test = (test_x[:60], test_y[:60], np.arange(60))
    source = shifts.run((train_x, train_y), test, shifted_folder, _config(test_size=None),
                        tmp_path / "source", progress=False)
    config = _config(test_size=10, severities=(5,), n=30,
                     params=all_params({"scattering": {"J": 2}}))
    payload = shifts.run((train_x, train_y), test, shifted_folder, config, tmp_path / "reuse",
                         reuse=tmp_path / "source" / "shifts.json", progress=False)
    records = {r["name"]: r for r in payload["records"]}
    assert set(records) == {r["name"] for r in source["records"]}
    assert "reused" not in records["scattering"] and records["scattering"]["changes"] == {}
    # a reused family member equals the same model fitted here on the source's training images
    # and tested on this run's images
    keep = balanced_subset(test[1], 10, seed=0)
    member = config.family[1]
    params = {**all_params({"scattering": {"J": 1}})["scattering"], **dict(member.changes)}
    subset = balanced_subset(train_y, 40, seed=0)
    model = make_estimator("scattering", params, 40).fit(train_x[subset], train_y[subset])
    fog, *_ = C.load_shifted_set(shifted_folder, "fog")
    reused = records[member.name]
    assert reused["reused"]["n"] == 40 and set(reused["accuracy"]) == {"clean", "contrast@5",
                                                                        "fog@5", "jpeg"}
    assert reused["accuracy"]["fog@5"] == pytest.approx(np.mean(model.predict(fog[4][keep]) == test_y[keep]))
    assert reused["accuracy"]["clean"] == pytest.approx(np.mean(model.predict(test_x[keep]) == test_y[keep]))
    report = (tmp_path / "reuse" / "shifts.md").read_text()
    assert "(trained there on 40 images" in report and member.name in report


def test_reuse_is_refused_where_the_runs_saw_different_images_or_sets(cifar10_subset, shifted_folder,
                                                                      tmp_path):
    train_x, train_y, test_x, test_y = cifar10_subset
    test = (test_x[:60], test_y[:60], np.arange(60))
    shifts.run((train_x, train_y), test, shifted_folder, _config(), tmp_path / "source", progress=False)
    good = json.loads((tmp_path / "source" / "shifts.json").read_text())

    def attempt(payload, **changes):
        path = tmp_path / "edited.json"
        path.write_text(json.dumps(payload))
        shifts.run((train_x, train_y), test, shifted_folder, _config(**changes), tmp_path / "out",
                   reuse=path, progress=False)

    with pytest.raises(ValueError, match="lacks test images of official index"):
        attempt(good, test_size=None)       # the source was tested on 20 of the 60 images
    with pytest.raises(ValueError, match="has no results on contrast@2"):
        attempt(good, severities=(2,))
    with pytest.raises(ValueError, match="its test images differ"):
        attempt({**good, "test_sha256": "0" * 64})
    with pytest.raises(ValueError, match="shifted set 'fog' is not this run's file"):
        attempt({**good, "set_checksums": {**good["set_checksums"], "fog": "0" * 64}})
    with pytest.raises(ValueError, match="written by an older version"):
        attempt({k: v for k, v in good.items() if k != "test_index"})
    with pytest.raises(ValueError, match="not a results file of the shifts experiment"):
        attempt({**good, "experiment": "small_data"})
    assert not (tmp_path / "out" / "shifts.json").exists()


def test_corruption_errors_in_the_analysis_match_the_formulas():
    rng = np.random.default_rng(0)
    n, severities = 50, [1, 2, 3, 4, 5]
    sets = [f"{c}@{s}" for c in C.CORRUPTIONS for s in severities]
    records = []
    for name, role, level in (("ref", "method", 0.7), ("a", "family", 0.6), ("b", "family", 0.8),
                              ("c", "family", 0.5)):
        correct = {k: rng.random(n) < level - 0.03 * int(k.split("@")[1]) for k in sets}
        correct["clean"] = rng.random(n) < level
        records.append({"name": name, "role": role,
                        "accuracy": {k: float(v.mean()) for k, v in correct.items()},
                        "correct": {k: shifts._pack(v) for k, v in correct.items()}})
    payload = {"records": records, "test_size": n, "sets": sets, "severities": severities,
               "reference": "ref", "replicates": 20, "seed": 0}
    analysis = shifts.analyze(json.loads(json.dumps(payload)))
    assert analysis["corruption"]["ref"]["relative_mce"] == pytest.approx(1.0)
    a = {r["name"]: r for r in records}["a"]
    errors = np.array([[1 - a["accuracy"][f"{c}@{s}"] for s in severities] for c in C.CORRUPTIONS])
    ref = records[0]
    ref_errors = np.array([[1 - ref["accuracy"][f"{c}@{s}"] for s in severities] for c in C.CORRUPTIONS])
    assert analysis["corruption"]["a"]["mca"] == pytest.approx(1 - errors.mean())
    assert analysis["corruption"]["a"]["mce"] == pytest.approx(
        np.mean(errors.sum(1) / ref_errors.sum(1)))
    assert analysis["corruption"]["a"]["relative_mce"] == pytest.approx(robustness.relative_mce(
        errors, 1 - a["accuracy"]["clean"], ref_errors, 1 - ref["accuracy"]["clean"]))
    assert len(analysis["groups"]["all corruptions"]["sets"]) == 75
    by_model = analysis["by_model"]["a"]       # the same numbers, arranged as the report's rows
    i = analysis["models"].index("a")
    assert by_model["clean"] == pytest.approx(a["accuracy"]["clean"])
    assert by_model["mca"] == analysis["corruption"]["a"]["mca"]
    group = analysis["groups"]["all corruptions"]
    assert by_model["effective_robustness"]["all corruptions"] == {
        "rho": group["rho"][i], "interval": group["rho_interval"][i]}
    assert shifts.corruption_scope(analysis) == "Over the 15 corruptions"

    without = [k for k in sets if not k.startswith("motion_blur@")]   # a run without one corruption
    fewer = shifts.analyze(json.loads(json.dumps({**payload, "sets": without})))
    errors14 = np.array([[1 - a["accuracy"][f"{c}@{s}"] for s in severities]
                         for c in C.CORRUPTIONS if c != "motion_blur"])
    assert fewer["corruption"]["a"]["mca"] == pytest.approx(1 - errors14.mean())
    assert shifts.corruption_scope(fewer) == "Over 14 of the 15 corruptions (without motion_blur)"


def test_a_family_tied_on_the_clean_images_gives_no_fit_and_says_why(tmp_path):
    n, correct = 20, np.arange(20) < 10
    records = [{"name": name, "role": role, "accuracy": {"clean": 0.5, "fog@1": 0.5},
                "correct": {"clean": shifts._pack(correct), "fog@1": shifts._pack(correct)}}
               for name, role in (("m", "method"), ("a", "family"), ("b", "family"))]
    payload = {"records": records, "test_size": n, "sets": ["fog@1"], "severities": [1],
               "reference": "m", "replicates": 10, "seed": 0, "n": 10, "methods": {}}
    out = shifts.write_outputs(payload, tmp_path)
    assert "different original accuracies" in out["analysis"]["groups"]["fog"]["no_fit"]
    assert "No fit over the family" in (tmp_path / "shifts.md").read_text()


def test_the_command_refuses_a_test_set_without_indices_and_bad_severities(
        cifar10_subset, shifted_folder, tmp_path, capsys):
    from tangentless.benchmarks.cli import main
    train_x, train_y, test_x, test_y = cifar10_subset
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "train.npz", images=train_x[:100], labels=train_y[:100])
    np.savez(data / "test.npz", images=test_x[:60], labels=test_y[:60])
    argv = ["bench", "shifts", "--data", str(data), "--shifted", str(shifted_folder),
            "--out", str(tmp_path / "out"), "--quiet"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "has no 'index' array" in capsys.readouterr().err
    np.savez(data / "test.npz", images=test_x[:60], labels=test_y[:60], index=np.arange(60))
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--severities", "2,7"])
    assert exit_.value.code == 2 and "--severities must lie in 1..5" in capsys.readouterr().err
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"experiment": "small_data", "records": []}))
    assert main(argv + ["--n", "40", "--reuse", str(bad)]) == 2
    assert "not a results file of the shifts experiment" in capsys.readouterr().err
