"""A data factory as saliency-bench calls it: it returns a ``bench.core.data.Dataset`` and receives, as keyword
arguments, those of the ``data.*`` settings it names (here ``seed``, ``n_test`` and ``size``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.core.data import Dataset


def digits(seed: int = 0, n_test: int | None = None, size: int | None = None) -> Dataset:
    """scikit-learn's bundled 8 x 8 digits (1,797 images, 10 classes; no download), pixels scaled to [0, 1],
    resized to ``size x size`` (``None``: 16; SSIM's 11-pixel window needs at least 11) and split stratified with
    ``seed``: ``n_test`` test images (``None``: 360). The harness applies ``data.encoding`` itself to data returned
    in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32))[:, None]  # N x 1 x 8 x 8 in [0, 1]
    x = F.interpolate(x, size=(size or 16, size or 16), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    y = torch.from_numpy(d.target.astype(np.int64))
    train, test = train_test_split(np.arange(len(y)), test_size=360 if n_test is None else n_test,
                                   random_state=seed, stratify=d.target)
    return Dataset("sklearn_digits", x[train], y[train], x[test], y[test], num_classes=10,
                   meta={"source": "sklearn.datasets.load_digits (1,797 x 8 x 8)"})
