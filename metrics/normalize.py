"""The sanity-checks paper's map post-processing, always per sample (never over the batch).

==========  ==========================================================================================
``abs``     ``s = sum_c |a|``; ``(s - min s) / (p(s) - min s)`` clipped to [0, 1]: clipped at the
            ``percentile`` (99th by default) and scaled to [0, 1] (the paper's grayscale map; ``B x H x W``)
``signed``  ``s = sum_c a``; ``s / p(|s|)`` clipped to [-1, 1] (diverging; ``B x H x W``)
``abs_max`` ``s = sum_c |a|``; ``s / max s`` in [0, 1], no clip (the authors' MNIST notebooks; ``B x H x W``)
``minmax``  ``(a - min a) / (max a - min a)`` over all elements of a sample, shape kept
``none``    the maps unchanged
==========  ==========================================================================================

Inputs ``B x C x H x W`` (channels summed) or ``B x H x W`` (one channel). Percentiles interpolate
linearly between order statistics, as ``numpy.percentile``. Zero scale has one answer, the limit of
the clipped ratio as the scale goes to 0: ``abs`` gives 1 where ``s > min s`` and 0 elsewhere,
``signed`` gives ``sign(s)``, ``minmax`` gives zeros. So a constant map gives zeros in every mode, and
a map with fewer than 1% nonzero pixels keeps them (as 1) instead of dividing by zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metrics._checks import check_nan, float_dtype

__all__ = ["normalize", "batch_percentile", "MODES"]

MODES = ("abs", "signed", "abs_max", "minmax", "none")


def batch_percentile(x: Tensor, q: float) -> Tensor:
    """Per-row ``q``-th percentile of ``x[B, N]`` -> ``Tensor[B]``, as ``numpy.percentile`` (linear).

    Two order statistics by ``topk`` (no full sort, no size limit) and numpy's lerp.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    n = x.shape[1]
    h = (q / 100) * (n - 1)
    lo = int(h)
    hi = min(lo + 1, n - 1)
    t = h - lo
    if lo >= n // 2:  # the n - lo largest, descending: lo-th smallest last
        top = x.topk(n - lo, dim=1).values
        v_lo, v_hi = top[:, -1], top[:, -1 - (hi - lo)]
    else:
        low = x.topk(hi + 1, dim=1, largest=False).values
        v_lo, v_hi = low[:, lo], low[:, hi]
    diff = v_hi - v_lo
    return v_hi - diff * (1 - t) if t >= 0.5 else v_lo + diff * t


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def _scale(num: Tensor, den: Tensor, lo: float) -> Tensor:
    """``clip(num / den, lo, 1)`` with the zero-scale limit (``den == 0``: ``sign(num)`` clipped)."""
    safe = torch.where(den > 0, den, torch.ones_like(den))
    out = (num / safe).clamp_(lo, 1.0)
    return torch.where(den > 0, out, torch.sign(num).clamp_(lo, 1.0))


def normalize(maps: Tensor, mode: str = "abs", percentile: float = 99.0) -> Tensor:
    """Normalize a batch of maps per sample (see the module table for ``mode``).

    ``maps``: ``B x C x H x W`` or ``B x H x W``. ``abs``, ``abs_max`` and ``signed`` return ``B x H x W``; ``minmax``
    and ``none`` keep the shape. float64 kept, other dtypes computed in float32.
    """
    if mode not in MODES:
        raise ValueError(f"unknown normalization {mode!r}; accepted: {', '.join(MODES)}")
    if maps.ndim not in (3, 4):
        raise ValueError(f"normalize: expected B x H x W or B x C x H x W maps, got {tuple(maps.shape)}")
    maps = maps.to(float_dtype(maps))
    check_nan("normalize", maps=maps)
    if mode == "none":
        return maps
    if mode == "minmax":
        flat = maps.flatten(1)
        lo = _per_sample(flat.amin(1), maps)
        span = _per_sample(flat.amax(1), maps) - lo
        return _scale(maps - lo, span, 0.0)
    if mode == "abs_max":
        s = maps.abs().sum(1) if maps.ndim == 4 else maps.abs()
        return _scale(s, _per_sample(s.flatten(1).amax(1), s), 0.0)
    if mode == "abs":
        s = maps.abs().sum(1) if maps.ndim == 4 else maps.abs()
        flat = s.flatten(1)
        lo = flat.amin(1)
        span = _per_sample(batch_percentile(flat, percentile) - lo, s)
        return _scale(s - _per_sample(lo, s), span, 0.0)
    s = maps.sum(1) if maps.ndim == 4 else maps
    span = _per_sample(batch_percentile(s.flatten(1).abs(), percentile), s)
    return _scale(s, span, -1.0)
