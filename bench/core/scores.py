"""THE score registry: every similarity the harness computes between two batches of maps, in one place.

Each :class:`Score` carries what every part of the harness needs to know about it: how to compute it (on maps
post-processed the sanity-checks paper's way, :mod:`bench.core.scoring`), its direction (``higher_is_similar``)
and its default verdict thresholds: ``invariant_at`` (the maps count as the same: the input-invariance test) and
``randomized_at`` (the maps count as changed: the randomization tests). The leaderboard, ``check_method``
and the experiments read directions and thresholds from here; adding a score is one :func:`register_score`
call, and it is then computed by every experiment that lists its name.

This module imports no torch: reporting reads the registry without loading it. The built-in scores import
:mod:`metrics` (pure, batched, tested against scikit-image / SciPy) when they are first computed.

==================  =====================================================================================
``ssim``            SSIM (``gaussian_weights=True, sigma=1.5``, the paper's scikit-image call) on maps
                    normalized with the run's ``normalization`` (``abs`` default: channel sum of |a|,
                    clipped at the 99th percentile, in [0, 1]; ``signed``: in [-1, 1], data range 2; ``minmax``)
``spearman``        rank correlation of the signed maps (channel sum; ranks do not depend on the scaling)
``spearman_abs``    rank correlation of the ``abs``-normalized maps
``pearson``         Pearson correlation of the ``signed``-normalized maps
``hog``             rank correlation of HOG features of the ``abs``-normalized maps; the paper's 16-pixel cells
                    need images of 48 pixels or more, smaller ones use ``min(H, W) // 7``-pixel cells
``topk``            fraction of shared top-10% positions of ``|a|`` summed over channels
``max_rel_diff``    ``max|a - b| / max|a|`` of the raw maps (a distance: 0 = identical)
==================  =====================================================================================

A constant map has no rank correlation: such scores are NaN, as SciPy gives, and are reported, never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Score", "register_score", "get_score", "score_names", "DEFAULT_SCORES", "INVARIANCE_SCORE",
           "EXACTNESS_SCORE", "RANDOMIZATION_SCORE"]

#: scores an experiment computes unless told otherwise
DEFAULT_SCORES = ("ssim", "spearman", "spearman_abs", "hog", "topk")
#: the score of the input-invariance verdict "invariant", and of "exact"
INVARIANCE_SCORE = "ssim"
EXACTNESS_SCORE = "max_rel_diff"
#: the score of the randomization verdict when none is chosen
RANDOMIZATION_SCORE = "spearman_abs"


@dataclass(frozen=True)
class Score:
    """One registered score.

    ``compute(a, b, normalization=...) -> Tensor[B]``: ``a`` and ``b`` are :class:`bench.core.scoring.MapBatch`
    objects (the maps ``B x C x H x W`` with their post-processed versions and ranks, computed once and kept);
    ``normalization`` is the run's setting (only scores that follow it use it). ``higher_is_similar``: the
    direction (``False`` for a distance). ``invariant_at``: maps at least this similar (at most this distant)
    count as the same; ``randomized_at``: maps less similar than this (more distant) count as changed.
    """

    name: str
    compute: Callable[..., Any]
    higher_is_similar: bool = True
    invariant_at: float = 0.99
    randomized_at: float = 0.5
    description: str = ""

    def is_invariant(self, value: float) -> bool:
        """Whether ``value`` (e.g. a mean score) says the maps are the same (``False`` for NaN)."""
        if math.isnan(value):
            return False
        return value >= self.invariant_at if self.higher_is_similar else value <= self.invariant_at

    def is_randomized(self, value: float) -> bool:
        """Whether ``value`` says the map changed (``False`` for NaN)."""
        if math.isnan(value):
            return False
        return value < self.randomized_at if self.higher_is_similar else value > self.randomized_at


_SCORES: dict[str, Score] = {}


def register_score(score: Score) -> Score:
    """Add ``score`` to the registry; returns it. A name already taken raises ``ValueError``."""
    if score.name in _SCORES:
        raise ValueError(f"score {score.name!r} is already registered; choose another name")
    _SCORES[score.name] = score
    return score


def get_score(name: str) -> Score:
    """The registered score ``name``; ``ValueError`` naming the accepted ones otherwise."""
    try:
        return _SCORES[name]
    except KeyError:
        raise ValueError(f"unknown score {name!r}; accepted: {', '.join(score_names())}") from None


def score_names() -> list[str]:
    """Every registered score name, in registration order."""
    return list(_SCORES)


# -- built-in scores (metrics imported on first use) -------------------------------------------------------


def _hog_cell(h: int, w: int) -> tuple[int, int]:
    if min(h, w) >= 48:
        return (16, 16)
    cell = max(2, min(h, w) // 7)
    return (cell, cell)


def _ssim(a, b, *, normalization: str):  # noqa: ANN001, ANN202
    import metrics

    return metrics.ssim(a.normalized(normalization), b.normalized(normalization),
                        data_range=2.0 if normalization == "signed" else 1.0, gaussian_weights=True, sigma=1.5)


def _spearman(mode: str) -> Callable[..., Any]:
    def compute(a, b, *, normalization: str):  # noqa: ANN001, ANN202, ARG001
        import metrics

        return metrics.spearman_ranked(a.ranks(mode), b.normalized(mode))

    return compute


def _pearson(a, b, *, normalization: str):  # noqa: ANN001, ANN202, ARG001
    import metrics

    return metrics.pearson(a.normalized("signed"), b.normalized("signed"))


def _hog(a, b, *, normalization: str):  # noqa: ANN001, ANN202, ARG001
    import metrics

    na, nb = a.normalized("abs"), b.normalized("abs")
    return metrics.hog_similarity(na, nb, pixels_per_cell=_hog_cell(*na.shape[-2:]))


def _topk(a, b, *, normalization: str):  # noqa: ANN001, ANN202, ARG001
    import metrics

    return metrics.topk_intersection(a.maps.abs().sum(1), b.maps.abs().sum(1), 0.1)


def _max_rel_diff(a, b, *, normalization: str):  # noqa: ANN001, ANN202, ARG001
    diff = (a.maps - b.maps).flatten(1).abs().amax(1)
    scale = a.maps.flatten(1).abs().amax(1)
    return (diff / scale).masked_fill(diff == 0, 0.0)


for _score in (
    Score("ssim", _ssim, description="SSIM of the maps post-processed with the run's normalization"),
    Score("spearman", _spearman("signed"), description="rank correlation of the signed maps"),
    Score("spearman_abs", _spearman("abs"), description="rank correlation of the abs-normalized maps"),
    Score("pearson", _pearson, description="Pearson correlation of the signed-normalized maps"),
    Score("hog", _hog, description="rank correlation of HOG features of the abs-normalized maps"),
    Score("topk", _topk, description="shared fraction of the top-10% positions of |map|"),
    Score("max_rel_diff", _max_rel_diff, higher_is_similar=False, invariant_at=1e-3, randomized_at=0.5,
          description="max|a - b| / max|a| of the raw maps (0 = identical)"),
):
    register_score(_score)
