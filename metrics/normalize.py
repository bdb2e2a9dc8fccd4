"""The sanity-checks paper's map post-processing, always per sample (never over the batch).

=========  =================================================================================================
``abs``    ``s = sum_c |a|``; ``(s - min s) / (p99(s) - min s)`` clipped to [0, 1] (the paper's grayscale
           visualization; output ``B x H x W``)
``signed`` ``s = sum_c a``; ``s / p99(|s|)`` clipped to [-1, 1] (diverging; output ``B x H x W``)
``minmax`` ``(a - min a) / (max a - min a)`` per sample, shape kept (constant maps give zeros)
``none``   the maps unchanged
=========  =================================================================================================

Percentiles interpolate linearly, as ``numpy.percentile``. A map whose scale is zero (all equal) gives
zeros. Inputs ``B x C x H x W`` (channels summed) or ``B x H x W``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metrics._checks import check_finite

__all__ = ["normalize", "MODES"]

MODES = ("abs", "signed", "minmax", "none")


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    """``v[B]`` shaped to broadcast against ``like[B, ...]``."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def _quantile(x: Tensor, q: float) -> Tensor:
    flat = x.flatten(1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.double()
    return torch.quantile(flat, q, dim=1, interpolation="linear")


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def normalize(maps: Tensor, mode: str = "abs", percentile: float = 99.0) -> Tensor:
    """Normalize a batch of maps per sample (see the module table for ``mode``)."""
    if mode not in MODES:
        raise ValueError(f"unknown normalization {mode!r}; accepted: {', '.join(MODES)}")
    check_finite("normalize", maps)
    if maps.ndim not in (3, 4):
        raise ValueError(f"normalize: expected B x H x W or B x C x H x W maps, got {tuple(maps.shape)}")
    if mode == "none":
        return maps
    if mode == "minmax":
        lo = _per_sample(maps.flatten(1).amin(1), maps)
        hi = _per_sample(maps.flatten(1).amax(1), maps)
        return _safe_div(maps - lo, (hi - lo).expand_as(maps))
    s = maps.abs().sum(1) if (mode == "abs" and maps.ndim == 4) else maps.sum(1) if maps.ndim == 4 else maps
    if mode == "abs":
        s = s.abs()
        lo = _per_sample(s.flatten(1).amin(1), s)
        hi = _per_sample(_quantile(s, percentile / 100).to(s.dtype), s)
        return _safe_div(s - lo, (hi - lo).expand_as(s)).clamp(0, 1)
    span = _per_sample(_quantile(s.abs(), percentile / 100).to(s.dtype), s)
    return _safe_div(s, span.expand_as(s)).clamp(-1, 1)
