"""Scoring two batches of saliency maps with the registered scores (:mod:`bench.core.scores`).

:func:`score_maps` computes ``{name: Tensor[B]}`` for maps ``a`` and ``b`` shaped ``B x C x H x W`` (or
``B x H x W``); a :class:`MapBatch` holds one batch with its post-processed versions (the named
normalizations of :data:`bench.core.scores.NORMALIZATIONS`, built on :func:`metrics.normalize`) and Spearman
ranks, computed on first use and kept, so that a trained model's maps scored against every randomization stage
are normalized and ranked once. Pass a ``MapBatch`` wherever a tensor is accepted: the scores are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import metrics
from bench.core.scores import DEFAULT_SCORES, NORMALIZATIONS, get_score

__all__ = ["MapBatch", "score_maps"]


class MapBatch:
    """One batch of maps with cached post-processing: images ``B x C x H x W`` (``B x H x W`` gets a channel axis),
    or, with ``spatial_dims`` 1 or 0, signals ``B x C x L`` and vectors ``B x F``, held as ``B x C x 1 x L`` and
    ``B x 1 x 1 x F`` so that every post-processing applies (:attr:`images` is then false: SSIM and HOG do not).

    ``label`` names the batch in errors. Raises ``ValueError`` when the maps hold NaN (a method produced NaN).
    """

    def __init__(self, maps: Tensor, label: str = "first", spatial_dims: int | None = None) -> None:
        bad = int(torch.isnan(maps).sum())
        if bad:
            raise ValueError(f"the {label} batch of maps holds {bad} NaN values; a method produced NaN")
        maps = maps.detach()
        self.shape = tuple(maps.shape)
        dims = spatial_dims if spatial_dims is not None else (0 if maps.ndim == 2 else 2)
        if dims == 2:
            self.maps = maps[:, None] if maps.ndim == 3 else maps
        elif dims == 1:
            self.maps = maps[:, :, None, :] if maps.ndim == 3 else maps.reshape(maps.shape[0], 1, 1, -1)
        else:
            self.maps = maps.reshape(maps.shape[0], 1, 1, -1)
        self.images = dims == 2
        self._normalized: dict[str, Tensor] = {}
        self._ranks: dict[str, Tensor] = {}

    def normalized(self, mode: str) -> Tensor:
        """The maps post-processed the named way (one of :data:`~bench.core.scores.NORMALIZATIONS`; computed once):
        ``B x H x W`` for the channel-reducing ones, the maps themselves for ``raw``."""
        if mode not in self._normalized:
            if mode not in NORMALIZATIONS:
                raise ValueError(f"unknown normalization {mode!r}; accepted: {', '.join(NORMALIZATIONS)}")
            if mode == "minmax_signed":
                out = metrics.normalize(self.maps.sum(1), "minmax")
            elif mode == "raw":
                out = self.maps
            else:
                out = metrics.normalize(self.maps, {"abs_p99": "abs", "signed_p99": "signed"}.get(mode, mode))
            self._normalized[mode] = out
        return self._normalized[mode]

    def entropy(self, bins: int = 100) -> Tensor:
        """Entropy of each map's histogram of values (:func:`metrics.histogram_entropy`; computed once)."""
        key = f"entropy:{bins}"
        if key not in self._normalized:
            self._normalized[key] = metrics.histogram_entropy(self.maps, bins)
        return self._normalized[key]

    def ranks(self, mode: str) -> Tensor:
        """Centred ranks of :meth:`normalized` (:func:`metrics.centred_ranks`; computed once)."""
        if mode not in self._ranks:
            self._ranks[mode] = metrics.centred_ranks(self.normalized(mode))
        return self._ranks[mode]


def score_maps(a: Tensor | MapBatch, b: Tensor | MapBatch, names: Sequence[str] = DEFAULT_SCORES, *,
               spatial_dims: int | None = None) -> dict[str, Tensor]:
    """Scores ``{name: Tensor[B]}`` of the registered scores ``names`` between maps ``a`` and ``b``.

    ``spatial_dims``: 2 for images (the default for 3-D and 4-D maps), 1 for signals ``B x C x L``, 0 for vectors
    ``B x F`` (the default for 2-D maps); scores that need images (SSIM, HOG) are left out for the others. Raises
    ``ValueError`` for an unknown score (naming the registered ones), maps of different shapes (naming both) or NaN
    maps.
    """
    scores = [get_score(n) for n in names]
    a = a if isinstance(a, MapBatch) else MapBatch(a, "first", spatial_dims)
    if a.shape != tuple(b.shape):
        raise ValueError(f"maps to compare differ in shape: {a.shape} vs {tuple(b.shape)}")
    b = b if isinstance(b, MapBatch) else MapBatch(b, "second", spatial_dims if spatial_dims is not None else
                                                   (2 if a.images else (0 if len(a.shape) == 2 else 1)))
    return {s.name: s.compute(a, b) for s in scores if a.images or not s.images_only}
