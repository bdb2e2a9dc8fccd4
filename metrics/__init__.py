"""Batched similarity scores between saliency maps (torch, any device), equal to their references.

Functional API, one score per sample pair (``Tensor[B]``): :func:`ssim` (scikit-image),
:func:`spearman` / :func:`pearson` (SciPy), :func:`hog_features` / :func:`hog_similarity`
(scikit-image's HOG), :func:`topk_intersection`, and :func:`normalize` (the sanity-checks paper's
post-processing). :func:`get` returns a two-argument scorer by name; :func:`names` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor

from metrics.hog import hog_features, hog_similarity
from metrics.normalize import normalize
from metrics.rank import pearson, rankdata, spearman, topk_intersection
from metrics.ssim import ssim

__all__ = ["ssim", "spearman", "pearson", "rankdata", "topk_intersection", "hog_features", "hog_similarity",
           "normalize", "get", "names", "count_nan"]

_SCORERS: dict[str, Callable[..., Tensor]] = {
    "ssim": partial(ssim, data_range=1.0),
    "spearman": spearman,
    "spearman_abs": partial(spearman, absolute=True),
    "pearson": pearson,
    "hog": hog_similarity,
    "topk": partial(topk_intersection, k=0.1),
}


def names() -> list[str]:
    return sorted(_SCORERS)


def get(name: str) -> Callable[..., Tensor]:
    """A scorer ``f(a, b, **kw) -> Tensor[B]`` by name (``ssim`` defaults to ``data_range=1``)."""
    try:
        return _SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; accepted: {', '.join(names())}") from None


def count_nan(scores: Tensor) -> int:
    """Number of undefined (NaN) scores, e.g. rank correlations of constant maps."""
    return int(scores.isnan().sum())
