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
    """One batch of maps (``B x C x H x W``; ``B x H x W`` gets a channel axis) with cached post-processing.

    ``label`` names the batch in errors. Raises ``ValueError`` when the maps hold NaN (a method produced NaN).
    """

    def __init__(self, maps: Tensor, label: str = "first") -> None:
        bad = int(torch.isnan(maps).sum())
        if bad:
            raise ValueError(f"the {label} batch of maps holds {bad} NaN values; a method produced NaN")
        maps = maps.detach()
        self.shape = tuple(maps.shape)
        self.maps = maps[:, None] if maps.ndim == 3 else maps
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


def score_maps(a: Tensor | MapBatch, b: Tensor | MapBatch, names: Sequence[str] = DEFAULT_SCORES) -> dict[str, Tensor]:
    """Scores ``{name: Tensor[B]}`` of the registered scores ``names`` between maps ``a`` and ``b``.

    Raises ``ValueError`` for an unknown score (naming the registered ones), maps of different shapes (naming
    both) or NaN maps.
    """
    scores = [get_score(n) for n in names]
    a = a if isinstance(a, MapBatch) else MapBatch(a, "first")
    if a.shape != tuple(b.shape):
        raise ValueError(f"maps to compare differ in shape: {a.shape} vs {tuple(b.shape)}")
    b = b if isinstance(b, MapBatch) else MapBatch(b, "second")
    return {s.name: s.compute(a, b) for s in scores}
