"""THE score registry: every similarity the harness computes between two batches of maps, in one place.

Each :class:`Score` carries what every part of the harness needs to know about it: how to compute it, the
post-processing of the maps it sees (``normalization``, named below), its direction (``higher_is_similar``) and
its default verdict thresholds: ``invariant_at`` (the maps count as the same: the input-invariance test) and
``min_drop``, the bar of the randomization verdicts (:mod:`bench.reporting.aggregate`): for a similarity, the share
of the model's own change (its input gradient's, measured in the same run) that a randomized map's change must reach
(0.7, calibrated on a family of models: ``benchmarks/calibration.md``); for a distance, the rise above the repeat
control in the score's units. The leaderboard, ``check_method`` and
the experiments read directions and thresholds from here; adding a score is one :func:`register_score` call, and
it is then computed by every experiment that lists its name.

Post-processing (:data:`NORMALIZATIONS`; the maps ``B x C x H x W`` are reduced per sample, never over the
batch): ``abs_p99`` (sum of ``|a|`` over channels, clipped at the 99th percentile, in [0, 1]: the sanity-checks
paper's description), ``signed_p99`` (channel sum scaled by the 99th percentile of ``|s|``, clipped to [-1, 1]),
``abs_max`` (``|a|`` summed over channels divided by its maximum, no clip: the authors' MNIST notebooks),
``minmax_signed`` (the signed channel sum min-max scaled to [0, 1]: the authors' ImageNet notebook), ``raw``.

======================== ============== =========================================================================
score                    normalization  what
======================== ============== =========================================================================
``ssim``                 abs_p99        SSIM (``gaussian_weights=True, sigma=1.5``, the paper's scikit-image call)
``ssim_abs_max``         abs_max        the same SSIM, the authors' MNIST post-processing
``ssim_minmax_signed``   minmax_signed  the same SSIM, the authors' ImageNet post-processing
``spearman``             signed_p99     rank correlation of the signed maps
``spearman_abs``         abs_p99        rank correlation of the absolute maps (the paper's); on data with a zero
                                        background it saturates near 1 for any map that is the input times
                                        something (the shared background is one big tie)
``spearman_abs_support`` abs_p99        rank correlation of the absolute maps over the union of the two maps'
                                        supports: a background both maps share by construction does not count
``pearson``              signed_p99     Pearson correlation
``hog``                  abs_p99        rank correlation of HOG features; the paper's 16-pixel cells need images of
                                        48 pixels or more, smaller ones use ``min(H, W) // 7``-pixel cells
``topk``                 raw            shared fraction of the top-10% positions of ``|a|`` summed over channels
``max_rel_diff``         raw            ``max|a - b| / max|a|`` (a distance: 0 = identical)
``entropy_rise``         raw            ``(H(b) - H(a)) / H(a)``, ``H`` the entropy of a map's histogram of values
                                        (100 bins over its own range): the efficient MPRT of Hedstroem et al.
                                        (2024); higher = the randomized map is more disordered; NaN when ``H(a)=0``
======================== ============== =========================================================================

SSIM and HOG need images (``images_only``): for vectors and 1-D signals they are not applicable and not computed (no
rows), never an error. This module imports no torch: reporting reads the registry without loading it. The built-in
scores import :mod:`metrics` (pure, batched, tested against scikit-image / SciPy) when they are first computed. A
constant map has no rank correlation: such scores are NaN, as SciPy gives, and are reported, never dropped.

Scores of your own from the command line (``metric.plugins=[my_scores]``): :func:`load_plugins` imports each module
(from ``PYTHONPATH``, then the current directory: the mechanism of ``model.name=package.module:factory``,
:mod:`bench.core.models`) so that the scores it registers can be named; :func:`check_names` refuses an unknown name
before any work. The registry remembers which module registered each score (:func:`score_origin`), and
:func:`score_source` hashes that module's source file, so that the rows of an edited score never pool with the old
ones.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Score", "register_score", "get_score", "score_names", "DEFAULT_SCORES", "INVARIANCE_SCORE",
           "EXACTNESS_SCORE", "SIGN_SCORE", "RANDOMIZATION_SCORE", "NORMALIZATIONS", "PluginError", "load_plugins",
           "check_names", "score_origin", "score_source", "module_source"]

log = logging.getLogger(__name__)

#: scores an experiment computes unless told otherwise
DEFAULT_SCORES = ("ssim", "spearman", "spearman_abs", "spearman_abs_support", "hog", "topk")
#: the score of the input-invariance verdict "invariant", and of "exact"
INVARIANCE_SCORE = "ssim"
EXACTNESS_SCORE = "max_rel_diff"
#: the score that makes the invariance verdict sign-aware: a map that flips its sign scores about -1 here
SIGN_SCORE = "ssim_minmax_signed"
#: the score of the randomization verdict when none is chosen: it separates the sanity-checks paper's known
#: answers on the bundled models (``benchmarks/calibration.md``), where ``spearman_abs`` saturates
RANDOMIZATION_SCORE = "ssim"
#: the named post-processings of :class:`bench.core.scoring.MapBatch`
NORMALIZATIONS = ("abs_p99", "signed_p99", "abs_max", "minmax_signed", "raw")


@dataclass(frozen=True)
class Score:
    """One registered score.

    ``compute(a, b) -> Tensor[B]``: ``a`` and ``b`` are :class:`bench.core.scoring.MapBatch` objects (the maps
    ``B x C x H x W`` with their post-processed versions and ranks, computed once and kept). ``normalization``:
    the post-processing the score reads (one of :data:`NORMALIZATIONS`; documentation, the table records the
    score's name). ``higher_is_similar``: the direction (``False`` for a distance). ``invariant_at``: maps at least
    this similar (at most this distant) count as the same. ``min_drop``: the randomization verdict's bar (module
    docstring): a share of the model's own change for a similarity, a rise in the score's units for a distance.
    """

    name: str
    compute: Callable[..., Any]
    normalization: str = "abs_p99"
    higher_is_similar: bool = True
    invariant_at: float = 0.99
    min_drop: float = 0.7
    description: str = ""
    images_only: bool = False  # not applicable to vectors and 1-D signals (computed for images only)

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"score {self.name!r}: unknown normalization {self.normalization!r}; accepted: "
                             f"{', '.join(NORMALIZATIONS)}")

    def drop(self, reference: float, value: float) -> float:
        """How far ``value`` lies on the "changed" side of ``reference`` (positive: less similar)."""
        return reference - value if self.higher_is_similar else value - reference

    def is_invariant(self, value: float) -> bool:
        """Whether ``value`` (e.g. a mean score) says the maps are the same (``False`` for NaN)."""
        if math.isnan(value):
            return False
        return value >= self.invariant_at if self.higher_is_similar else value <= self.invariant_at



_SCORES: dict[str, Score] = {}
#: score name -> the module that registered it (the caller of register_score)
_ORIGINS: dict[str, str] = {}


def register_score(score: Score) -> Score:
    """Add ``score`` to the registry; returns it. A name already taken raises ``ValueError``. The registering
    module (the caller's) is remembered: :func:`score_origin`, :func:`score_source`."""
    if score.name in _SCORES:
        raise ValueError(f"score {score.name!r} is already registered; choose another name")
    caller = inspect.currentframe()
    caller = caller.f_back if caller is not None else None
    _SCORES[score.name] = score
    _ORIGINS[score.name] = str(caller.f_globals.get("__name__", "")) if caller is not None else ""
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


# -- scores of your own: plugins named on the command line -------------------------------------------------

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PLUGINS_ACCEPTED = ("a module name (my_scores, mypkg.scores) importable from PYTHONPATH or the current directory, "
                     "that calls bench.register_score")


class PluginError(ValueError):
    """A module of ``metric.plugins`` that cannot be used: not a module name, not found (the folders searched are
    named), or failing to import (its exception named and chained)."""


def load_plugins(modules: Sequence[str], key: str = "metric.plugins") -> dict[str, str | None]:
    """Import each module of ``modules``, in order, so that the scores they register (:func:`register_score`) can be
    named; returns ``{module: source hash}`` (:func:`module_source`; ``None`` where no source file can be read).

    The modules are imported as a ``model.name=package.module:factory`` is (:mod:`bench.core.models`: from
    ``sys.path``, ``PYTHONPATH`` included, then the current directory); a module imported before is not imported
    again. Raises :class:`PluginError` naming ``key``, the module and what went wrong. Imports torch (through
    :mod:`bench.core.models`) only when ``modules`` is not empty."""
    if isinstance(modules, str):  # metric.plugins=my_scores: one name, not its letters
        modules = [modules]
    out: dict[str, str | None] = {}
    for name in modules:
        if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name) or name.endswith(".py"):
            hint = f" (a file name: name its module, {name[:-3]})" if str(name).endswith(".py") else ""
            raise PluginError(f"{key}: {name!r} is not a module name{hint}; accepted: {_PLUGINS_ACCEPTED}")
        _import_plugin(name, key)
        out[name] = module_source(name)
    return out


def _import_plugin(name: str, key: str) -> None:
    from bench.core.models import FactoryError, _import_module, _search_path

    if name in sys.modules:
        return
    try:
        _import_module(name, key, name)
    except FactoryError as err:
        cause = err.__cause__
        missing = getattr(cause, "name", None) or ""
        if isinstance(cause, ModuleNotFoundError) and (name == missing or name.startswith(missing + ".")):
            raise PluginError(
                f"{key}: cannot import {name!r}: no module named {missing!r} on the import path (PYTHONPATH, then "
                f"the current directory {os.getcwd()}); searched: {', '.join(_search_path())}. Accepted: "
                f"{_PLUGINS_ACCEPTED}") from cause
        raise PluginError(f"{key}: cannot import {name!r}: {type(cause).__name__}: {cause}") from cause
    log.info("%s: imported %s (scores now registered: %s)", key, name, ", ".join(score_names()))


def check_names(names: Iterable[str], key: str = "metric.names") -> None:
    """Raise ``ValueError`` naming ``key``, every name of ``names`` that is not registered, and the registered ones
    (with the hint that a score of one's own is registered by a module listed in ``metric.plugins``)."""
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in _SCORES]
    if unknown:
        raise ValueError(
            f"{key}: unknown score{'s' if len(unknown) > 1 else ''} {', '.join(repr(n) for n in unknown)}; "
            f"registered: {', '.join(score_names())} (a score of your own: list the module that registers it in "
            "metric.plugins=[my_module])")


def score_origin(name: str) -> str:
    """The module that registered score ``name`` (``bench.core.scores`` for the built-in ones); ``ValueError`` as
    :func:`get_score`."""
    get_score(name)
    return _ORIGINS.get(name, "")


def module_source(module: str) -> str | None:
    """The hash (16 hex digits, as :func:`bench.core.models.factory_sha256`) of the source file of the imported
    ``module``, read from disk at each call; ``None`` where it has none that can be read (not imported, a notebook,
    an extension module)."""
    mod = sys.modules.get(module)
    try:
        path = inspect.getsourcefile(mod) if mod is not None else None
    except TypeError:  # a built-in module
        path = None
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def score_source(name: str) -> str | None:
    """The source hash (:func:`module_source`) of the module that registered score ``name``, for a score registered
    outside this module (``None`` for the built-in ones, and where no source file can be read): an edited score's
    rows then carry another hash and never pool with the old ones."""
    origin = score_origin(name)
    if origin == __name__:
        return None
    return module_source(origin)


# -- built-in scores (metrics imported on first use) -------------------------------------------------------


def _hog_cell(h: int, w: int) -> tuple[int, int]:
    if min(h, w) >= 48:
        return (16, 16)
    cell = max(2, min(h, w) // 7)
    return (cell, cell)


def _ssim(normalization: str) -> Callable[..., Any]:
    def compute(a, b):  # noqa: ANN001, ANN202
        import metrics

        return metrics.ssim(a.normalized(normalization), b.normalized(normalization), data_range=1.0,
                            gaussian_weights=True, sigma=1.5)

    return compute


def _spearman(mode: str) -> Callable[..., Any]:
    def compute(a, b):  # noqa: ANN001, ANN202
        import metrics

        return metrics.spearman_ranked(a.ranks(mode), b.normalized(mode))

    return compute


def _spearman_support(a, b):  # noqa: ANN001, ANN202
    import metrics

    return metrics.spearman_support(a.normalized("abs_p99"), b.normalized("abs_p99"))


def _pearson(a, b):  # noqa: ANN001, ANN202
    import metrics

    return metrics.pearson(a.normalized("signed_p99"), b.normalized("signed_p99"))


def _hog(a, b):  # noqa: ANN001, ANN202
    import metrics

    na, nb = a.normalized("abs_p99"), b.normalized("abs_p99")
    return metrics.hog_similarity(na, nb, pixels_per_cell=_hog_cell(*na.shape[-2:]))


def _topk(a, b):  # noqa: ANN001, ANN202
    import metrics

    return metrics.topk_intersection(a.maps.abs().sum(1), b.maps.abs().sum(1), 0.1)


def _max_rel_diff(a, b):  # noqa: ANN001, ANN202
    diff = (a.maps - b.maps).flatten(1).abs().amax(1)
    scale = a.maps.flatten(1).abs().amax(1)
    return (diff / scale).masked_fill(diff == 0, 0.0)


def _entropy_rise(a, b):  # noqa: ANN001, ANN202
    ha, hb = a.entropy(), b.entropy()
    return (hb - ha) / ha.masked_fill(ha == 0, float("nan"))


for _score in (
    Score("ssim", _ssim("abs_p99"), description="SSIM of the absolute maps clipped at the 99th percentile",
          images_only=True),
    Score("ssim_abs_max", _ssim("abs_max"), "abs_max", description="SSIM of |map| / max |map|", images_only=True),
    Score("ssim_minmax_signed", _ssim("minmax_signed"), "minmax_signed",
          description="SSIM of the signed maps min-max scaled", images_only=True),
    Score("spearman", _spearman("signed_p99"), "signed_p99", description="rank correlation of the signed maps"),
    Score("spearman_abs", _spearman("abs_p99"), description="rank correlation of the absolute maps"),
    Score("spearman_abs_support", _spearman_support,
          description="rank correlation of the absolute maps on the union of their supports"),
    Score("pearson", _pearson, "signed_p99", description="Pearson correlation of the signed maps"),
    Score("hog", _hog, description="rank correlation of HOG features of the absolute maps", images_only=True),
    Score("topk", _topk, "raw", description="shared fraction of the top-10% positions of |map|"),
    Score("max_rel_diff", _max_rel_diff, "raw", higher_is_similar=False, invariant_at=1e-3, min_drop=0.5,
          description="max|a - b| / max|a| of the raw maps (0 = identical)"),
    Score("entropy_rise", _entropy_rise, "raw", higher_is_similar=False, invariant_at=0.01, min_drop=0.1,
          description="relative rise of the histogram entropy from the first map to the second (efficient MPRT)"),
):
    register_score(_score)
