"""Separable 1-D filters on flat buffers (the SSIM window).

A batch of ``n x H x W`` maps is laid out flat; filtering along the columns is a shift by 1 and
along the rows a shift by ``W``. Each filter is a handful of whole-buffer ``add`` calls (long,
contiguous, vectorised loops) instead of a strided 2-D convolution. Outputs whose window would
cross a row or image boundary are garbage: callers only read the valid ``(H-k+1) x (W-k+1)``
corner of each map. Buffers come from a :class:`Workspace` so that chunked callers allocate once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class Workspace:
    """Flat scratch buffers of one dtype and device, allocated on first use and reused."""

    def __init__(self, like: Tensor, size: int) -> None:
        self.like, self.size, self.buffers = like, size, []

    def __getitem__(self, i: int) -> Tensor:
        while len(self.buffers) <= i:
            self.buffers.append(self.like.new_empty(self.size))
        return self.buffers[i]


def box_sum(x: Tensor, k: int, stride: int, out: Tensor, scratch: list[Tensor]) -> Tensor:
    """``out[i] = sum_{j<k} x[i + j*stride]``; returns ``out[:len(x) - (k-1)*stride]``.

    Sums of power-of-two widths are built by doubling and combined by the binary digits of ``k``
    (7 = 4 + 2 + 1: four adds instead of six). ``scratch``: ``floor(log2 k)`` buffers, none
    aliasing ``x`` or ``out``.
    """
    n_out = x.numel() - (k - 1) * stride
    powers = {1: x}
    width = 1
    while 2 * width <= k:
        p = powers[width]
        n = p.numel() - width * stride
        powers[2 * width] = torch.add(p[:n], p[width * stride : width * stride + n], out=scratch.pop()[:n])
        width *= 2
    segments = []
    offset = 0
    for width in sorted(powers, reverse=True):
        if k - offset >= width:
            segments.append(powers[width][offset * stride : offset * stride + n_out])
            offset += width
    result = out[:n_out]
    if len(segments) == 1:
        return result.copy_(segments[0])
    torch.add(segments[0], segments[1], out=result)
    for seg in segments[2:]:
        result.add_(seg)
    return result


def weighted_sum(x: Tensor, taps: list[float], stride: int, out: Tensor) -> Tensor:
    """``out[i] = sum_j taps[j] * x[i + j*stride]``; returns ``out[:len(x) - (len(taps)-1)*stride]``."""
    n_out = x.numel() - (len(taps) - 1) * stride
    result = torch.mul(x[:n_out], taps[0], out=out[:n_out])
    for j, w in enumerate(taps[1:], start=1):
        result.add_(x[j * stride : j * stride + n_out], alpha=w)
    return result


def gaussian_taps(sigma: float, radius: int) -> list[float]:
    """Normalised Gaussian weights of ``scipy.ndimage.gaussian_filter`` (``2*radius + 1`` taps)."""
    if sigma <= 1e-15:  # scipy skips the axis: identity
        return [1.0]
    phi = [math.exp(-0.5 / (sigma * sigma) * x * x) for x in range(-radius, radius + 1)]
    total = math.fsum(phi)
    return [p / total for p in phi]


def reflect_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices that pad an axis of length ``n`` by ``pad`` as scipy's ``mode='reflect'``.

    Half-sample symmetric (``d c b a | a b c d | d c b a``), repeated for pads longer than ``n``.
    """
    idx = torch.arange(-pad, n + pad, device=device).remainder(2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)
