"""The entropy of a map's histogram of values (the efficient MPRT of Hedstroem et al. 2024), batched."""

from __future__ import annotations

import torch
from torch import Tensor

from metrics._checks import check_nan, float_dtype

__all__ = ["histogram_entropy"]


def histogram_entropy(maps: Tensor, bins: int = 100) -> Tensor:
    """Shannon entropy (nats) of each sample's histogram of values: ``B x ...`` -> ``Tensor[B]``.

    The histogram has ``bins`` equal bins over the sample's own range ``[min, max]`` (the last bin closed, as
    ``numpy.histogram``); the entropy is ``-sum p log p`` over the non-empty bins, as ``scipy.stats.entropy`` of
    the counts. A constant sample fills one bin: entropy 0. NaN inputs raise ``ValueError``.
    """
    if bins < 1:
        raise ValueError(f"histogram_entropy: bins must be >= 1, got {bins}")
    x = maps.flatten(1).to(float_dtype(maps))
    check_nan("histogram_entropy", maps=x)
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    idx = ((x - lo) / span * bins).floor().clamp_(0, bins - 1).long()
    counts = torch.zeros(x.shape[0], bins, dtype=x.dtype, device=x.device).scatter_add_(1, idx, torch.ones_like(x))
    p = counts / x.shape[1]
    return 0.0 - (p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)  # 0.0 - : no negative zero
