"""Input checks shared by the metrics."""

from __future__ import annotations

import torch
from torch import Tensor


def check_pair(name: str, a: Tensor, b: Tensor, min_dim: int = 2) -> None:
    """Same shape, a batch dimension, no NaN; errors name the metric and the offending values."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{name}: expected two tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{name}: the two batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < min_dim:
        raise ValueError(f"{name}: expected a batch with at least {min_dim} dimensions (B x ...), got {tuple(a.shape)}")
    check_finite(name, a)
    check_finite(name, b)


def check_finite(name: str, x: Tensor) -> None:
    n = int(torch.isnan(x).sum())
    if n:
        raise ValueError(f"{name}: input holds {n} NaN values; a NaN map has no score (check the method)")
