"""Every error a user can cause through the ``tangentless`` command is one line on stderr naming the
problem, exit status 2, no traceback; stdout carries only the command's result (issue 12: items
3, 7, 9, 10, 11, the smaller list, "stdout is for results"; item 8's estimator side)."""
from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from tangentless.benchmarks import datasets
from tangentless.benchmarks.cli import main
from tangentless.benchmarks.cli.arguments import setting
from tangentless.benchmarks.datasets import load_digits_images, load_npz_images
from tangentless.benchmarks.experiments.methods import make_estimator, method_params
from tangentless.benchmarks.experiments.persist import load_model, save_model
from tangentless.kernels._shared.persist import ModelFileError
from tangentless.solvers import CompositionalKernelClassifier, KernelRidgeClassifier
from tangentless.solvers import NotPositiveDefiniteError

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_cli(argv) -> int:
    """main(argv)'s exit status, parser exits included."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code


def one_line_error(capsys, status, *needles) -> str:
    """Assert exit status 2 and a single stderr line (no traceback) containing every needle."""
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    images, labels = load_digits_images()
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, images=images[:40], labels=labels[:40])
    return path


# --------------------------------------------------------------------------- item 3: --set types

@pytest.mark.parametrize("text, value", [("kernel.flip=False", False), ("kernel.flip=false", False),
                                         ("kernel.flip=True", True), ("cnn.augment=true", True)])
def test_bool_spellings_are_bools(text, value):
    assert setting(text)[2] is value


@pytest.mark.parametrize("method, name, value", [
    ("kernel", "flip", "False"), ("kernel", "flip", 1), ("cnn", "augment", "no"),
    ("kernel", "alphas", -1), ("kernel", "alphas", [0.1, "x"]), ("kernel", "alphas", [-1.0]),
    ("cnn", "batch_size", 0), ("cnn", "batch_size", 2.5), ("cnn", "epochs", True),
    ("cnn", "lr", "fast"), ("kernel", "arch", "myrtle6"), ("cnn", "loss", "hinge"),
    ("kernel", "zca_bias", -1.0), ("scattering", "J", 0)])
def test_method_params_type_checks_every_parameter(method, name, value):
    with pytest.raises(ValueError, match=rf"{method}\.{name}") as info:
        method_params(method, **{name: value})
    assert "\n" not in str(info.value) and repr(value) in str(info.value)


def test_method_params_accepts_an_int_for_a_float():
    assert method_params("cnn", lr=1)["lr"] == 1
    assert method_params("kernel", alphas=[1, 0.5])["alphas"] == [1, 0.5]


@pytest.mark.parametrize("value", ["False", "maybe", "0"])
def test_cli_refuses_a_non_bool_flip(tmp_path, capsys, digits_npz, value):
    status = run_cli(["fit", "--data", digits_npz, "--model", tmp_path / "m.npz",
                      "--set", f"kernel.flip={value}"] if value != "False" else
                     ["fit", "--data", digits_npz, "--model", tmp_path / "m.npz",
                      "--set", "kernel.flip=no"])
    one_line_error(capsys, status, "kernel.flip")


@pytest.mark.parametrize("text", ["cnn.batch_size=0", "kernel.alphas=-1"])
def test_cli_refuses_bad_numbers_before_training(tmp_path, capsys, digits_npz, text):
    method = text.split(".")[0]
    status = run_cli(["fit", "--data", digits_npz, "--method", method, "--model", tmp_path / "m.npz",
                      "--set", text])
    one_line_error(capsys, status, text.split("=")[0])


# ------------------------------------------------------------------------ item 7: float labels

def test_non_integral_labels_are_refused(tmp_path, capsys):
    path = tmp_path / "half.npz"
    np.savez(path, images=np.zeros((2, 8, 8, 1), np.float32), labels=np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="integ"):
        load_npz_images(path)
    one_line_error(capsys, run_cli(["fit", "--data", path, "--model", tmp_path / "m.npz"]), "labels")


def test_integral_float_labels_are_accepted(tmp_path):
    path = tmp_path / "whole.npz"
    np.savez(path, images=np.zeros((2, 8, 8, 1), np.float32), labels=np.array([0.0, 1.0]))
    assert load_npz_images(path)[1].tolist() == [0, 1]


# -------------------------------------------------------------------- item 9: malformed models

@pytest.fixture(scope="module")
def kernel_model(tmp_path_factory, digits_npz):
    """A fitted ``kernel`` method file (20 digits, no flips) and its predict data."""
    images, labels = load_npz_images(digits_npz)
    params = method_params("kernel", flip=False, alphas=[1e-3, 1e-1])
    model = make_estimator("kernel", params, 20).fit(images[:20], labels[:20])
    path = tmp_path_factory.mktemp("model") / "kernel.npz"
    save_model(path, "kernel", params, model)
    return path


def _members(path) -> tuple[dict, dict]:
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(str(arrays.pop("__record__"))), arrays


def _write(path, record, arrays) -> pathlib.Path:
    np.savez(path, __record__=np.array(record if isinstance(record, str) else json.dumps(record)),
             **arrays)
    return path


def _without(key):
    def edit(record, arrays):
        arrays.pop(key)
    return edit


def _meta(edit_meta):
    def edit(record, arrays):
        edit_meta(record["meta"]["model"])
    return edit


def _array(key, value):
    def edit(record, arrays):
        arrays[key] = value(arrays[key])
    return edit


MALFORMED = {
    "missing coef": _without("model.ridge_.coef"),
    "missing zca whitening": _without("model.zca_.whitening"),
    "missing train images": _without("model.train_images"),
    "empty estimator params": _meta(lambda m: m.update(params={})),
    "non-dict estimator meta": _meta(lambda m: m.update(meta=[1, 2])),
    "non-dict child meta": _meta(lambda m: m["meta"].update({"ridge_": "oops"})),
    "vector alpha": _meta(lambda m: m["meta"]["ridge_"]["meta"].update(alpha=[1.0, 2.0])),
    "negative alpha": _meta(lambda m: m["meta"]["ridge_"]["meta"].update(alpha=-1.0)),
    "string n_features_in": _meta(lambda m: m["meta"]["ridge_"]["meta"].update(n_features_in="x")),
    "unknown solver": _meta(lambda m: m["meta"]["ridge_"]["meta"].update(solver="magic")),
    "shortened classes": _array("model.ridge_.classes", lambda a: a[:-1]),
    "coef of the wrong rows": _array("model.ridge_.coef", lambda a: a[:-1]),
    "2-D offset": _array("model.ridge_.offset", lambda a: a[None]),
    "whitening of the wrong size": _array("model.zca_.whitening", lambda a: a[:-1, :-1]),
    "train images of the wrong shape": _array("model.train_images", lambda a: a[:, :4]),
    "NaN coef": _array("model.ridge_.coef", lambda a: np.full_like(a, np.nan)),
    "non-dict record params": lambda record, arrays: record.update(params="x"),
    "string method params": lambda record, arrays: record["params"].update(params="x"),
    "mistyped method params": lambda record, arrays: record["params"]["params"].update(flip="no"),
    "unknown method": lambda record, arrays: record["params"].update(method="magic"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_model_files_are_one_line_errors(tmp_path, capsys, kernel_model, digits_npz, case):
    record, arrays = _members(kernel_model)
    MALFORMED[case](record, arrays)
    path = _write(tmp_path / "bad.npz", record, arrays)
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert "\n" not in str(info.value)
    status = run_cli(["predict", "--model", path, "--data", digits_npz, "--out", tmp_path / "p.npy"])
    one_line_error(capsys, status, str(path))


def test_deep_json_record_is_a_model_file_error(tmp_path, capsys, kernel_model, digits_npz):
    _, arrays = _members(kernel_model)
    path = _write(tmp_path / "deep.npz", "[" * 100_000 + "]" * 100_000, arrays)
    with pytest.raises(ModelFileError):
        load_model(path)
    status = run_cli(["predict", "--model", path, "--data", digits_npz, "--out", tmp_path / "p.npy"])
    one_line_error(capsys, status, str(path))


def _huge_header_member(path, name: str) -> None:
    """Rewrite member ``name`` of the .npz at ``path`` with a header claiming 1e13 float64s."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (10 ** 13,)}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(b"\0" * 64)
    with zipfile.ZipFile(path) as zin:
        members = {m: zin.read(m) for m in zin.namelist()}
    members[f"{name}.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as zout:
        for m, data in members.items():
            zout.writestr(m, data)


def test_npy_header_claiming_1e13_elements_is_refused_before_reading(tmp_path, capsys, kernel_model,
                                                                     digits_npz):
    path = tmp_path / "huge.npz"
    path.write_bytes(kernel_model.read_bytes())
    _huge_header_member(path, "model.ridge_.coef")
    with pytest.raises(ModelFileError, match="model.ridge_.coef"):
        load_model(path)
    status = run_cli(["predict", "--model", path, "--data", digits_npz, "--out", tmp_path / "p.npy"])
    one_line_error(capsys, status, "model.ridge_.coef")


def test_huge_header_in_an_estimator_file(tmp_path):
    k = np.eye(6) + 0.1
    ridge = KernelRidgeClassifier(alphas=0.1).fit(k, [0, 1, 0, 1, 0, 1])
    path = ridge.save(tmp_path / "ridge.npz")
    _huge_header_member(path, "coef")
    with pytest.raises(ModelFileError, match="coef"):
        KernelRidgeClassifier.load(path)


def test_well_formed_model_still_predicts(tmp_path, capsys, kernel_model, digits_npz):
    status = run_cli(["predict", "--model", kernel_model, "--data", digits_npz, "--out",
                      tmp_path / "p.npy", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert json.loads(captured.out)["images"] == 40
    assert captured.err == ""   # --quiet: no progress, no log lines


def test_predict_shows_progress_on_stderr_only(tmp_path, capfd, kernel_model, digits_npz):
    status = run_cli(["predict", "--model", kernel_model, "--data", digits_npz, "--out",
                      tmp_path / "p.npy"])
    captured = capfd.readouterr()
    assert status == 0
    json.loads(captured.out)            # stdout: only the JSON result
    assert "%" in captured.err or "it/s" in captured.err or "/" in captured.err


# ---------------------------------------------------------------- item 10: output paths first

def test_gram_out_existing_folder(tmp_path, capsys):
    (tmp_path / "K.npy").mkdir()
    one_line_error(capsys, run_cli(["gram", "--n", "4", "--quiet", "--out", tmp_path / "K.npy"]),
                   "folder")


def test_gram_out_wrong_suffix(tmp_path, capsys):
    one_line_error(capsys, run_cli(["gram", "--n", "4", "--quiet", "--out", tmp_path / "K.txt"]),
                   ".npy")
    assert not (tmp_path / "K.txt").exists()


def test_gram_out_missing_parent_is_refused(tmp_path, capsys):
    out = tmp_path / "nonexist" / "K.npy"
    one_line_error(capsys, run_cli(["gram", "--n", "4", "--quiet", "--out", out]), "does not exist")
    assert not out.parent.exists()


def test_gram_out_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, run_cli(["gram", "--n", "4", "--quiet", "--out", tmp_path / "file" / "K.npy"]),
                   "not a folder")


def test_fit_model_existing_folder(tmp_path, capsys, digits_npz):
    (tmp_path / "model").mkdir()
    one_line_error(capsys, run_cli(["fit", "--data", digits_npz, "--model", tmp_path / "model"]),
                   "folder")


def test_predict_out_checked_before_loading(tmp_path, capsys, kernel_model, digits_npz):
    (tmp_path / "p.npy").mkdir()
    one_line_error(capsys, run_cli(["predict", "--model", kernel_model, "--data", digits_npz,
                                    "--out", tmp_path / "p.npy"]), "folder")


def test_quickstart_unwritable_report_folder_fails_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    tic = time.perf_counter()
    status = run_cli(["quickstart", "--quiet", "--out", tmp_path / "file" / "report"])
    assert time.perf_counter() - tic < 5
    one_line_error(capsys, status, "not a folder")


# ----------------------------------------------------------------------- item 11: library errors

def _jpeg(path: pathlib.Path, truncate: bool = False) -> None:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
        buffer, "JPEG")
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 3] if truncate else data)


def test_bench_imagenet_truncated_jpeg(tmp_path, capsys):
    for root in ("train", "val"):
        for c in ("a", "b"):
            _jpeg(tmp_path / root / c / "0.jpg", truncate=(root, c) == ("train", "b"))
    for c in ("0", "1"):
        _jpeg(tmp_path / "v2" / c / "0.jpg")
    status = run_cli(["bench", "imagenet", "--data", tmp_path / "train", "--val", tmp_path / "val",
                      "--v2", tmp_path / "v2", "--size", "8", "--quiet", "--out", tmp_path / "out"])
    one_line_error(capsys, status, "0.jpg")


@pytest.mark.slow
def test_unreachable_scheduler_is_a_quick_one_line_error(capsys):
    tic = time.perf_counter()
    status = run_cli(["gram", "--n", "4", "--quiet", "--scheduler", "tcp://127.0.0.1:1"])
    assert time.perf_counter() - tic < 10
    one_line_error(capsys, status, "tcp://127.0.0.1:1")


# ------------------------------------------------------------------------------------- smaller

def test_images_folder_is_named_a_folder(tmp_path, capsys):
    one_line_error(capsys, run_cli(["gram", "--images", tmp_path, "--quiet"]), "is a folder")


def test_unknown_top_level_option_is_named(capsys):
    one_line_error(capsys, run_cli(["--bogus"]), "--bogus")


def test_forged_sidecar_and_cache_are_reverified(tmp_path):
    archive = tmp_path / datasets.CIFAR10_ARCHIVE
    archive.write_bytes(b"not the archive")
    stat = archive.stat()
    (tmp_path / (archive.name + ".verified")).write_text(json.dumps(
        {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "md5": datasets.CIFAR10_MD5}))
    np.savez(tmp_path / "cifar-10-train.npz", images=np.zeros((2, 32, 32, 3), np.uint8),
             labels=np.array([0, 42]), source_md5=np.array(datasets.CIFAR10_MD5))
    with pytest.raises(ValueError):
        datasets.load_cifar10("train", root=tmp_path, download=False)


def test_blank_image_in_a_prediction_batch(digits_npz):
    images, labels = load_npz_images(digits_npz)
    model = CompositionalKernelClassifier(flip=False, alphas=(1e-3,)).fit(images[:20], labels[:20])
    batch = images[20:30].copy()
    batch[3] = 0.0
    predictions = model.predict(batch)
    assert predictions.shape == (10,)
    np.testing.assert_array_equal(np.delete(predictions, 3), np.delete(model.predict(images[20:30]), 3))


def test_blank_training_image_is_named(digits_npz):
    images, labels = load_npz_images(digits_npz)
    images = images[:20].copy()
    images[5] = 0.0
    with pytest.raises(ValueError, match=r"\b5\b"):
        CompositionalKernelClassifier(flip=False, alphas=(1e-3,)).fit(images, labels[:20])


# ------------------------------------------------------------------------ stdout is for results

@pytest.mark.slow
def test_fit_stdout_is_json(tmp_path, digits_npz):
    result = subprocess.run([sys.executable, "-m", "tangentless.benchmarks.cli", "fit", "--data",
                             str(digits_npz), "--model", str(tmp_path / "m.npz"), "--set",
                             "kernel.flip=false"], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["method"] == "kernel"


# ------------------------------------------------------------ item 8: the estimators' psd_rtol

def _rounded_kernel():
    """A PSD-up-to-float32-rounding kernel with duplicates (smallest eigenvalues ~ -1e-7 relative)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6))
    x = np.concatenate([x, x[:10], x[10:20] + 1e-4 * rng.standard_normal((10, 6))])
    exact = x @ x.T
    noise = rng.uniform(-1, 1, exact.shape)
    k = exact + 8 * np.finfo(np.float32).eps * np.abs(exact) * (noise + noise.T) / 2
    labels = (x[:, 0] > 0).astype(int)
    return k, labels


def test_holdout_cholesky_follows_psd_rtol(tmp_path):
    k, labels = _rounded_kernel()
    alpha = 1e-8 * float(np.mean(np.diag(k)))
    options = dict(alphas=(alpha, 2 * alpha), selection="holdout", solver="cholesky")
    with pytest.raises(NotPositiveDefiniteError, match="psd_rtol"):
        KernelRidgeClassifier(**options).fit(k, labels)
    model = KernelRidgeClassifier(psd_rtol=1e-5, **options).fit(k, labels)
    assert model.psd_rtol_ == 1e-5
    loaded = KernelRidgeClassifier.load(model.save(tmp_path / "m.npz"))
    assert loaded.psd_rtol == 1e-5
    np.testing.assert_array_equal(loaded.predict(k), model.predict(k))


@pytest.mark.slow
def test_quickstart_stdout_is_only_the_table(tmp_path, monkeypatch, capfd):
    from tangentless.benchmarks.cli import models
    tiny = {**models.QUICKSTART, "train": 50, "test": 50,
            "params": {"kernel": {"flip": False}, "scattering": {"J": 1},
                       "cnn": {"width": 8, "epochs": 1, "min_steps": 2, "augment": False},
                       "resnet": {"width": 0.0625, "epochs": 1, "min_steps": 2, "augment": False}}}
    monkeypatch.setattr(models, "QUICKSTART", tiny)
    assert run_cli(["quickstart", "--out", tmp_path]) == 0
    lines = [line for line in capfd.readouterr().out.splitlines() if line.strip()]
    assert lines[0].startswith("# Quickstart")
    assert all(line.startswith("|") for line in lines[1:]), lines


def test_refused_run_leaves_no_empty_out_folder(tmp_path, capsys):
    """bench cifar10 makes --out before reading its data; refused there, it removes the folders it
    made (a/b) and nothing above them."""
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "a" / "b"
    assert _exit_status(["bench", "cifar10", "--data", str(data), "--out", str(out)]) == 2
    assert "missing train.npz" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_refused_run_keeps_a_folder_that_existed_or_holds_files(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    existing = tmp_path / "existing"
    existing.mkdir()
    assert _exit_status(["bench", "cifar10", "--data", str(data), "--out", str(existing)]) == 2
    assert existing.is_dir()
    from tangentless.benchmarks.cli import _remove_empty
    kept = tmp_path / "made" / "inner"
    kept.mkdir(parents=True)
    (kept / "partial.json").write_text("{}")
    _remove_empty([kept, kept.parent])
    assert (kept / "partial.json").is_file()


def _exit_status(argv: list[str]) -> int:
    """main's status, or the status of the SystemExit a parser error raises."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code
