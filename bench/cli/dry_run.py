"""``salbench --dry-run``: the predicted cost of a job before it runs (:mod:`bench.core.cost`), with the measured
pass rate of the model on this machine. Nothing is trained or written: the data are loaded, the architecture is
created at its initialization (a pass costs the same trained or not) and timed on one batch of Gradient (Hydra
writes its log file only).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from bench.cli.config import MainConfig

__all__ = ["estimate", "report"]

log = logging.getLogger(__name__)


def _pass_rate(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Seconds per sample-pass of Gradient on ``x`` (the median of ``repeats`` timed calls after a warm-up)."""
    import methods

    explain = methods.create("gradient", model)
    explain(x)
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        explain(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] / len(x)


def estimate(cfg: MainConfig, data: Any = None) -> dict[str, Any]:
    """The job's passes per test and method (per sample and in all) and the predicted seconds.

    Returns ``{"tests": {test: {method: passes per sample}}, "passes": total passes, "seconds_per_pass": measured
    (float32), "seconds": predicted (the invariance test's passes at the float64 rate when it runs in float64),
    "n_samples": ..., "stages": {mode: K}, "train_passes": ..., "train_seconds": (training, as if not cached),
    "specs": the method specs, "input_numel": elements of one input, "units": {test: its unit names in
    execution order}}``. ``data``: the job's data set, when it
    has loaded it (else loaded here)."""
    from bench.core.cost import invariance_passes, randomization_passes, total
    from bench.core.data import load_dataset
    from bench.core.explain import method_specs
    from bench.core.models import create_model
    from bench.randomization.units import units

    d, run = cfg.data, cfg.run
    if data is None:  # the job passes the data it loaded
        data = load_dataset(d.name, encoding=d.encoding, seed=d.seed, root=d.root, download=d.download,
                            n_test=d.n_test)
    model = create_model(cfg.model.name, data.input_shape, data.num_classes, **dict(cfg.model.kwargs)).eval()
    n_train = len(data.x_train)
    from bench.core.embedding import embedded, has_embedding

    if has_embedding(model):  # token ids: the tests run on the embedding output, as the job does
        model, data = embedded(model, data)
    model.to(run.device)
    specs = method_specs(cfg.method)
    x = data.x_test[: min(run.batch_size, run.n_samples)].to(run.device)
    tests: dict[str, dict[str, int]] = {}
    stages: dict[str, int] = {}
    unit_names: dict[str, list[str]] = {}
    if "invariance" in run.tests and cfg.transform:
        tests["invariance"] = invariance_passes(specs, len(cfg.transform), tuple(x.shape[1:]), model)
    if "randomization" in run.tests:
        for label, spec in cfg.randomization.items():
            granularity = getattr(spec.granularity, "value", spec.granularity)
            executed = [u.name for u in units(model, granularity, example=x[:1]) if u.executed]
            unit_names[label] = executed
            k = len(executed)
            if isinstance(spec.stages, int):
                k = min(k, spec.stages)
            elif spec.stages:
                k = len(spec.stages)
            if spec.mode == "labels":
                k = 1  # the permuted-label model
            stages[label] = k
            tests[f"randomization:{label}"] = randomization_passes(specs, spec.mode, k, run.seeds,
                                                                   spec.smooth_samples, tuple(x.shape[1:]), model)
    passes = sum(total(per, run.n_samples) for per in tests.values())
    rate = _pass_rate(model, x)
    seconds = passes * rate
    train_passes = _train_passes(cfg, n_train)
    train_seconds = train_passes * rate
    if "invariance" in tests and cfg.invariance.float64:  # the invariance test runs in double precision
        import copy

        rate64 = _pass_rate(copy.deepcopy(model).double(), x.double())
        seconds += total(tests["invariance"], run.n_samples) * (rate64 - rate)
    return {"tests": tests, "passes": passes, "seconds_per_pass": rate, "seconds": seconds,
            "train_passes": train_passes, "train_seconds": train_seconds,
            "n_samples": run.n_samples, "stages": stages, "model": cfg.model.name, "data": data.name,
            "device": run.device, "specs": specs, "input_numel": int(x[0].numel()),
            "units": unit_names}


def _train_passes(cfg: MainConfig, n_train: int) -> int:
    """Sample passes of the job's training, as if nothing were cached (an upper bound): the model's epochs over the
    training split (none for given weights), and the label test's two models (the permuted-label model and its
    control) with their recipe."""
    from bench.experiments.label_randomization import LABEL_TRAIN, LABEL_TRAIN_SAMPLES

    given = bool(getattr(cfg.model, "checkpoint", None)) or bool(getattr(cfg.model, "pretrained", False))
    passes = 0 if given else int(cfg.train.epochs) * n_train
    for spec in cfg.randomization.values():
        if getattr(spec.mode, "value", spec.mode) == "labels":
            epochs = LABEL_TRAIN.epochs if spec.epochs is None else int(spec.epochs)
            passes += 2 * epochs * min(n_train, LABEL_TRAIN_SAMPLES or n_train)
    return passes


def report(cfg: MainConfig) -> dict[str, Any]:
    """Log :func:`estimate`'s table (passes per sample per test and method, the totals) and return it."""
    est = estimate(cfg)
    lines = [f"dry run: {est['model']} on {est['data']}, {est['n_samples']} samples, device {est['device']}"]
    for test, per in est["tests"].items():
        k = est["stages"].get(test.split(":", 1)[-1])
        lines.append(f"  {test}{f' ({k} stages)' if k is not None else ''}: "
                     + ", ".join(f"{m} {p}" for m, p in per.items()) + " passes per sample")
        names = est.get("units", {}).get(test.split(":", 1)[-1])
        if names and test.startswith("randomization:"):
            lines.append(f"    units in execution order (the input first): {', '.join(names)}")
    lines.append(f"  total: {est['passes']:,} passes, {est['seconds_per_pass'] * 1e3:.3g} ms per pass (Gradient, "
                 "float32, measured here; the invariance test's passes timed in float64) = about "
                 f"{est['seconds']:.0f} s of attribution, before fits and scoring (measured totals run 1.3-3x this: "
                 f"benchmarks/scale.md); training, where not cached: {est['train_passes']:,} passes, about "
                 f"{est['train_seconds']:.0f} s")
    log.info("\n".join(lines))
    return est
