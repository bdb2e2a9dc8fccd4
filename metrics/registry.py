"""Scorers by name: ``get(name, **params)`` returns ``f(a, b, **kw) -> Tensor[B]``.

=================  ===================================================================================
``ssim``           :func:`metrics.ssim` with ``data_range=1.0`` unless given. The harness compares maps
                   after :func:`metrics.normalize`, so pass ``data_range=1`` for ``abs``/``minmax`` maps
                   and ``2`` for ``signed`` ones; ``gaussian_weights=True`` (the sanity-checks paper's
                   scikit-image call) is the caller's choice, e.g. ``get("ssim", gaussian_weights=True)``
``spearman``       :func:`metrics.spearman`
``spearman_abs``   :func:`metrics.spearman` with ``absolute=True``
``pearson``        :func:`metrics.pearson`
``hog``            :func:`metrics.hog_similarity` (Spearman of HOG features)
``topk``           :func:`metrics.topk_intersection` with ``k=0.1`` (a fraction) unless given
=================  ===================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor

from metrics.hog import hog_similarity
from metrics.rank import pearson, spearman, topk_intersection
from metrics.ssim import ssim

__all__ = ["get", "names", "register"]

Scorer = Callable[..., Tensor]

_SCORERS: dict[str, Scorer] = {
    "ssim": partial(ssim, data_range=1.0),
    "spearman": spearman,
    "spearman_abs": partial(spearman, absolute=True),
    "pearson": pearson,
    "hog": hog_similarity,
    "topk": partial(topk_intersection, k=0.1),
}


def register(name: str, scorer: Scorer) -> Scorer:
    """Add ``scorer(a, b, **kw) -> Tensor[B]`` under ``name`` (an existing name raises ``ValueError``)."""
    if name in _SCORERS:
        raise ValueError(f"metric {name!r} is already registered")
    _SCORERS[name] = scorer
    return scorer


def names() -> list[str]:
    """The registered metric names, sorted."""
    return sorted(_SCORERS)


def get(name: str, **params: object) -> Scorer:
    """The scorer ``name`` with ``params`` bound as keyword defaults (callers may still override them)."""
    try:
        scorer = _SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; accepted: {', '.join(names())}") from None
    return partial(scorer, **params) if params else scorer
