"""Shared fixtures: the bundled data and the trained reference models (trained once, then cached)."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    # checkpoints of the reference models live in pytest's cache folder unless the user chose a folder:
    # the first run trains them (about a minute on 2 cores), later runs load them
    if not os.environ.get("SALBENCH_CACHE"):
        cache = getattr(config, "cache", None)  # None with -p no:cacheprovider: then the user cache folder
        if cache is not None:
            os.environ["SALBENCH_CACHE"] = str(cache.mkdir("salbench-checkpoints"))
    torch.set_num_threads(1)  # tiny models: more threads only add overhead on a shared 2-core machine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist():
    """The bundled 5,000 MNIST digits in [0, 1], split 4,000 / 1,000."""
    from bench.core.data import load_dataset

    return load_dataset("mnist_bundled")


@pytest.fixture(scope="session")
def trained_mlp(mnist):
    """``paper_mlp`` trained with the default settings (cached)."""
    from bench.core.training import load_or_train

    model, info = load_or_train("paper_mlp", mnist, progress=False)
    return model, info


@pytest.fixture(scope="session")
def trained_cnn(mnist):
    """``small_cnn`` trained with the default settings (cached)."""
    from bench.core.training import load_or_train

    model, info = load_or_train("small_cnn", mnist, progress=False)
    return model, info
