"""Batched similarity scores between saliency maps (torch, any device), equal to their references.

Functional API, one score per sample pair (``Tensor[B]``), computed in the input dtype (float32 or
float64) on the input's device, without Python loops over samples:

- :func:`ssim`: ``skimage.metrics.structural_similarity`` (same parameters and defaults)
- :func:`spearman`, :func:`pearson`: ``scipy.stats.spearmanr`` / ``pearsonr`` over all elements
- :func:`centred_ranks`, :func:`spearman_ranked`: Spearman against a reference ranked once
- :func:`spearman_support`: Spearman over the union of the two maps' supports (a shared zero background ignored)
- :func:`hog_features`, :func:`hog_similarity`: ``skimage.feature.hog``; Spearman of the features
- :func:`topk_intersection`: shared fraction of the top-k positions by magnitude
- :func:`normalize`: the sanity-checks paper's per-sample post-processing
- :func:`histogram_entropy`: the entropy of each map's histogram of values (efficient MPRT)
- :func:`count_nan` counts undefined scores (NaN)

The harness decides which of these it computes, how maps are post-processed first, and what a score means
(its direction and thresholds): :mod:`bench.core.scores`. This package stays a library of pure functions.

Undefined cases: a constant sample has no correlation (NaN, as SciPy); NaN inputs raise ``ValueError``
naming the metric and the count; pairs of different shapes raise ``ValueError`` naming both shapes.
"""

from __future__ import annotations

from metrics._checks import count_nan
from metrics.entropy import histogram_entropy
from metrics.hog import hog_features, hog_similarity
from metrics.normalize import MODES, batch_percentile, normalize
from metrics.rank import (
    centred_ranks,
    pearson,
    rankdata,
    spearman,
    spearman_ranked,
    spearman_support,
    topk_intersection,
)
from metrics.ssim import ssim

__all__ = [
    "MODES",
    "batch_percentile",
    "centred_ranks",
    "count_nan",
    "histogram_entropy",
    "hog_features",
    "hog_similarity",
    "normalize",
    "pearson",
    "rankdata",
    "spearman",
    "spearman_ranked",
    "spearman_support",
    "ssim",
    "topk_intersection",
]
