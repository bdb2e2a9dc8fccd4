"""Correlations per sample: Spearman (average ranks for ties, as ``scipy.stats.spearmanr``), Pearson, top-k.

All scores are over every element of a sample (``B x ...`` flattened to ``B x N``). A sample whose
values are all equal has no correlation: NaN, as SciPy gives (count them with :func:`count_nan`;
they are never averaged silently).

Ranks come from one sort of integer keys that order like the floats, plus a scatter; ties get their
average rank through two running scans (no Python loop over samples).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from metrics._checks import check_nan, check_pair, float_dtype

__all__ = ["rankdata", "spearman", "spearman_support", "centred_ranks", "spearman_ranked", "pearson",
           "topk_intersection"]


def _sort_keys(*parts: Tensor, absolute: bool = False) -> Tensor:
    """Integer keys that order like the (NaN-free) values, the rows of ``parts[i][R_i, N]`` stacked.

    ``-0.0`` becomes ``0.0`` (one tie group, as in SciPy) and negative values get their magnitude bits
    reversed; with ``absolute`` the keys order ``|value|`` (the bits of a non-negative float are already
    in order). Integer keys sort faster than floats on CPUs. Integer inputs are ranked as float64.
    """
    dtype = torch.float32 if parts[0].dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float64
    rows = sum(p.shape[0] for p in parts)
    values = torch.empty(rows, parts[0].shape[1], dtype=dtype, device=parts[0].device)
    offset = 0
    for p in parts:
        out = values[offset : offset + p.shape[0]]
        if absolute:
            torch.abs(p, out=out)
        else:
            torch.add(p, 0.0, out=out)  # the copy maps -0.0 to 0.0
        offset += p.shape[0]
    bits = values.view(torch.int32 if dtype == torch.float32 else torch.int64)
    if absolute:
        return bits
    sign_bit = bits.element_size() * 8 - 1
    return bits.bitwise_xor_((bits >> sign_bit).bitwise_and_((1 << sign_bit) - 1))


#: elements of ``keys`` ranked per block: on the CPU a block stays in cache (three times faster at 3 x 224 x 224
#: than one block of 512 rows), on a GPU it only bounds the memory of the intermediates
_BLOCK_ELEMENTS = {"cpu": 1 << 19}
_BLOCK_ELEMENTS_OTHER = 1 << 26


def _twice_centred_ranks(keys: Tensor, dtype: torch.dtype) -> Tensor:
    """``2 * (average rank - mean rank)`` along the last dim of ``keys[R, N]``, in blocks of rows."""
    rows, n = keys.shape
    step = max(1, _BLOCK_ELEMENTS.get(keys.device.type, _BLOCK_ELEMENTS_OTHER) // max(n, 1))
    if rows <= step:
        return _twice_centred_ranks_block(keys, dtype)
    out = torch.empty(rows, n, dtype=dtype, device=keys.device)
    for i in range(0, rows, step):
        out[i : i + step] = _twice_centred_ranks_block(keys[i : i + step], dtype)
    return out


def _twice_centred_ranks_block(keys: Tensor, dtype: torch.dtype) -> Tensor:
    """``2 * (average rank - mean rank)`` along the last dim of ``keys[R, N]``: exact integers, in ``dtype``.

    One sort; the first and last sorted position of each tie group come from two running maxima (the
    second on the reversed row), and their sum is scattered back to the original positions. On the CPU
    only the rows that hold a tie go through the scans (elsewhere: branch-free, no synchronisation).
    """
    rows, n = keys.shape
    keys, order = _sort_rows(keys)
    pos = torch.arange(n, dtype=dtype, device=keys.device)  # exact: N < 2**24 in float32
    if keys.device.type != "cpu":
        return torch.empty(rows, n, dtype=dtype, device=keys.device).scatter_(1, order, _tie_average(keys, pos))
    # CPU: only rows that hold a tie need the scans (the others' ranks are their sorted positions)
    tied = (keys[:, 1:] == keys[:, :-1]).any(1).nonzero().squeeze(1)
    if len(tied) == rows:
        twice = _tie_average(keys, pos)
    else:
        twice = (2 * pos - (n - 1)).expand(rows, n)
        if len(tied):
            twice = twice.index_put((tied,), _tie_average(keys[tied], pos))
    return torch.empty(rows, n, dtype=dtype, device=keys.device).scatter_(1, order, twice)


def _sort_rows(keys: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.sort(keys, dim=1, stable=True)``. On the CPU, 32-bit keys are packed with their column index
    into 64-bit integers (key in the high half) and sorted by NumPy's vectorized sort, about twice as fast
    as ``torch.sort`` with indices on 2 cores; the halves unpack into the sorted keys and the order."""
    if keys.device.type != "cpu" or keys.dtype != torch.int32 or keys.shape[1] >= 2**31:
        return torch.sort(keys, dim=1, stable=True)
    packed = (keys.to(torch.int64) << 32) | torch.arange(keys.shape[1], dtype=torch.int64)
    packed = torch.from_numpy(np.sort(packed.numpy(), axis=1))
    return (packed >> 32).to(torch.int32), packed & 0xFFFFFFFF


def _tie_average(sorted_keys: Tensor, pos: Tensor) -> Tensor:
    """``start + end - (N - 1)`` of each element's tie group, in sorted order (``pos``: ``0..N-1``)."""
    boundary = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    is_first = torch.ones_like(sorted_keys, dtype=torch.bool)
    is_first[:, 1:] = boundary
    is_last = torch.ones_like(sorted_keys, dtype=torch.bool)
    is_last[:, :-1] = boundary
    start = torch.where(is_first, pos, 0.0).cummax(1).values
    # In reversed coordinates a group's last element is its first: end = N - 1 - that, flipped back.
    start_reversed = torch.where(is_last.flip(1), pos, 0.0).cummax(1).values
    return start.sub_(start_reversed.flip(1))


def rankdata(x: Tensor) -> Tensor:
    """Average ranks (1-based, ties share their mean rank) along the last dimension.

    As ``scipy.stats.rankdata(x, axis=-1)`` (``method="average"``); same shape, in ``x``'s float dtype.
    """
    check_nan("rankdata", x=x)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float64
    n = x.shape[-1]
    twice = _twice_centred_ranks(_sort_keys(x.reshape(-1, n)), dtype)
    return (twice * 0.5 + (n + 1) / 2).view(x.shape)


def _correlate_centred(x: Tensor, y: Tensor) -> Tensor:
    num = (x * y).sum(1)
    den = torch.sqrt((x * x).sum(1) * (y * y).sum(1))
    return (num / den).clamp(-1.0, 1.0)  # 0 / 0 = NaN for a constant sample


def spearman(a: Tensor, b: Tensor, *, absolute: bool = False) -> Tensor:
    """Spearman rank correlation over all elements of each sample: ``B x ...`` -> ``Tensor[B]``.

    Ties get average ranks as ``scipy.stats.spearmanr``; ``absolute`` ranks ``|a|`` and ``|b|``. A
    constant sample gives NaN. Result in the input float dtype (ranks themselves are exact integers).
    """
    a, b = check_pair(a, b, "spearman")
    keys = _sort_keys(a.flatten(1), b.flatten(1), absolute=absolute)
    rx, ry = _twice_centred_ranks(keys, a.dtype).chunk(2)
    return _correlate_centred(rx, ry)


def spearman_support(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation over the union of the two samples' supports: ``B x ...`` -> ``Tensor[B]``.

    Per sample, only the elements where ``a != 0`` or ``b != 0`` are ranked (average ranks for ties, as
    ``scipy.stats.spearmanr`` on those elements). A zero background that both maps share by construction (the
    input's background in ``x * g``) then cannot make two maps look alike. Fewer than two elements in the union,
    or a constant sample on it, gives NaN.
    """
    a, b = check_pair(a, b, "spearman_support")
    a, b = a.flatten(1), b.flatten(1)
    keep = (a != 0) | (b != 0)
    inf = torch.tensor(float("inf"), dtype=a.dtype, device=a.device)
    # excluded elements rank above every kept one, tied: the kept elements' ranks are their ranks among themselves
    ra = rankdata(torch.where(keep, a, inf))
    rb = rankdata(torch.where(keep, b, inf))
    w = keep.to(a.dtype)
    n = w.sum(1, keepdim=True)
    ca = (ra - (ra * w).sum(1, keepdim=True) / n) * w
    cb = (rb - (rb * w).sum(1, keepdim=True) / n) * w
    out = _correlate_centred(ca, cb)
    return torch.where(n.squeeze(1) >= 2, out, torch.full_like(out, float("nan")))


def centred_ranks(x: Tensor, *, absolute: bool = False) -> Tensor:
    """Twice the centred average ranks of each sample's elements: ``B x ...`` -> ``Tensor[B, N]``.

    ``2 * (rank - (N + 1) / 2)`` with SciPy's average ranks for ties (exact integers, in ``x``'s float
    dtype; ``absolute`` ranks ``|x|``). Rank a reference batch once and compare it with many others
    through :func:`spearman_ranked`.
    """
    check_nan("centred_ranks", x=x)
    dtype = float_dtype(x)  # as spearman(): float64 stays, everything else ranks in float32
    return _twice_centred_ranks(_sort_keys(x.flatten(1).to(dtype), absolute=absolute), dtype)


def spearman_ranked(a_ranks: Tensor, b: Tensor, *, absolute: bool = False) -> Tensor:
    """``spearman(a, b, absolute=absolute)`` given ``a_ranks = centred_ranks(a, absolute=absolute)``: only
    ``b`` is sorted. ``a_ranks``: ``Tensor[B, N]``; ``b``: ``B x ...`` with ``N`` elements per sample."""
    if a_ranks.ndim != 2 or b.shape[0] != a_ranks.shape[0] or b[0].numel() != a_ranks.shape[1]:
        raise ValueError(f"spearman_ranked: ranks of shape {tuple(a_ranks.shape)} do not fit maps of shape "
                         f"{tuple(b.shape)} (expected B x N with N elements per map)")
    rb = centred_ranks(b, absolute=absolute)
    dtype = torch.promote_types(a_ranks.dtype, rb.dtype)
    return _correlate_centred(a_ranks.to(dtype), rb.to(dtype))


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation over all elements of each sample: ``B x ...`` -> ``Tensor[B]``.

    As ``scipy.stats.pearsonr`` (centred, scaled by the largest deviation against overflow, clipped to
    [-1, 1]); a constant sample gives NaN.
    """
    a, b = check_pair(a, b, "pearson")
    x, y = a.flatten(1), b.flatten(1)
    constant = (x == x[:, :1]).all(1) | (y == y[:, :1]).all(1)
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    x = x / x.abs().amax(1, keepdim=True)
    y = y / y.abs().amax(1, keepdim=True)
    r = _correlate_centred(x, y)
    return r.masked_fill(constant, float("nan"))


def _top_mask(x: Tensor, k: int) -> Tensor:
    """Boolean mask of the ``k`` largest values per row; ties at the threshold go to lower indices."""
    threshold = x.topk(k, dim=1).values[:, -1:]
    above = x > threshold
    at = x == threshold
    room = k - above.sum(1, keepdim=True)
    return above | (at & (at.cumsum(1) <= room))


def topk_intersection(a: Tensor, b: Tensor, k: int | float = 0.1) -> Tensor:
    """Fraction of the ``k`` largest-``|value|`` positions that two maps share: ``B x ...`` -> ``Tensor[B]``.

    ``k``: a count, or a fraction in (0, 1) of the elements per sample (``max(1, round(k * N))``). Equal
    magnitudes at the cut are taken in index order, so the score is deterministic.
    """
    a, b = check_pair(a, b, "topk_intersection")
    x, y = a.flatten(1).abs(), b.flatten(1).abs()
    n = x.shape[1]
    kk = max(1, round(k * n)) if isinstance(k, float) and 0 < k < 1 else int(k)
    if not 1 <= kk <= n or (isinstance(k, float) and not 0 < k < 1 and k != kk):
        raise ValueError(f"topk_intersection: k must be in [1, {n}] or a fraction in (0, 1), got {k}")
    shared = (_top_mask(x, kk) & _top_mask(y, kk)).sum(1)
    return shared.to(a.dtype) / kk
