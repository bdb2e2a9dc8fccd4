"""Gate a saliency method in your own CI: ``check_method(...)`` runs the standard suite on the bundled models.

Example (a method that lives outside this repository)::

    # my_package/my_method.py
    import torch

    def abs_gradient(model, **params):          # factory(model, **params) -> explain(x, target) -> Tensor
        def explain(x, target=None):
            x = x.detach().requires_grad_(True)
            out = model(x)
            target = out.argmax(1) if target is None else target
            (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x)
            return g.abs()
        return explain

    # tests/test_my_method.py
    from bench.testing import check_method
    from my_package.my_method import abs_gradient

    def test_my_method_passes_the_sanity_suite():
        check_method(abs_gradient)   # or "my_package.my_method:abs_gradient", or a registered name

The suite: ``paper_mlp`` trained on the bundled MNIST digits (trained once, then loaded from the
checkpoint cache), input invariance under the mean shift and the checkerboard, and cascading
randomization. ``expect`` states what the method should do (default: invariant under both shifts, and
its maps change under randomization). The verdicts are the leaderboard's: invariant = mean ``ssim`` at least its
``invariant_at`` (0.99, :mod:`bench.core.scores`); changed = the randomization verdict ``pass`` of
:func:`bench.reporting.aggregate.randomization_verdicts` (the map's SSIM to the trained map drops, at the top unit and
at the fully randomized model, by at least ``min_drop`` = 0.7 of what the model's own input gradient drops, by the
95% lower bound; unchanged = any other verdict, whose reason the report quotes). ``ssim_threshold`` / ``min_drop``
override the numbers.
A failure raises :class:`MethodCheckError` with a readable report of every expectation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.core.explain import MethodSpec
from bench.core.scores import INVARIANCE_SCORE, RANDOMIZATION_SCORE, get_score

__all__ = ["check_method", "CheckReport", "MethodCheckError", "DEFAULT_EXPECT"]

DEFAULT_EXPECT = {"mean_shift": True, "checkerboard": True, "cascading": True}


class MethodCheckError(AssertionError):
    """The method did not behave as expected; the message is the report."""


@dataclass
class CheckReport:
    """``rows``: one per expectation (test, measured value, expected, observed, ok); ``errors``: method failures."""

    method: str
    rows: pd.DataFrame
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.rows["ok"].all()) and not self.errors

    def __str__(self) -> str:
        from tabulate import tabulate

        lines = [f"saliency-bench check of {self.method}: {'PASS' if self.ok else 'FAIL'}",
                 tabulate(self.rows, headers="keys", tablefmt="github", showindex=False, floatfmt=".4f")]
        lines += [f"error: {k}: {v}" for k, v in self.errors.items()]
        return "\n".join(lines)


def check_method(
    method: str | Callable[..., Any],
    *,
    params: Mapping[str, Any] | None = None,
    expect: Mapping[str, bool] | None = None,
    models: Sequence[str] = ("paper_mlp",),
    n_samples: int = 16,
    min_drop: float | None = None,
    ssim_threshold: float | None = None,
    cache: str | None = None,
    raise_on_failure: bool = True,
) -> CheckReport:
    """Run the standard suite on ``method`` (a registered name, ``"module:factory"``, or a factory callable).

    ``expect``: ``{"mean_shift": bool, "checkerboard": bool, "cascading": bool}`` (``True``: invariant under
    the shift / changed by randomization). Returns the :class:`CheckReport`; raises :class:`MethodCheckError`
    when an expectation fails (unless ``raise_on_failure=False``).
    """
    from bench.core.data import load_dataset
    from bench.core.settings import RunSettings, ScoreSettings
    from bench.core.training import TrainConfig, load_or_train
    from bench.experiments.invariance import input_invariance
    from bench.experiments.model_randomization import model_randomization
    from bench.reporting.aggregate import PASS, invariance_verdicts, randomization_verdicts
    from bench.twins.shifts import checkerboard, mean_shift

    expect = {**DEFAULT_EXPECT, **dict(expect or {})}
    unknown = set(expect) - set(DEFAULT_EXPECT)
    if unknown:
        raise ValueError(f"unknown expectation(s) {sorted(unknown)}; accepted: {', '.join(DEFAULT_EXPECT)}")
    if ssim_threshold is None:
        ssim_threshold = get_score(INVARIANCE_SCORE).invariant_at
    label = method if isinstance(method, str) else getattr(method, "__qualname__", "method")
    registered = isinstance(method, str) and ":" not in method
    spec = MethodSpec(label, name=method if registered else None, _target_=None if registered else method,
                      params=dict(params or {}))
    data = load_dataset("mnist_bundled")
    run = RunSettings(n_samples=n_samples, batch_size=n_samples, fit_samples=1000)
    rows, errors = [], {}
    for model_name in models:
        model, _ = load_or_train(model_name, data, TrainConfig(cache_dir=cache), progress=False)
        shifts = {"mean_shift": mean_shift(data.input_shape), "checkerboard": checkerboard(data.input_shape)}
        inv = input_invariance(model, data, [spec], shifts, run=run, scoring=ScoreSettings([INVARIANCE_SCORE]),
                               model_name=model_name)
        errors.update({f"{model_name} / {s}": e for (_, s), e in inv.errors.items()})
        for r in invariance_verdicts(inv.table, ssim_threshold=ssim_threshold).itertuples():
            want = expect[r.condition]
            rows.append(dict(model=model_name, test=r.condition, measure="mean SSIM", value=r.ssim,
                             expected="invariant" if want else "not invariant",
                             observed="invariant" if r.invariant else "not invariant", ok=bool(r.invariant) == want))
        rnd = model_randomization(model, data, [spec], "cascading", run=run,
                                  scoring=ScoreSettings([RANDOMIZATION_SCORE]), model_name=model_name)
        errors.update({f"{model_name} / cascading": e for e in rnd.errors.values()})
        if len(rnd.table):
            v = randomization_verdicts(rnd.table, RANDOMIZATION_SCORE, min_drop=min_drop).iloc[0]
            changed = v.verdict == PASS
            want = expect["cascading"]
            rows.append(dict(model=model_name, test="cascading",
                             measure=f"{RANDOMIZATION_SCORE} change / the model's (95% lower bound)",
                             value=v.drop_lcb,
                             expected="changed" if want else "unchanged",
                             observed="changed" if changed else f"not shown to change ({v.verdict})",
                             ok=changed == want))
    report = CheckReport(label, pd.DataFrame(rows), errors)
    if raise_on_failure and not report.ok:
        raise MethodCheckError(str(report))
    return report
