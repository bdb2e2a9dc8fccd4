"""Refuse absurd jobs before any work: the cost model's predicted time against ``run.max_hours``, and the settings
whose memory is predictable against the memory this machine has.

:func:`check` runs the dry run's estimate (:func:`bench.cli.dry_run.estimate`: the data are loaded, the architecture
created and one batch of Gradient timed: a second or two) and raises :class:`BudgetError` (a ``ValueError``: exit
status 2, nothing trained or written) naming the prediction, the setting that drives it and what is accepted; a
method whose own maps are predicted to take longer than the limit is refused by its label and parameters (e.g.
Shapley value sampling on a fine feature mask), whatever the rest of the job costs.
Memory: Integrated Gradients' quadrature (``steps`` positions and weights, float64, kept beside their device copies)
and the results table (rows x bytes per row) must each fit in the memory available now.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from bench.cli.config import MainConfig

__all__ = ["check", "BudgetError", "available_memory", "method_seconds", "ROW_BYTES", "STEP_BYTES"]

log = logging.getLogger(__name__)

#: bytes one row of the results table holds in memory (pandas, object columns), measured on the default job's table
ROW_BYTES = 400
#: bytes one Integrated Gradients step holds (positions and weights: float64 on the CPU and their device copies)
STEP_BYTES = 32


class BudgetError(ValueError):
    """A job predicted to take longer than ``run.max_hours``, or a setting whose memory cannot fit."""


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable`` of ``/proc/meminfo``; the physical memory elsewhere), None
    when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check(cfg: MainConfig, est: dict[str, Any] | None = None, data: Any = None) -> dict[str, Any]:
    """Raise :class:`BudgetError` when the job's predicted attribution and training time exceeds
    ``cfg.run.max_hours`` (0: no limit), or a memory-predictable setting cannot fit in the memory available; returns
    the estimate (``est`` when given, else :func:`bench.cli.dry_run.estimate` of ``cfg`` on ``data``, the job's
    data set when it has loaded it)."""
    from bench.cli.dry_run import estimate

    run = cfg.run
    max_hours = float(run.max_hours)
    if not math.isfinite(max_hours) or max_hours < 0:
        raise BudgetError(f"run.max_hours={run.max_hours!r} is out of range; accepted: >= 0 (0: no limit)")
    _check_steps(cfg)
    est = estimate(cfg, data) if est is None else est
    limit = max_hours * 3600
    seconds = est["seconds"] + est.get("train_seconds", 0.0)
    if max_hours and seconds > limit:
        per_method = method_seconds(est)
        over = sorted(((m, t) for m, t in per_method.items() if t > limit), key=lambda kv: -kv[1])
        if over:  # a method that alone exceeds the limit is refused by name, with its parameters
            named = "; ".join(f"{m} {t / 3600:,.1f} hours ({_params(cfg, m)})" for m, t in over)
            what = (f"longer than run.max_hours={max_hours:g} alone: {named}. Lower its steps / n / n_samples (a "
                    "perturbation method: a coarser feature_mask or larger windows), run.n_samples or run.seeds, "
                    "or drop it from the method list")
        else:
            worst = sorted(per_method.items(), key=lambda kv: -kv[1])[:3]
            what = ("the most: " + ", ".join(f"{m} {t / 3600:,.1f} hours" for m, t in worst)
                    + ". Lower run.n_samples, run.seeds, train.epochs or a method's steps / n")
        raise BudgetError(
            f"the job is predicted to take {seconds / 3600:,.1f} hours (run.max_hours={max_hours:g}): "
            f"{est['passes']:,} attribution passes and {est.get('train_passes', 0):,} training passes (as if nothing "
            f"were cached) at {est['seconds_per_pass'] * 1e3:.3g} ms per pass measured here; "
            f"{'methods predicted to take ' if over else ''}{what}, or raise run.max_hours (0: no limit); "
            "salbench --dry-run shows each method's passes")
    _check_rows(cfg, est)
    return est


def method_seconds(est: dict[str, Any]) -> dict[str, float]:
    """``{method label: predicted seconds}`` of its maps over every test of the estimate ``est`` (passes per sample x
    samples x the measured seconds per pass; the reference ``control:gradient`` included under its label)."""
    out: dict[str, float] = {}
    for per in est["tests"].values():
        for label, passes in per.items():
            out[label] = out.get(label, 0.0) + passes * est["n_samples"] * est["seconds_per_pass"]
    return out


def _params(cfg: MainConfig, label: str) -> str:
    spec = cfg.method.get(label) if hasattr(cfg.method, "get") else None
    params = dict(getattr(spec, "params", None) or {}) if spec is not None else {}
    name = getattr(spec, "name", label) if spec is not None else label
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items() if not isinstance(v, (dict, list)) or len(str(v)) < 40)
    return f"name={name!r}" + (f", {shown}" if shown else "")


def _check_steps(cfg: MainConfig) -> None:
    free = available_memory()
    if free is None:
        return
    for label, spec in cfg.method.items():
        steps = (getattr(spec, "params", None) or {}).get("steps")
        if isinstance(steps, (int, float)) and steps * STEP_BYTES > free:
            raise BudgetError(f"method {label!r}: steps={steps:g} needs about {_gib(steps * STEP_BYTES)} for its "
                              f"quadrature alone, more than the {_gib(free)} of memory available; accepted: steps up "
                              f"to about {free // STEP_BYTES:,} here (50 is the default)")


def _check_rows(cfg: MainConfig, est: dict[str, Any]) -> None:
    free = available_memory()
    if free is None:
        return
    from bench.core.settings import ScoreSettings

    scores = len(getattr(cfg.metric, "names", ScoreSettings().names)) + 2  # the scores and the invariance extras
    methods = max(1, len(est.get("specs", [])))
    stages = sum(est["stages"].values()) * int(cfg.run.seeds) + 8 * len(est["stages"])  # stages, controls, reference
    rows = cfg.run.n_samples * methods * scores * (stages + 2 * len(cfg.transform))
    if rows * ROW_BYTES > free:
        raise BudgetError(f"the results table would hold about {rows:,} rows ({_gib(rows * ROW_BYTES)}), more than "
                          f"the {_gib(free)} of memory available: run.seeds={cfg.run.seeds}, "
                          f"run.n_samples={cfg.run.n_samples} with {methods} methods; lower them")
