"""The `tangentless` command and the image loaders, on small files written in the real formats."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tangentless.benchmarks.cli import main
from tangentless.benchmarks.datasets import load_digits_images, load_npz_images
from tangentless.kernels import myrtle


def test_digits_loader():
    images, labels = load_digits_images()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.shape == (1797,) and set(np.unique(labels)) == set(range(10))


@pytest.mark.slow
def test_gram_command_on_digits_writes_the_matrix(tmp_path, capsys):
    out = tmp_path / "k.npy"
    assert main(["gram", "--n", "24", "--quiet", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    k = np.load(out)
    assert summary["images"] == 24 and k.shape == (24, 24)
    np.testing.assert_array_equal(k, k.T)
    assert summary["min_eigenvalue"] > -1e-9
    # evaluations as the progress bar counts them: blocks of the upper triangle, whole
    assert summary["pairs"] == 24 * 25 // 2 and summary["compile_seconds"] >= 0
    assert summary["evaluations_per_second"] == pytest.approx(summary["evaluations"] / summary["seconds"], rel=0.01)
    assert main(["gram", "--n", "24", "--quiet", "--block-size", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluations"] == 6 * 8 * 8      # 3 x 3 blocks, 6 upper
    assert main(["gram", "--n", "24", "--quiet", "--block-size", "24", "--flip"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluations"] == 24 * 24 * 2    # one block, flipped
    # the command's matrix is the library's kernel of ZCA-whitened digits
    from tangentless.kernels import ZCAWhitening
    x = ZCAWhitening().fit_transform(load_digits_images()[0][:24])
    np.testing.assert_allclose(k, myrtle(5).gram(x, progress=False), rtol=1e-12)
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.slow
def test_gram_command_reads_npz_and_flips(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, images=rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8),
             labels=np.arange(6))
    assert main(["gram", "--images", str(path), "--flip", "--no-zca", "--arch", "myrtle7",
                 "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["flip"] and summary["images"] == 6 and summary["arch"] == "myrtle7"
    assert summary["diagonal_range"][1] <= 2.0 + 1e-9  # two normalized terms


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"this is not a zip archive", "not a readable .npz"),
    ({"pixels": np.zeros((2, 8, 8, 1))}, "no 'images'"),
    ({"images": np.zeros((2, 8, 8))}, r"\(N, H, W, C\)"),
    ({"images": np.zeros((2, 8, 8, 1)), "labels": np.zeros(3)}, "2 images but 3 labels"),
])
def test_bad_image_files_get_clear_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_npz_images(path)
    assert main(["gram", "--images", str(path), "--quiet"]) == 2
    assert message.split()[0].strip("\\(") in capsys.readouterr().err


def test_truncated_npz_is_reported(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, images=np.zeros((50, 8, 8, 1)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz_images(path)


@pytest.mark.slow
def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "tangentless.benchmarks.cli", "gram", "--help"],
                         capture_output=True, text=True, check=True)
    assert "--images" in out.stdout and "digits" in out.stdout
