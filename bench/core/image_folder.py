"""Image folders (``data=image_folder``, and the ``imagenet`` preset): class folders of PNG/JPEG files read into
tensors, resized and center-cropped (:func:`image_folder`); :func:`bench.core.data.load_dataset` calls it for those
names. Layouts: ``ROOT/train`` beside ``ROOT/val`` (or ``ROOT/test``), ``ROOT/val`` alone (evaluation only), or one
folder of classes split by the harness (seeded, stratified).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench.core.data import (
    _FOLDERS,
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Dataset,
    DatasetNotFoundError,
    ImageFolderError,
    _channel_stats,
    _split,
    data_dir,
    encode,
)

__all__ = ["image_folder"]

log = logging.getLogger(__name__)


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
