"""The input-invariance experiment (Kindermans et al., "The (Un)reliability of saliency methods").

For every shift ``m`` (or affine transform ``s * x + m``: a contrast change) a twin ``f2`` with
``f2(x + m) == f1(x)`` is built (:mod:`bench.twins.build`); after the
premise is proven on the evaluated batch, every method's map on ``(f1, x)`` is compared with its map on
``(f2, x + m)``. Methods whose reference depends on the data take the domain of the data they explain:
the twin's domain is ``(low + min m, high + max m)`` (IG's black baseline; the hull of the moved domain), methods
that take per-element bounds (DTD's zB, ``bounds="pixel"``) get them moved per element (``low + m``, ``high + m``:
zB is then exactly invariant under every shift), and the methods
that need data are fit on the training images (``x + m`` for the twin). SmoothGrad's noise scale is a
setting of the method, not a property of the data: both networks get the same ``sigma``
(``noise_level`` times the width of the unshifted domain), so that a non-constant shift does not change
the noise.

Scores per sample (rows of the long table, ``condition`` = the shift's label): the scores of the run
(:func:`bench.core.scoring.score_maps`) and always ``max_rel_diff`` = ``max|A1 - A2| / max|A1|``. The verdicts are
views of the table (:func:`bench.reporting.invariance_verdicts`): ``invariant`` (mean SSIM) and ``exact`` (95th
percentile of ``max_rel_diff``). They differ for honest reasons, which is why both are reported. A max-pool whose
inputs tie exactly (the flat background of a digit) routes the gradient to one of equal candidates; the twin computes
the same values through other floating-point operations, so a tie can break the other way and move a few gradient
entries. ``tie_break`` (default on) gives both networks a max-pool that breaks such ties the same way
(:mod:`bench.twins.ties`); without it, Gradient on ``small_cnn`` under the adversarial shift scores SSIM 0.990 instead
of 1.0 (float32 makes near-ties common too: run in float64, the default). PatternNet/-Attribution on a convolution
are not exactly invariant either. The first layer's patterns are estimated from patch statistics pooled over all
positions. Under a constant shift only the zero-padded border patches differ (their padding is not shifted). Under a
non-constant shift every position has its own offset ``m_p``, and the pooled covariance of the patches with the
outputs gains ``cov(m_p, y)`` in the interior too (measured on ``small_cnn``, first layer, median per-unit relative
pattern change: 3.5e-3 under the mean shift, 6.4e-2 under the checkerboard; deeper layers 1e-15). On a dense first
layer every input element is its own feature and the patterns are exactly invariant.
"""

from __future__ import annotations

import copy
import logging
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional  # noqa: UP035  (OmegaConf reads InvarianceSettings as the `invariance` group)

import pandas as pd
import torch
from torch import Tensor, nn

from bench.core.data import Dataset
from bench.core.explain import MethodSpec, explain_all, fit_loader, make_explainer, method_specs, predict
from bench.core.results import score_table
from bench.core.scores import EXACTNESS_SCORE, SIGN_SCORE
from bench.core.scoring import MapBatch, score_maps
from bench.core.settings import RunSettings, ScoreSettings, check_run
from bench.twins.build import Affine, affine_twin, check_twin
from bench.twins.ties import stable_ties

__all__ = ["input_invariance", "InvarianceResult", "InvarianceSettings", "EXPERIMENT"]

EXPERIMENT = "input_invariance"
log = logging.getLogger(__name__)


@dataclass
class InvarianceSettings:
    """Settings of the input-invariance test (the ``invariance`` config group).

    ``float64``: run copies of the model and the data in double precision (float32 breaks max-pool near-ties);
    ``tie_break``: the max-pools of both networks break rounding-noise ties alike (:mod:`bench.twins.ties`);
    ``premise_rtol``: tolerance of the twin logits (default 1e-10 in float64, 1e-4 in float32); ``noise_level``:
    SmoothGrad's shared noise std as a fraction of the unshifted domain's width; ``ssim_threshold`` /
    ``tolerance``: the verdict thresholds of the leaderboard (``None``: the score registry's defaults).
    """

    float64: bool = True
    tie_break: bool = True
    premise_rtol: Optional[float] = None  # noqa: UP045
    noise_level: float = 0.15
    ssim_threshold: Optional[float] = None  # noqa: UP045
    tolerance: Optional[float] = None  # noqa: UP045


@dataclass
class InvarianceResult:
    """``table``: the long results table; ``maps``: ``{shift: {method: (A1, A2)}}`` for the first ``keep_maps``
    samples (CPU); ``inputs``: ``{shift: (x, x + m)}`` of those samples; ``premise``: the relative twin error per
    shift; ``errors``: ``{(method, shift): message}`` of methods that failed (the rest went on);
    ``tracebacks``: the same keys, the formatted tracebacks."""

    table: pd.DataFrame
    maps: dict[str, dict[str, tuple[Tensor, Tensor]]] = field(default_factory=dict)
    inputs: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    premise: dict[str, float] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    tracebacks: dict[tuple[str, str], str] = field(default_factory=dict)


def _noise(spec: MethodSpec, sigma: float) -> dict:
    """SmoothGrad's shared noise std, unless the spec chose its own noise scale."""
    return {} if {"noise_scale", "sigma"} & set(spec.params) else {"sigma": sigma}


def input_invariance(
    model: nn.Module,
    data: Dataset,
    methods: Sequence[str | MethodSpec] | Mapping[str, dict | MethodSpec],
    shifts: Mapping[str, Tensor],
    *,
    settings: InvarianceSettings | None = None,
    run: RunSettings | None = None,
    scoring: ScoreSettings | None = None,
    model_name: str = "model",
    config_hash: str = "",
) -> InvarianceResult:
    """Run the input-invariance test of ``methods`` under each shift.

    Args:
        model: the trained network ``f1`` (never modified: the test runs on copies).
        data: its data; the first ``run.n_samples`` test images are explained for their predicted class (the
            same class for both networks: the premise check proves the logits agree).
        methods: names, :class:`~bench.core.explain.MethodSpec` objects or ``{label: spec}``.
        shifts: ``{label: m}``, each ``m`` one input's shape ``C x H x W`` (or broadcastable to it), or an
            :class:`~bench.twins.build.Affine` ``(s, m)``: the transform ``x' = s * x + m`` (contrast and shift).
        settings, run, scoring: :class:`InvarianceSettings`, :class:`~bench.core.settings.RunSettings` and
            :class:`~bench.core.settings.ScoreSettings` (defaults when ``None``).
        model_name, config_hash: written into the result rows.

    Returns an :class:`InvarianceResult`. Raises :class:`bench.twins.build.TwinPremiseError` when a twin fails
    its premise; a method that fails is recorded in ``errors`` (with its traceback) and the others go on.
    """
    from tqdm.auto import tqdm

    settings, run, scoring = settings or InvarianceSettings(), run or RunSettings(), scoring or ScoreSettings()
    check_run(run, len(data.x_test))
    specs = method_specs(methods)
    names = list(dict.fromkeys([*scoring.names, EXACTNESS_SCORE, SIGN_SCORE]))
    dtype = torch.float64 if settings.float64 else torch.float32
    premise_rtol = settings.premise_rtol
    if premise_rtol is None:
        premise_rtol = 1e-10 if settings.float64 else 1e-4
    f1 = copy.deepcopy(model).to(device=run.device, dtype=dtype).eval()
    if settings.tie_break:
        stable_ties(f1)
    x = data.x_test[: run.n_samples].to(device=run.device, dtype=dtype)
    dims = x.ndim - 2  # 2 for images, 1 for signals, 0 for vectors (SSIM and HOG need images)
    bs = run.batch_size
    target = predict(f1, x, bs, what=f"the first {len(x)} test inputs of {data.name!r}")
    x_fit = data.x_train[: run.fit_samples].to(device=run.device, dtype=dtype)
    y_fit = data.y_train[: run.fit_samples].to(run.device)
    low, high = data.domain
    sigma = settings.noise_level * (high - low)

    entries: list[tuple[dict, dict[str, Tensor]]] = []
    result = InvarianceResult(table=pd.DataFrame())
    maps1: dict[str, MapBatch] = {}
    bar = tqdm(total=len(shifts) * len(specs), desc="input invariance", disable=not run.progress, leave=False)
    ones = torch.ones(x.shape[1:], device=run.device, dtype=dtype)
    pixel1 = (low * ones, high * ones)  # per-element bounds, for methods that take them (zB)
    for shift_label, m in shifts.items():
        t = Affine.of(m, tuple(x.shape[1:]), dtype=dtype, device=run.device)
        f2 = affine_twin(f1, t, example=x[:2])
        result.premise[shift_label] = check_twin(f1, f2, x, t, rtol=premise_rtol)
        log.info("twin for %s: relative logit error %.3g", shift_label, result.premise[shift_label])
        pixel2 = (t.apply(pixel1[0][None])[0], t.apply(pixel1[1][None])[0])  # the bounds, moved per element
        domain2 = (float(pixel2[0].min()), float(pixel2[1].max()))  # their hull, for methods that take numbers
        x2 = t.apply(x)
        # copies, not views: a view would keep the whole batch alive with the result
        result.inputs[shift_label] = (x[: run.keep_maps].to("cpu", copy=True),
                                      x2[: run.keep_maps].to("cpu", copy=True))
        result.maps[shift_label] = {}
        for spec in specs:
            bar.set_postfix(shift=shift_label, method=spec.label)
            try:
                if spec.label not in maps1:
                    e1 = make_explainer(spec, f1, domain=(low, high), pixel_domain=pixel1,
                                        fit_data=fit_loader(x_fit, y_fit), extra=_noise(spec, sigma))
                    maps1[spec.label] = MapBatch(explain_all(e1, x, target, bs), spatial_dims=dims)
                e2 = make_explainer(spec, f2, domain=domain2, pixel_domain=pixel2,
                                    fit_data=fit_loader(t.apply(x_fit), y_fit), extra=_noise(spec, sigma))
                a2 = explain_all(e2, x2, target, bs)
                scores = score_maps(maps1[spec.label], a2, names, spatial_dims=dims)
            except Exception as err:  # noqa: BLE001  (recorded; the other methods go on)
                result.errors[(spec.label, shift_label)] = f"{type(err).__name__}: {err}"
                result.tracebacks[(spec.label, shift_label)] = traceback.format_exc()
                log.warning("%s / %s failed: %s: %s", spec.label, shift_label, type(err).__name__, err)
                bar.update()
                continue
            entries.append(({"method": spec.label, "condition": shift_label}, scores))
            result.maps[shift_label][spec.label] = (maps1[spec.label].maps[: run.keep_maps].reshape(
                -1, *x.shape[1:]).to("cpu", copy=True), a2[: run.keep_maps].to("cpu", copy=True))
            bar.update()
    bar.close()
    result.table = score_table(entries, experiment=EXPERIMENT, model=model_name, dataset=data.name, seed=run.seed,
                               config_hash=config_hash)
    return result
