"""Correlations per sample: Spearman (average ranks for ties, as ``scipy.stats.spearmanr``), Pearson, top-k.

A sample whose values are all equal has no correlation: NaN, as SciPy gives (counted by the harness,
never averaged silently).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metrics._checks import check_pair

__all__ = ["rankdata", "spearman", "pearson", "topk_intersection"]


def rankdata(x: Tensor) -> Tensor:
    """Average ranks (1-based) along the last dimension, ties sharing their mean rank (``method="average"``)."""
    n = x.shape[-1]
    flat = x.reshape(-1, n)
    rows = flat.shape[0]
    s, order = flat.sort(dim=1, stable=True)
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    group = new.cumsum(1) - 1 + torch.arange(rows, device=x.device)[:, None] * n  # unique id per (row, value)
    pos = torch.arange(n, device=x.device, dtype=torch.float64).expand(rows, n).reshape(-1)
    g = group.reshape(-1)
    first = torch.full((rows * n,), float("inf"), dtype=torch.float64, device=x.device).scatter_reduce(
        0, g, pos, reduce="amin")
    last = torch.full((rows * n,), -1.0, dtype=torch.float64, device=x.device).scatter_reduce(
        0, g, pos, reduce="amax")
    avg = ((first[g] + last[g]) / 2 + 1).view(rows, n)
    ranks = torch.empty_like(avg).scatter_(1, order, avg)
    return ranks.view(x.shape)


def _corr(x: Tensor, y: Tensor) -> Tensor:
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    num = (x * y).sum(1)
    den = torch.sqrt((x * x).sum(1) * (y * y).sum(1))
    r = num / den  # 0 / 0 = NaN for a constant sample
    return r.clamp(-1.0, 1.0)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation over all elements of each sample: ``B x ...`` -> ``Tensor[B]``."""
    check_pair("pearson", a, b)
    dtype = a.dtype if a.is_floating_point() else torch.float64
    x, y = a.to(dtype).flatten(1), b.to(dtype).flatten(1)
    const = (x == x[:, :1]).all(1) | (y == y[:, :1]).all(1)
    r = _corr(x, y)
    return torch.where(const, torch.full_like(r, float("nan")), r)


def spearman(a: Tensor, b: Tensor, *, absolute: bool = False) -> Tensor:
    """Spearman rank correlation over all elements of each sample (``absolute``: of ``|a|`` and ``|b|``)."""
    check_pair("spearman", a, b)
    x, y = a.flatten(1), b.flatten(1)
    if absolute:
        x, y = x.abs(), y.abs()
    dtype = a.dtype if a.is_floating_point() else torch.float64
    const = (x == x[:, :1]).all(1) | (y == y[:, :1]).all(1)
    r = _corr(rankdata(x).to(dtype), rankdata(y).to(dtype))
    return torch.where(const, torch.full_like(r, float("nan")), r)


def topk_intersection(a: Tensor, b: Tensor, k: int | float = 0.1) -> Tensor:
    """Fraction of the ``k`` largest-``|value|`` positions that the two maps share (``k`` < 1: a fraction)."""
    check_pair("topk_intersection", a, b)
    x, y = a.flatten(1).abs(), b.flatten(1).abs()
    n = x.shape[1]
    kk = int(round(k * n)) if isinstance(k, float) and 0 < k < 1 else int(k)
    if not 1 <= kk <= n:
        raise ValueError(f"topk_intersection: k must be in [1, {n}] or a fraction in (0, 1), got {k}")
    ma = torch.zeros_like(x, dtype=torch.bool).scatter_(1, x.topk(kk, dim=1).indices, True)
    mb = torch.zeros_like(y, dtype=torch.bool).scatter_(1, y.topk(kk, dim=1).indices, True)
    return (ma & mb).sum(1).to(x.dtype if x.is_floating_point() else torch.float64) / kk
