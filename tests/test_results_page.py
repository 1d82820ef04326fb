"""The results page (tangentless.benchmarks.results_page): it summarizes whatever results files
exist, marks missing ones, and checks the network target of the small-data protocol."""
import json

import numpy as np
import pytest

from tangentless.benchmarks import results_page
from tangentless.benchmarks.datasets import load_digits_images
from tangentless.benchmarks.experiments import small_data
from tangentless.benchmarks.experiments.methods import all_params


def _row(method, n, mean, std, trials=3):
    return {"method": method, "n": n, "mean": mean, "std": std, "trials": trials}


def test_network_target_compares_the_gap_with_the_networks_std():
    summary = [_row("cnn", 40, 0.1, 0.01), _row("resnet", 40, 0.5, 0.01),     # below 80: ignored
               _row("cnn", 80, 0.30, 0.02), _row("resnet", 80, 0.31, 0.01),   # gap 1 <= 2: met
               _row("cnn", 160, 0.30, 0.02), _row("resnet", 160, 0.35, 0.01),  # gap 5 > 2
               _row("cnn", 320, 0.40, None, 1), _row("resnet", 320, 0.30, 0.01),
               _row("cnn", 640, 0.40, 0.01)]                                   # no resnet
    rows = results_page.network_target(summary)
    assert [(r["n"], r["met"]) for r in rows] == [(80, True), (160, False), (320, None)]
    assert rows[1]["gap"] == pytest.approx(0.05) and rows[1]["cnn_std"] == 0.02


def test_page_summarizes_the_files_there_and_names_the_missing(tmp_path):
    images, labels = load_digits_images()
    params = all_params({"scattering": {"J": 1}})
    config = small_data.SmallDataConfig(sizes=(10, 20), trials=2, methods=("scattering",),
                                        pool_size=40, params=params, grids={"scattering": {}})
    small_data.run(images[:400], labels[:400], images[1000:1100], labels[1000:1100], config,
                   tmp_path / "small_data", data="digits", progress=False)
    # the protocol on another pool, in its own small_data_* folder, gets its own section
    (tmp_path / "small_data_other").mkdir()
    (tmp_path / "small_data_other" / "small_data.json").write_text(
        (tmp_path / "small_data" / "small_data.json").read_text())
    parts = results_page.write_page(tmp_path)
    assert set(parts) == {"small_data", "small_data_other"}
    text = (tmp_path / "results.md").read_text()
    assert "No results file (architectures/architectures.json) yet" in text
    assert "No results file (quickstart/quickstart.json) yet" in text
    saved = json.loads((tmp_path / "small_data" / "small_data.json").read_text())
    accuracy = [r["accuracy"] for r in saved["records"] if r["n"] == 20]
    mean = 100 * sum(accuracy) / len(accuracy)
    assert f"| 20 | {mean:.2f} ± " in text
    assert json.loads((tmp_path / "results.json").read_text())["sections"]["small_data"][
        "config"]["pool_size"] == 40


def test_page_lists_requested_trials_and_store_progress(tmp_path):
    """A run's request is on file before its first record, so the page shows it as running; the
    kernel's stores are listed with their finished blocks."""
    images, labels = load_digits_images()
    params = all_params({"kernel": {"flip": False, "zca_bias": 1e-2}})
    config = small_data.SmallDataConfig(sizes=(10, 20), trials=(2, 1), methods=("kernel",),
                                        pool_size=20, params=params, grids={"kernel": {}})
    out = tmp_path / "small_data"
    small_data.run(images[:200], labels[:200], images[1000:1040], labels[1000:1040], config, out,
                   progress=False)
    payload = json.loads((out / "small_data.json").read_text())
    assert results_page.requested_trials(payload) == {("kernel", 10): 2, ("kernel", 20): 1}
    stores = results_page.store_progress(out)
    assert sorted(s["store"].split("/")[1] for s in stores) == ["pool.zarr", "test.zarr"]
    assert all(s["blocks_done"] == s["blocks"] > 0 for s in stores)
    # a request not started yet (only the session's request on file): asked for, shown as running
    payload["sessions"].append({"date": "2026-12-02T04:01:55+00:00",
                                "request": {"sizes": [10, 20], "methods": ["kernel", "cnn"],
                                            "trials": [3, 3]}})
    wanted = results_page.requested_trials(payload)
    # at n = the pool size (20) the kernel's trials coincide: one is all a request can ask of it
    assert wanted[("kernel", 10)] == 3 and wanted[("kernel", 20)] == 1 and wanted[("cnn", 20)] == 3
    assert results_page._cell(None, 3) == "asked: 0 of 3 trials done"
    asked = results_page._last_asked(payload)[("kernel", 10)]
    assert results_page._cell(None, 3, asked) == "asked 2026-12-02: 0 of 3 trials done"


def test_shift_section_names_the_methods_beyond_their_interval(tmp_path):
    from tangentless.benchmarks.experiments import shifts
    n = 400
    ranks = np.random.default_rng(0).permutation(n)   # image i is solved by models above its rank

    def solved(fraction):
        return ranks < fraction * n

    models = [("robust", "method", 0.5, 0.5), ("fragile", "method", 0.5, 0.1),
              ("a", "family", 0.4, 0.2), ("b", "family", 0.5, 0.3), ("c", "family", 0.6, 0.4)]
    records = []
    for name, role, clean, shifted in models:
        correct = {"clean": solved(clean), "fog@1": solved(shifted)}
        records.append({"name": name, "role": role, "accuracy": {k: float(v.mean()) for k, v in correct.items()},
                        "correct": {k: shifts._pack(v) for k, v in correct.items()}})
    payload = {"experiment": "shifts", "data": "synthetic", "records": records, "test_size": n,
               "sets": ["fog@1"], "severities": [1], "reference": "b", "replicates": 200,
               "seed": 0, "n": 50, "methods": {}}
    shifts.write_outputs(payload, tmp_path / "shifts")
    parts = results_page.write_page(tmp_path)
    verdict = parts["shifts"]["verdicts"]["all corruptions"]
    assert verdict == {"above": ["robust"], "below": ["fragile"]}
    text = (tmp_path / "results.md").read_text()
    assert ("beyond its interval and above every family member's: robust (all corruptions), "
            "robust (family: weather).") in text
    assert "fragile (all corruptions)" in text and "shifts_kernel" not in text
    # each shift on its own too, with its own count of chance crossings
    assert parts["shifts"]["shift_verdicts"] == {"fog": {"above": ["robust"], "below": ["fragile"]}}
    assert ("Per shift (each corruption on its own, its severities together): robust (fog). Below "
            "the fit beyond its interval and below every member: fragile (fog) (2 methods x 1 "
            "shifts") in text


def test_reports_name_no_folder_of_the_machine():
    from tangentless.benchmarks.report import data_label
    assert data_label({"data": "../shared/data/cifar10"}) == "cifar10"
    assert data_label({"data": "/home/someone/data/cifar10/"}) == "cifar10"
    described = "cifar10/train.npz (4000 images), cifar10/test.npz (1000 images)"
    assert data_label({"data": described}) == described and data_label({}) == ""


def test_the_machine_line_names_the_widest_vector_extension():
    from tangentless.benchmarks.report import machine_line
    machine = {"cpu": "AMD EPYC", "cpu_count": 2, "memory_gib": 23.5}
    assert machine_line(machine) == "AMD EPYC, 2 cores, 23.5 GiB"   # recorded before the flags were
    assert machine_line({**machine, "cpu_vector_extensions": ["avx", "avx2", "avx512f", "fma"]}) \
        == "AMD EPYC (AVX-512), 2 cores, 23.5 GiB"
    assert machine_line({**machine, "cpu_vector_extensions": ["avx", "avx2", "fma", "sse4_2"]}) \
        == "AMD EPYC (AVX2), 2 cores, 23.5 GiB"


def test_an_unfinished_accuracy_against_compute_run_is_shown_as_such(tmp_path):
    # the run writes full_data.json (its request) at the start and its report at the end
    (tmp_path / "full_data").mkdir()
    (tmp_path / "full_data" / "full_data.json").write_text(json.dumps(
        {"experiment": "full_data", "data": "cifar10", "records": [], "checksum": "x"}))
    results_page.write_page(tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert "Not finished: 0 (method, n) record(s) so far" in text
    assert "full_data/full_data.png" not in text   # no plot claimed before there is one
