"""Settings shared by the experiments (plain dataclasses; the CLI's ``run`` and ``metric`` config groups).

Each experiment takes these objects instead of a long list of keywords; the Hydra entry point builds them once
from the typed config (``OmegaConf.to_object``) and passes them through whole, so that no field can be dropped
on the way. Experiment-specific settings live beside their experiment
(:class:`bench.experiments.invariance.InvarianceSettings`,
:class:`bench.experiments.model_randomization.RandomizationSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List  # noqa: UP035  (OmegaConf reads these dataclasses as config groups on Python 3.10)

from bench.core.scores import DEFAULT_SCORES

#: the accepted ``run.maps_dtype`` values (:mod:`bench.core.maps`)
MAP_DTYPES = ("float16", "float32", "float64")

__all__ = ["RunSettings", "ScoreSettings", "check_run", "MAP_DTYPES"]


@dataclass
class RunSettings:
    """What a job explains and how (the ``run`` config group).

    ``n_samples``: the first n test samples (of the seeded, class-mixed split) are explained, in batches of
    ``batch_size``; the command line streams them in chunks of ``chunk_size`` samples (rounded up to whole
    batches, so that chunking never changes a score), each written to disk when
    done (memory does not grow with ``n_samples``; a killed job resumes from its last finished chunk);
    ``fit_samples``: training samples that data-dependent methods (PatternNet/-Attribution) are
    fit on; ``device``: ``cpu``, ``cuda`` or ``cuda:N``; ``seed``: the torch seed of the job, the
    re-initialization seed of the randomization tests and the ``seed`` column of the results; ``keep_maps``: maps
    kept in memory per method for the figures; ``tests``: ``invariance`` and/or ``randomization``; ``max_hours``: a
    job whose predicted time (the cost model's attribution and training passes at the pass rate measured here,
    :mod:`bench.cli.budget`) exceeds it is refused before any work (0: no limit). ``save_maps``: keep every map the
    job computes in ``<job>/maps/`` (:mod:`bench.core.maps`; ``salbench-rescore`` computes new scores from them),
    stored as ``maps_dtype``: ``float16`` (half the size of float32; rescored within about 1e-4 of the job's, HOG 1e-2),
    ``float32`` (exact for the randomization tests' float32 maps) or ``float64`` (exact for the input-invariance
    test's float64 maps too).
    """

    name: str = "default"
    tests: List[str] = field(default_factory=lambda: ["invariance", "randomization"])  # noqa: UP006
    n_samples: int = 32
    batch_size: int = 64
    chunk_size: int = 64
    fit_samples: int = 2000
    device: str = "cpu"
    seed: int = 0
    seeds: int = 1
    progress: bool = False
    figures: bool = True
    keep_maps: int = 4
    max_hours: float = 12.0
    save_maps: bool = False
    maps_dtype: str = "float16"


@dataclass
class ScoreSettings:
    """Which registered scores (:mod:`bench.core.scores`) are computed (the ``metric`` config group). Each score
    names its own post-processing (``ssim``: abs_p99, ``ssim_abs_max``, ``ssim_minmax_signed``, ...), so the
    results table's ``metric`` column records how every score was produced.

    ``names``: the scores computed by every test (a randomization adds its own ``scores``). ``plugins``: modules
    imported before the names are checked (``metric.plugins=[my_scores]``: from ``PYTHONPATH``, then the current
    directory, as a ``model.name=package.module:factory``), so that a score they register with
    :func:`bench.core.scores.register_score` can be named in ``names``; the command line imports them
    (:func:`bench.core.scores.load_plugins`) and refuses an unknown name or a module that cannot be imported (exit
    2) before any data or model is loaded. The source hash of the module that registers a score enters the job's
    hash and that score's rows' config hash, so that the results of an edited score never pool with the old."""

    names: List[str] = field(default_factory=lambda: list(DEFAULT_SCORES))  # noqa: UP006
    plugins: List[str] = field(default_factory=list)  # noqa: UP006


def check_run(run: RunSettings, n_test: int) -> None:
    """Raise ``ValueError`` naming the setting, its value and what is accepted, before any work: ``n_samples`` in
    ``1..n_test`` (never clamped silently), ``batch_size``, ``chunk_size``, ``seeds`` and ``fit_samples`` at least
    1, ``keep_maps`` at least 0, ``save_maps`` a boolean, ``maps_dtype`` one of :data:`MAP_DTYPES`."""
    checks = [("n_samples", run.n_samples, 1, n_test), ("batch_size", run.batch_size, 1, None),
              ("chunk_size", run.chunk_size, 1, None),
              ("seeds", run.seeds, 1, None), ("fit_samples", run.fit_samples, 1, None),
              ("keep_maps", run.keep_maps, 0, None)]
    for name, value, low, high in checks:
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            accepted = f"{low}..{high}" if high is not None else f">= {low}"
            where = f" (the test split holds {n_test} samples)" if name == "n_samples" else ""
            raise ValueError(f"run.{name}={value!r} is out of range; accepted: {accepted}{where}")
    if not isinstance(run.save_maps, bool):
        raise ValueError(f"run.save_maps={run.save_maps!r} is not accepted; accepted: true or false")
    if run.maps_dtype not in MAP_DTYPES:
        raise ValueError(f"run.maps_dtype={run.maps_dtype!r} is not accepted; accepted: {', '.join(MAP_DTYPES)}")
