"""The input-invariance experiment (Kindermans et al., "The (Un)reliability of saliency methods").

For every shift ``m`` (or affine transform ``s * x + m``: a contrast change) a twin ``f2`` with
``f2(x + m) == f1(x)`` is built (:mod:`bench.twins.build`); after the
premise is proven on the evaluated batch, every method's map on ``(f1, x)`` is compared with its map on
``(f2, x + m)``. Methods whose reference depends on the data take the domain of the data they explain:
the twin's domain is ``(low + min m, high + max m)`` (IG's black baseline; the hull of the moved domain), methods
that take per-element bounds (DTD's zB, ``bounds="pixel"``) get them moved per element (``low + m``, ``high + m``:
zB is then exactly invariant under every shift), and the methods
that need data are fit on the training images (``x + m`` for the twin). SmoothGrad's noise is a setting of the
method, not a property of the data: the reference network gets the absolute std ``sigma`` (the spec's own ``sigma``;
else its ``noise_level``, else ``invariance.noise_level``, times the width of the unshifted domain) and the twin gets
``s * sigma`` (per element), the same standard-normal draws (same seed, same shapes). The twin's noisy inputs are then
exactly the reference's pushed through the transform (``s (x + sigma e) + m``), so SmoothGrad is invariant exactly when
its base method is; under a pure shift (``s = 1``) both get the same ``sigma``, and a non-constant shift does not
change the noise. A spec that sets ``noise_scale`` keeps its own relative rule in each network (``"data"``: each
sample's range; ``"domain"``: the width of the domain that network is given), and the test measures that rule.

Scores per sample (rows of the long table, ``condition`` = the shift's label): the scores of the run
(:func:`bench.core.scoring.score_maps`) and always ``max_rel_diff`` = ``max|A1 - A2| / max|A1|``; each row records
its sample's provenance (``data_index``, ``label``, and ``target``, the class both maps explain: ``f1``'s
prediction). Given a :class:`bench.core.maps.MapSink` (``sink=``), the test keeps every map it computes (``f1`` once
per method, ``f2`` per shift) and the pairs it scored (:func:`invariance_table` builds the rows from them again).
The verdicts are views of the table (:func:`bench.reporting.invariance_verdicts`): ``invariant`` (mean SSIM) and
``exact`` (95th percentile of ``max_rel_diff``). They differ for honest reasons, which is why both are reported. A
max-pool whose inputs tie exactly (the flat background of a digit) routes the gradient to one of equal candidates;
the twin computes the same values through other floating-point operations, so a tie can break the other way and move
a few gradient entries. ``tie_break`` (default on) gives both networks a max-pool that breaks such ties the same way
(:mod:`bench.twins.ties`); without it, Gradient on ``small_cnn`` under the adversarial shift scores SSIM 0.990
instead of 1.0 (float32 makes near-ties common too: run in float64, the default). PatternNet/-Attribution on a
convolution are not exactly invariant either. The first layer's patterns are estimated from patch statistics pooled
over all positions. Under a constant shift only the zero-padded border patches differ (their padding is not
shifted). Under a non-constant shift every position has its own offset ``m_p``, and the pooled covariance of the
patches with the outputs gains ``cov(m_p, y)`` in the interior too (measured on ``small_cnn``, first layer, median
per-unit relative pattern change: 3.5e-3 under the mean shift, 6.4e-2 under the checkerboard; deeper layers 1e-15).
On a dense first layer every input element is its own feature and the patterns are exactly invariant.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional  # noqa: UP035  (OmegaConf reads InvarianceSettings as the `invariance` group)

import pandas as pd
import torch
from torch import Tensor, nn

from bench.core.data import Dataset
from bench.core.explain import MethodSpec, explain_all, fit_loader, make_explainer, method_specs, names_keyword, predict
from bench.core.maps import MapSink
from bench.core.results import provenance, score_table
from bench.core.scores import EXACTNESS_SCORE, SIGN_SCORE
from bench.core.scoring import MapBatch, score_maps
from bench.core.settings import RunSettings, ScoreSettings, check_run
from bench.twins.build import Affine, affine_twin, check_twin
from bench.twins.ties import stable_ties
from methods import NotApplicable

__all__ = ["input_invariance", "InvarianceResult", "InvarianceSettings", "EXPERIMENT", "OWN_NOISE", "sets_own_noise",
           "invariance_table"]

EXPERIMENT = "input_invariance"
log = logging.getLogger(__name__)


@dataclass
class InvarianceSettings:
    """Settings of the input-invariance test (the ``invariance`` config group).

    ``float64``: run copies of the model and the data in double precision (float32 breaks max-pool near-ties);
    ``tie_break``: the max-pools of both networks break rounding-noise ties alike (:mod:`bench.twins.ties`);
    ``premise_rtol``: tolerance of the twin logits (default 1e-10 in float64, 1e-4 in float32); ``noise_level``:
    SmoothGrad's noise std as a fraction of the unshifted domain's width, for the specs that set none of their own
    (a spec's own ``sigma``, or ``noise_level`` times that width, comes first; a spec with ``noise_scale`` keeps its
    own rule), scaled by ``s`` for the twin of a transform ``s x + m``; ``ssim_threshold`` /
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
    #: ``{method: why}`` of methods that do not apply to this model (:class:`methods.NotApplicable`): no rows, no error
    not_applicable: dict[str, str] = field(default_factory=dict)


#: the SmoothGrad parameters by which a method spec sets its own noise (``invariance.noise_level`` then unused)
OWN_NOISE = ("sigma", "noise_level", "noise_scale")


def sets_own_noise(params: Mapping) -> bool:
    """Whether a method's ``params`` set its own SmoothGrad noise (one of :data:`OWN_NOISE`, not ``None``): then
    ``invariance.noise_level`` does not enter its scores, nor its rows' config hash (:func:`bench.cli.job.row_config`).
    """
    return any(params.get(key) is not None for key in OWN_NOISE)


def _noise(spec: MethodSpec, level: float, width: float, scale: Tensor | None = None) -> MethodSpec:
    """``spec`` with SmoothGrad's absolute noise std ``sigma`` set for one network (unchanged for a method without a
    ``sigma`` parameter, or a spec that sets ``noise_scale``: its own relative rule).

    The reference std is the spec's ``sigma``, else its ``noise_level`` times ``width`` (the unshifted domain's), else
    ``level * width`` (``invariance.noise_level``). ``scale``: the twin's transform scale ``s`` (one input's shape); the
    twin's std is ``s * sigma`` (a tensor), unless ``s`` is 1 everywhere (a pure shift: the same number as the
    reference's)."""
    params = spec.params
    if params.get("noise_scale") is not None or not names_keyword(spec.factory(), "sigma"):
        return spec
    sigma = params.get("sigma")
    if sigma is None:
        own = params.get("noise_level")
        sigma = float(level if own is None else own) * width
    if scale is not None and not bool((scale == 1).all()):
        sigma = sigma * scale
    return dataclasses.replace(spec, params={**params, "sigma": sigma})


def invariance_table(entries: Sequence[tuple[dict, dict[str, Tensor]]], *, model_name: str, dataset: str, seed: int,
                     config_hash: str = "", provenance: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The rows of the test from its scored entries ``(keys, {score: Tensor[n]})`` (``keys``: ``method``,
    ``condition``): the one builder of the experiment's table, used again by ``salbench-rescore`` on saved maps."""
    return score_table(entries, experiment=EXPERIMENT, model=model_name, dataset=dataset, seed=seed,
                       config_hash=config_hash, provenance=provenance)


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
    sink: MapSink | None = None,
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
        sink: a :class:`~bench.core.maps.MapSink` that keeps every map computed and every pair scored (``None``:
            nothing kept beyond ``run.keep_maps``).

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
    where = provenance(data.y_test, target)
    if sink is not None:
        sink.describe(EXPERIMENT, spatial_dims=dims, provenance=where, model_name=model_name, dataset=data.name,
                      seed=run.seed)
    kept1: dict[str, str] = {}  # the saved f1 map of each method
    x_fit = data.x_train[: run.fit_samples].to(device=run.device, dtype=dtype)
    y_fit = data.y_train[: run.fit_samples].to(run.device)
    low, high = data.domain

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
            if spec.label in result.not_applicable:  # found on an earlier shift (the same model)
                bar.update()
                continue
            bar.set_postfix(shift=shift_label, method=spec.label)
            try:
                if spec.label not in maps1:
                    e1 = make_explainer(_noise(spec, settings.noise_level, high - low), f1, domain=(low, high),
                                        pixel_domain=pixel1, fit_data=fit_loader(x_fit, y_fit))
                    a1 = explain_all(e1, x, target, bs)
                    maps1[spec.label] = MapBatch(a1, spatial_dims=dims)
                    if sink is not None:
                        kept1[spec.label] = sink.add(a1, method=spec.label, side="f1")
                e2 = make_explainer(_noise(spec, settings.noise_level, high - low, t.scale), f2, domain=domain2,
                                    pixel_domain=pixel2, fit_data=fit_loader(t.apply(x_fit), y_fit))
                a2 = explain_all(e2, x2, target, bs)
                kept2 = None if sink is None else sink.add(a2, method=spec.label, side="f2", condition=shift_label)
                scores = score_maps(maps1[spec.label], a2, names, spatial_dims=dims)
            except NotApplicable as err:  # not a failure: no rows, the reason recorded
                result.not_applicable[spec.label] = str(err)
                log.debug("%s does not apply to %s: %s", spec.label, model_name, err)
                bar.update()
                continue
            except Exception as err:  # noqa: BLE001  (recorded; the other methods go on)
                result.errors[(spec.label, shift_label)] = f"{type(err).__name__}: {err}"
                result.tracebacks[(spec.label, shift_label)] = traceback.format_exc()
                log.warning("%s / %s failed: %s: %s", spec.label, shift_label, type(err).__name__, err)
                bar.update()
                continue
            keys = {"method": spec.label, "condition": shift_label}
            entries.append((keys, scores))
            if sink is not None:
                sink.pair(keys, kept1[spec.label], kept2)
            result.maps[shift_label][spec.label] = (maps1[spec.label].maps[: run.keep_maps].reshape(
                -1, *x.shape[1:]).to("cpu", copy=True), a2[: run.keep_maps].to("cpu", copy=True))
            bar.update()
    bar.close()
    result.table = invariance_table(entries, model_name=model_name, dataset=data.name, seed=run.seed,
                                    config_hash=config_hash, provenance=where)
    return result
