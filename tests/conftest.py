"""Shared fixtures: the real data in ../shared/data (skipped with a reason where absent)."""
import pathlib

import numpy as np
import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def cifar10_subset():
    """Exact CIFAR-10 images: (train_images, train_labels, test_images, test_labels), uint8 NHWC."""
    train, test = SHARED_DATA / "cifar10" / "train.npz", SHARED_DATA / "cifar10" / "test.npz"
    if not (train.exists() and test.exists()):
        pytest.skip(f"shared CIFAR-10 subset not found at {train.parent}")
    with np.load(train) as tr, np.load(test) as te:
        return tr["images"], tr["labels"], te["images"], te["labels"]
