"""Scoring two batches of saliency maps with the sanity-checks paper's post-processing.

Each metric sees the maps normalized per sample the way the paper compares them:

==============  ==========================================================================================
``ssim``        SSIM (``gaussian_weights=True``, the paper's scikit-image call) on maps normalized
                with ``normalization`` (``abs`` default: sum of |a| over channels, clipped at the 99th
                percentile, in [0, 1]; ``signed``: in [-1, 1], data range 2; ``minmax``)
``spearman``    rank correlation of the signed maps (channel sum; ranks do not depend on the scaling)
``spearman_abs`` rank correlation of the ``abs``-normalized maps
``pearson``     Pearson correlation of the signed maps
``hog``         rank correlation of HOG features of the ``abs``-normalized maps; the paper's 16-pixel cells
                need images of 48 pixels or more, smaller ones use ``min(H, W) // 7``-pixel cells
``topk``        fraction of shared top-10% positions of ``|a|`` summed over channels
==============  ==========================================================================================

A constant map has no rank correlation: such scores are NaN, as SciPy gives, and are reported, never
dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import metrics

__all__ = ["score_maps", "Reference", "relative_difference", "SCORES"]

SCORES = ("ssim", "spearman", "spearman_abs", "pearson", "hog", "topk")


def _hog_cell(h: int, w: int) -> tuple[int, int]:
    if min(h, w) >= 48:
        return (16, 16)
    cell = max(2, min(h, w) // 7)
    return (cell, cell)


def _nan_free(label: str, m: Tensor) -> None:
    bad = int(torch.isnan(m).sum())
    if bad:
        raise ValueError(f"the {label} batch of maps holds {bad} NaN values; a method produced NaN")


class Reference:
    """Maps scored against many other batches (a trained model's maps against every randomization stage):
    their normalized versions and Spearman ranks are computed on first use and kept. Pass it as the first
    argument of :func:`score_maps`; the scores are the same as with the plain tensor."""

    def __init__(self, maps: Tensor) -> None:
        _nan_free("first", maps)
        maps = maps.detach()
        self.maps = maps[:, None] if maps.ndim == 3 else maps
        self.shape = tuple(maps.shape)
        self._normalized: dict[str, Tensor] = {}
        self._ranks: dict[str, Tensor] = {}

    def normalized(self, mode: str) -> Tensor:
        if mode not in self._normalized:
            self._normalized[mode] = metrics.normalize(self.maps, mode)
        return self._normalized[mode]

    def ranks(self, mode: str) -> Tensor:
        if mode not in self._ranks:
            self._ranks[mode] = metrics.centred_ranks(self.normalized(mode))
        return self._ranks[mode]


def score_maps(
    a: Tensor | Reference, b: Tensor, names: Sequence[str] = SCORES, *, normalization: str = "abs",
    topk: float = 0.1,
) -> dict[str, Tensor]:
    """Scores ``{name: Tensor[B]}`` between maps ``a`` and ``b`` (``B x C x H x W`` or ``B x H x W``);
    ``a`` may be a :class:`Reference` (the same scores, its own work done once)."""
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; accepted: {', '.join(SCORES)}")
    ref = a if isinstance(a, Reference) else None
    a_shape = ref.shape if ref is not None else tuple(a.shape)
    if a_shape != tuple(b.shape):
        raise ValueError(f"maps to compare differ in shape: {a_shape} vs {tuple(b.shape)}")
    if ref is None:
        _nan_free("first", a)
        a = a.detach()
        a = a[:, None] if a.ndim == 3 else a
    else:
        a = ref.maps
    _nan_free("second", b)
    b = b.detach()
    if b.ndim == 3:
        b = b[:, None]
    cache: dict[str, tuple[Tensor, Tensor]] = {}

    def norm(mode: str) -> tuple[Tensor, Tensor]:
        if mode not in cache:
            na = ref.normalized(mode) if ref is not None else metrics.normalize(a, mode)
            cache[mode] = (na, metrics.normalize(b, mode))
        return cache[mode]

    def spearman(mode: str) -> Tensor:
        if ref is not None:
            return metrics.spearman_ranked(ref.ranks(mode), norm(mode)[1])
        return metrics.spearman(*norm(mode))

    out: dict[str, Tensor] = {}
    for name in names:
        if name == "ssim":
            na, nb = norm(normalization)
            data_range = 2.0 if normalization == "signed" else 1.0
            out[name] = metrics.ssim(na, nb, data_range=data_range, gaussian_weights=True, sigma=1.5)
        elif name == "spearman":
            out[name] = spearman("signed")
        elif name == "spearman_abs":
            out[name] = spearman("abs")
        elif name == "pearson":
            out[name] = metrics.pearson(*norm("signed"))
        elif name == "hog":
            na, nb = norm("abs")
            out[name] = metrics.hog_similarity(na, nb, pixels_per_cell=_hog_cell(*na.shape[-2:]))
        elif name == "topk":
            out[name] = metrics.topk_intersection(a.abs().sum(1), b.abs().sum(1), topk)
    return out


def relative_difference(a: Tensor, b: Tensor) -> Tensor:
    """``max|a - b| / max|a|`` per sample (``Tensor[B]``; 0 when both are all zeros, inf when only ``a`` is)."""
    diff = (a - b).flatten(1).abs().amax(1)
    scale = a.flatten(1).abs().amax(1)
    return torch.where(diff == 0, torch.zeros_like(diff), diff / scale)
