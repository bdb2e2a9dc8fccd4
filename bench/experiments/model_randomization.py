"""Model-randomization sanity checks (Adebayo et al., "Sanity Checks for Saliency Maps").

:func:`model_randomization` compares every method's map on the trained model with its map at each
stage of a randomization (:func:`bench.randomization.randomized`: ``cascading`` from the logits down,
``bottom_up``, ``independent``), or on the same architecture trained on permuted labels (``labels``;
:func:`~bench.experiments.label_randomization.train_on_permuted_labels`). All methods run on one stage before the next
is made; the inputs and maps stay on the device; methods that need data (PatternNet/PatternAttribution) are refit on
each stage's model on the same fit set (the first ``fit_samples`` training images), since their statistics depend on
the weights. A method that fails is recorded in ``errors`` and skipped from then on; the others go on. The trained
model is never changed: the stages are a copy (:func:`~bench.randomization.randomized`), and a fingerprint of the
trained model taken before the first map is compared with one taken at the end.

Rows of the long table (:mod:`bench.core.results`): ``experiment="model_randomization"``, ``condition`` and ``mode``
= the mode (the job renames ``condition`` to the test's config entry; ``mode`` stays), ``layer`` = the stage (the
unit randomized in it; cumulative for ``cascading``/``bottom_up``; ``"permuted_labels"`` for ``labels``), one score
per sample and metric (:func:`bench.core.scoring.score_maps`, the paper's post-processing). The explained class is
the trained model's prediction, at every stage.

Seed policy: every map of a test (the reference, the controls, every stage, every re-initialization seed) is
computed with the method's own parameters (its own ``seed``, if it has one) and with the global random state seeded
with the run's ``seed`` just before (:func:`seeded`), so that a method drawing from torch's global generator draws
the same numbers for every model. Two maps of a test therefore differ in the model's weights and in nothing else.

Controls, scored exactly like the stages and stored as rows with ``layer`` = ``control:...``
(:mod:`bench.core.results`): ``control:repeat``, the map of a deep copy of the reference model (another object with
the same weights, under the same seed policy as the stages), the ceiling of "unchanged": 1 for any method whose map
depends on the weights, the input and its seed only, lower for one that reads something else (the object's identity,
unseeded randomness), which the verdicts then call not repeatable; ``control:input`` and ``control:edges``, maps
that depend on the input and nothing learned (the input itself, its Sobel edge magnitude); ``control:other``, the
reference map of the next sample of the same batch of ``run.batch_size`` (two maps of the same method and model that
explain different inputs: the floor of "unrelated"; NaN for a sample alone in its batch; within batches, so that
chunks of whole batches never change it). The **reference**: the plain input gradient (the model's own local
behaviour) is run like one more method, with every control and stage, and its rows are copied into every method's as
``control:gradient/<layer>`` (``<layer>`` the stage or control): the verdicts compare a method's change with the
model's own (a failure of the reference is recorded as ``control:gradient``). The label test compares the
permuted-label model with a control trained with its exact recipe on the true labels (``retrained_model``): the
control's maps are then the reference of every row (the two models differ in the labels alone), and
``control:retrained`` scores the trained model's maps against them (how far the recipe alone moves the maps). The
verdicts compare the stages with these controls (:func:`bench.reporting.aggregate.randomization_verdicts`).

Provenance: every row records its sample's ``data_index`` (its index in the test split), ``label`` and ``target``
(the trained model's prediction, explained at every stage). Given a :class:`bench.core.maps.MapSink` (``sink=``),
the test keeps every map it computes (the reference, the repeat, the label test's models, every stage of every seed,
the input-only nulls; the reference method's under ``control:gradient``) and every pair it scored with its row keys
(:func:`randomization_table` builds the rows from them again).

The label test's models are trained by :func:`bench.experiments.label_randomization.train_on_permuted_labels`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional  # noqa: UP035  (OmegaConf reads RandomizationSpec as a config entry)

import pandas as pd
import torch
from torch import Tensor, nn

from bench.core.data import Dataset
from bench.core.explain import MethodSpec, explain_all, fit_loader, make_explainer, method_specs, predict
from bench.core.maps import MapSink
from bench.core.results import (
    CONTROL_EDGES,
    CONTROL_GRADIENT,
    CONTROL_INPUT,
    CONTROL_OTHER,
    CONTROL_REPEAT,
    CONTROL_RETRAINED,
    provenance,
    score_table,
)
from bench.core.scoring import MapBatch, score_maps
from bench.core.settings import RunSettings, ScoreSettings, check_run
from bench.experiments.label_randomization import LABEL_STAGE, check_label_model
from bench.randomization import randomized
from methods import NotApplicable
from methods.state import changed, eval_mode, fingerprint

__all__ = ["EXPERIMENT", "MODES", "RandomizationMode", "Granularity", "RandomizationSpec", "RandomizationResult",
           "model_randomization", "randomization_table"]

EXPERIMENT = "model_randomization"
MODES = ("cascading", "bottom_up", "independent", "labels")
log = logging.getLogger(__name__)


class RandomizationMode(str, Enum):
    cascading = "cascading"
    bottom_up = "bottom_up"
    independent = "independent"
    labels = "labels"


class Granularity(str, Enum):
    module = "module"
    block = "block"


@dataclass
class RandomizationSpec:
    """One randomization test (an entry of the ``randomization`` config group).

    ``mode``: one of :data:`MODES`; ``granularity``, ``init``, ``stages``: see
    :func:`bench.randomization.randomized` (the re-initialization seed is the run's ``seed``). For ``labels``:
    ``seed`` permutes the labels, ``epochs``/``lr`` override the training of
    :data:`~bench.experiments.label_randomization.LABEL_TRAIN`, and the permuted labels must be fitted to at least
    ``min_train_acc``.

    The MPRT family of Hedstroem et al. (2023, 2024): ``smooth_samples > 0`` makes it the *smooth MPRT*: every map
    (trained, controls, stages) is the mean of the method's maps of ``smooth_samples`` noisy copies of the input
    (Gaussian, std ``smooth_noise`` times the width of the data domain; the same noise for every model, a fixed
    seed), which removes the noise of gradient-like maps before they are compared. ``scores`` adds registered
    scores to the run's for this test only: ``[entropy_rise]`` with ``mode: bottom_up`` is the *efficient MPRT*.
    """

    mode: RandomizationMode = RandomizationMode.cascading
    granularity: Granularity = Granularity.module
    init: str = "default"
    seed: int = 0
    stages: Optional[int] = None  # noqa: UP045
    epochs: Optional[int] = None  # noqa: UP045
    lr: Optional[float] = None  # noqa: UP045
    min_train_acc: float = 0.5
    smooth_samples: int = 0
    smooth_noise: float = 0.1
    scores: List[str] = field(default_factory=list)  # noqa: UP006


def _value(v: object) -> str:
    return str(v.value) if isinstance(v, Enum) else str(v)


@dataclass
class RandomizationResult:
    """``table``: the long results table; ``stages``: stage names in order; ``maps``:
    ``{method: [trained map, stage 1 map, ...]}`` for the first ``keep_maps`` samples (CPU; shorter when the
    method failed at a stage); ``inputs``/``targets``: those samples and their explained classes;
    ``errors``: ``{method: message}`` of methods that failed (the rest went on); ``tracebacks``: the same keys,
    the formatted tracebacks."""

    table: pd.DataFrame
    mode: str = ""
    stages: list[str] = field(default_factory=list)
    maps: dict[str, list[Tensor]] = field(default_factory=dict)
    inputs: Tensor | None = None
    targets: Tensor | None = None
    errors: dict[str, str] = field(default_factory=dict)
    tracebacks: dict[str, str] = field(default_factory=dict)
    #: ``{method: why}`` of methods that do not apply to this model (:class:`methods.NotApplicable`): no rows, no error
    not_applicable: dict[str, str] = field(default_factory=dict)

    def skipped(self, method: str) -> bool:
        """Whether ``method`` failed or does not apply (it is not run again)."""
        return method in self.errors or method in self.not_applicable

    def fail(self, method: str, where: str, err: Exception) -> None:
        """Record that ``method`` failed ``where`` (it is skipped from then on); a :class:`methods.NotApplicable` is
        recorded in ``not_applicable`` instead, not as an error."""
        if isinstance(err, NotApplicable):
            self.not_applicable[method] = str(err)
            log.debug("%s does not apply (%s): %s", method, where, err)
            return
        self.errors[method] = f"{where}: {type(err).__name__}: {err}"
        self.tracebacks[method] = traceback.format_exc()
        log.warning("%s failed (%s): %s: %s", method, where, type(err).__name__, err)


def input_nulls(x: Tensor) -> dict[str, Tensor]:
    """Maps that depend on the input and on nothing learned, shaped like ``x`` (``B x C x H x W``): the input
    itself (``control:input``) and the Sobel edge magnitude of each channel (``control:edges``, zero padding)."""
    if x.ndim != 4:
        return {CONTROL_INPUT: x}
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.T])[:, None].repeat(x.shape[1], 1, 1, 1)  # [2C, 1, 3, 3]
    g = torch.nn.functional.conv2d(x, kernels, padding=1, groups=x.shape[1]).unflatten(1, (x.shape[1], 2))
    return {CONTROL_INPUT: x, CONTROL_EDGES: g.square().sum(2).sqrt()}


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global random state seeded with ``seed`` inside, restored after (CPU, and ``device`` when it is a
    CUDA device): the seed policy of the randomization tests (module docstring)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _next_in_batch(n: int, batch_size: int) -> tuple[Tensor, Tensor]:
    """For ``n`` samples in batches of ``batch_size``: the index of each sample's partner (the next sample of its
    batch, the last one paired with the first) and a mask of the samples alone in their batch (no partner: NaN).
    Within batches, so that chunks of whole batches never change the pairs."""
    idx = torch.arange(n)
    alone = torch.zeros(n, dtype=torch.bool)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        idx[start:stop] = start + (torch.arange(stop - start) + 1) % (stop - start)
        alone[start:stop] = stop - start == 1
    return idx, alone


def _maps(explainer: object, x: Tensor, target: Tensor, bs: int, seed: int) -> Tensor:
    """``explain_all`` under the seed policy (:func:`seeded`)."""
    with seeded(seed, x.device):
        return explain_all(explainer, x, target, bs)


def _with_reference(scored: list[tuple[dict, dict[str, Tensor]]], labels: Sequence[str],
                    ) -> list[tuple[dict, dict[str, Tensor]]]:
    """The entries with the reference's rows copied into every method's as ``control:gradient/<layer>`` (and no rows
    of their own): each method's rows then hold everything its verdict reads. A method without rows of its own (it
    failed on the trained model) gets none."""
    own = [(k, v) for k, v in scored if k["method"] != CONTROL_GRADIENT]
    ref = [(k, v) for k, v in scored if k["method"] == CONTROL_GRADIENT]
    scored_labels = {k["method"] for k, _ in own}  # a method that failed before any row gets no reference rows
    return own + [({**k, "method": label, "layer": f"{CONTROL_GRADIENT}/{k['layer']}"}, v)
                  for label in labels if label in scored_labels for k, v in ref]


class Smoothed:
    """``explainer`` averaged over ``n`` noisy copies of its input: ``mean_k explainer(x + sigma * e_k)``, the
    noise ``e_k`` drawn on the CPU from a generator seeded with ``seed`` at every call (the same noise for every
    model and every call on the same batch shape)."""

    def __init__(self, explainer: object, n: int, sigma: float, seed: int = 0) -> None:
        if n < 1 or not sigma >= 0:
            raise ValueError(f"smooth MPRT needs smooth_samples >= 1 and smooth_noise >= 0, got {n}, {sigma}")
        self.explainer, self.n, self.sigma, self.seed = explainer, int(n), float(sigma), seed

    def __call__(self, x: Tensor, target: Tensor | None = None) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        total = torch.zeros_like(x)
        for _ in range(self.n):
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
            total += self.explainer(x + self.sigma * noise, target)
        return total / self.n

    def __repr__(self) -> str:
        return f"Smoothed({self.explainer!r}, n={self.n}, sigma={self.sigma:g})"


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself when all its tensors are on ``device``, else a copy moved there (never moves ``model``)."""
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device == device for t in tensors):
        return model
    return copy.deepcopy(model).to(device)


def _controls(specs: Sequence[MethodSpec], ref: Mapping[str, MapBatch], x: Tensor, target: Tensor,
              reference: nn.Module, trained: nn.Module | None, domain: tuple[float, float], fit: list,
              names: Sequence[str], bs: int, result: RandomizationResult, seed: int,
              build: Callable[..., Any] = make_explainer, sink: MapSink | None = None,
              kept: Mapping[str, str] | None = None, condition: str = "-") -> list[tuple[dict, dict[str, Tensor]]]:
    """The control rows of every method still running (see the module docstring): the maps of a copy of the
    ``reference`` model against its maps ``ref``, the input-only nulls, and (label test) the trained model's maps;
    every map under the seed policy with ``seed``. ``sink``: keeps the maps and the scored pairs (``kept``: the
    names of the reference maps in it; ``condition``: the maps' condition there)."""
    rows: list[tuple[dict, dict[str, Tensor]]] = []
    nulls = input_nulls(x)
    twin = copy.deepcopy(reference)  # the repeat control's model: another object, the same weights
    saved: dict[str, str] = {}  # the input-only maps in the sink (method-independent: saved once)
    pairing: tuple[str, str] | None = None  # the control:other partner index and mask in the sink

    def keep(keys: dict, scores: dict[str, Tensor], second: str | None, **extra: str) -> None:
        rows.append((keys, scores))
        if sink is not None and second is not None:
            sink.pair(keys, kept[keys["method"]], second, **extra)

    for ms in specs:
        if result.skipped(ms.label):
            continue
        try:
            with eval_mode(twin):
                again = _maps(build(ms, twin, domain=domain, fit_data=fit), x, target, bs, seed)
            name = None if sink is None else sink.add(again, method=ms.label, side="repeat", layer=CONTROL_REPEAT,
                                                      condition=condition, seed=seed)
            keep({"method": ms.label, "layer": CONTROL_REPEAT}, score_maps(ref[ms.label], again, names), name)
            for layer, null in nulls.items():
                if sink is not None and layer not in saved:
                    saved[layer] = sink.add(null, method="-", side="null", condition=condition, layer=layer, seed=seed)
                keep({"method": ms.label, "layer": layer}, score_maps(ref[ms.label], null, names), saved.get(layer))
            if len(x) > 1:  # the floor: each sample's reference map against the next sample's of its batch
                idx, alone = _next_in_batch(len(x), bs)
                other = ref[ms.label].maps.reshape(ref[ms.label].shape)[idx]
                scores = score_maps(ref[ms.label], other, names)
                if sink is not None and pairing is None:
                    pairing = (sink.aux(idx), sink.aux(alone))
                keep({"method": ms.label, "layer": CONTROL_OTHER},
                     {k: v.masked_fill(alone.to(v.device), float("nan")) for k, v in scores.items()},
                     None if sink is None else kept[ms.label],
                     **({} if pairing is None else {"index": pairing[0], "mask": pairing[1]}))
            if trained is not None:
                with eval_mode(trained):
                    maps = _maps(build(ms, trained, domain=domain, fit_data=fit), x, target, bs, seed)
                name = None if sink is None else sink.add(maps, method=ms.label, side="trained",
                                                          condition=condition, layer=CONTROL_RETRAINED, seed=seed)
                keep({"method": ms.label, "layer": CONTROL_RETRAINED}, score_maps(ref[ms.label], maps, names), name)
        except Exception as err:  # noqa: BLE001  (recorded; the other methods go on)
            result.fail(ms.label, "controls", err)
    return rows


def randomization_table(scored: Sequence[tuple[dict, dict[str, Tensor]]], *, methods: Sequence[str],
                        model_name: str, dataset: str, mode: str, seed: int, config_hash: str = "",
                        provenance: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The rows of one randomization test from its scored entries ``(keys, {score: Tensor[n]})`` (``keys``:
    ``method``, ``layer``, optionally ``seed``), the reference's rows copied into every method of ``methods`` (the
    method labels, in order) as ``control:gradient/<layer>``; ``mode``: the mode's label (``cascading``,
    ``cascading+smooth`` ...), written into ``condition`` and ``mode``. The one builder of the experiment's table,
    used again by ``salbench-rescore`` on saved maps."""
    return score_table(_with_reference(list(scored), list(methods)), experiment=EXPERIMENT, model=model_name,
                       dataset=dataset, condition=mode, mode=mode, seed=seed, config_hash=config_hash,
                       provenance=provenance)


def model_randomization(
    model: nn.Module,
    data: Dataset,
    methods: Sequence[str | MethodSpec] | Mapping[str, dict | MethodSpec],
    spec: RandomizationSpec | str = "cascading",
    *,
    random_label_model: nn.Module | None = None,
    retrained_model: nn.Module | None = None,
    run: RunSettings | None = None,
    scoring: ScoreSettings | None = None,
    model_name: str = "model",
    config_hash: str = "",
    sink: MapSink | None = None,
) -> RandomizationResult:
    """Similarity of each method's map on the trained ``model`` to its map at each randomization stage.

    Args:
        model: the trained network (never modified; checked by fingerprint at the end).
        data: its data; the first ``run.n_samples`` test images are explained for the trained model's predicted
            class, at every stage.
        methods: names, :class:`~bench.core.explain.MethodSpec` objects or ``{label: spec}``.
        spec: a :class:`RandomizationSpec` or just its mode (``cascading``, ``bottom_up``, ``independent``,
            ``labels``); with ``labels``, ``random_label_model`` is the same architecture trained on permuted
            labels and ``retrained_model`` (optional; the verdict needs it) the same recipe on the true labels
            (:func:`~bench.experiments.label_randomization.train_on_permuted_labels`).
        run, scoring: :class:`~bench.core.settings.RunSettings` and :class:`~bench.core.settings.ScoreSettings`.
        model_name, config_hash: written into the result rows.
        sink: a :class:`~bench.core.maps.MapSink` that keeps every map computed and every pair scored (``None``:
            nothing kept beyond ``run.keep_maps``).

    Returns a :class:`RandomizationResult`. Raises ``ValueError`` for an unknown mode, a label model that is
    missing, superfluous or not a retrained copy of the architecture; ``RuntimeError`` when a premise fails
    (a randomization that changed nothing, a trained model that changed).
    """
    from tqdm.auto import tqdm

    spec = RandomizationSpec(mode=spec) if isinstance(spec, str) else spec
    mode = _value(spec.mode)
    run, scoring = run or RunSettings(), scoring or ScoreSettings()
    if mode not in MODES:
        raise ValueError(f"unknown randomization mode {mode!r}; accepted: {', '.join(MODES)}")
    if (mode == "labels") != (random_label_model is not None):
        raise ValueError("mode 'labels' needs random_label_model (see train_on_permuted_labels), "
                         f"and only that mode takes one (mode {mode!r})")
    if retrained_model is not None and mode != "labels":
        raise ValueError(f"retrained_model is the label test's control; mode {mode!r} takes none")
    specs = method_specs(methods)
    if any(ms.label == CONTROL_GRADIENT for ms in specs):
        raise ValueError(f"{CONTROL_GRADIENT!r} is the reference's label; name the method otherwise")
    specs = [*specs, MethodSpec(CONTROL_GRADIENT, "gradient")]  # the reference (module docstring), run like a method
    names = list(dict.fromkeys([*scoring.names, *spec.scores]))
    if spec.smooth_samples:
        mode_label = f"{mode}+smooth"
        sigma = spec.smooth_noise * (data.domain[1] - data.domain[0])

        def build(ms: MethodSpec, m: nn.Module, **kw: object) -> Smoothed:
            return Smoothed(make_explainer(ms, m, **kw), spec.smooth_samples, sigma, seed=run.seed)
    else:
        mode_label, build = mode, make_explainer
    device = torch.device(run.device)
    trained = _on_device(model, device)
    other = retrained = None
    if random_label_model is not None:
        other = _on_device(random_label_model, device)
        check_label_model(trained, other)
    if retrained_model is not None:
        retrained = _on_device(retrained_model, device)
        check_label_model(trained, retrained)
    check_run(run, len(data.x_test))
    before = fingerprint(trained)
    x = data.x_test[: run.n_samples].to(device)
    dims = x.ndim - 2  # 2 for images, 1 for signals, 0 for vectors (SSIM and HOG need images)
    bs = run.batch_size
    score_maps(x[:2], x[:2], names, spatial_dims=dims)  # fail fast on a bad score
    fit = fit_loader(data.x_train[: run.fit_samples].to(device), data.y_train[: run.fit_samples].to(device))
    # the kept maps and inputs are copies, not views: a view would keep the whole batch alive with the result
    result = RandomizationResult(table=pd.DataFrame(), mode=mode_label,
                                 inputs=x[: run.keep_maps].to("cpu", copy=True))
    scored: list[tuple[dict, dict[str, Tensor]]] = []  # one table at the end

    target = predict(trained, x, bs, what=f"the first {len(x)} test inputs of {data.name!r}")
    result.targets = target[: run.keep_maps].to("cpu", copy=True)
    where = provenance(data.y_test, target)
    labels = [ms.label for ms in specs[:-1]]
    if sink is not None:
        sink.describe(EXPERIMENT, spatial_dims=dims, provenance=where, methods=labels, model_name=model_name,
                      dataset=data.name, mode=mode_label, seed=run.seed)
    kept: dict[str, str] = {}  # the saved reference map of each method
    named = mode_label if sink is None or sink.condition is None else sink.condition  # the maps' condition

    # the reference maps, normalized and ranked once for all stages: the trained model's, or in the label test the
    # retrained control's (same recipe as the permuted-label model: only the labels differ)
    reference = retrained if retrained is not None else trained
    ref: dict[str, MapBatch] = {}
    for ms in specs:
        try:
            with eval_mode(reference):
                maps = _maps(build(ms, reference, domain=data.domain, fit_data=fit), x, target, bs, run.seed)
            ref[ms.label] = MapBatch(maps, spatial_dims=dims)
            if sink is not None:
                kept[ms.label] = sink.add(maps, method=ms.label, side="reference", condition=named, seed=run.seed)
        except Exception as err:  # noqa: BLE001  (recorded; the other methods go on)
            result.fail(ms.label, "trained model" if retrained is None else "retrained control", err)
            continue
        result.maps[ms.label] = [maps[: run.keep_maps].to("cpu", copy=True)]
    scored += _controls(specs, ref, x, target, reference, trained if retrained is not None else None, data.domain,
                        fit, names, bs, result, run.seed, build, sink, kept, named)

    seeds = [run.seed] if other is not None else [run.seed + k for k in range(run.seeds)]
    for seed in seeds:  # several re-initialization seeds: every stage row records its seed
        first = seed == seeds[0]
        if other is not None:
            stage_iter: Iterator[tuple[str, nn.Module]] = iter([(LABEL_STAGE, other)])
        else:
            stage_iter = randomized(trained, mode, example=x[:2], granularity=_value(spec.granularity), seed=seed,
                                    init=spec.init, stages=spec.stages, verify_trained=False)
        bar = tqdm(desc=f"randomization ({mode}, seed {seed})", disable=not run.progress, leave=False)
        try:
            for stage, stage_model in stage_iter:
                if first:
                    result.stages.append(stage)
                with eval_mode(stage_model):
                    for ms in specs:
                        if result.skipped(ms.label):
                            continue
                        bar.set_postfix(stage=stage, method=ms.label)
                        try:
                            explainer = build(ms, stage_model, domain=data.domain, fit_data=fit)
                            maps = _maps(explainer, x, target, bs, run.seed)
                            scores = score_maps(ref[ms.label], maps, names, spatial_dims=dims)
                        except Exception as err:  # noqa: BLE001
                            result.fail(ms.label, f"stage {stage}" + ("" if first else f" (seed {seed})"), err)
                            continue
                        keys = {"method": ms.label, "layer": stage, "seed": seed}
                        scored.append((keys, scores))
                        if sink is not None:
                            sink.pair(keys, kept[ms.label], sink.add(maps, method=ms.label, side="stage",
                                                                     condition=named, layer=stage, seed=seed))
                        if first:  # the figures show the first seed
                            result.maps[ms.label].append(maps[: run.keep_maps].to("cpu", copy=True))
                bar.update()
        finally:
            bar.close()
            close = getattr(stage_iter, "close", None)
            if close is not None:
                close()
    moved = changed(before, fingerprint(trained))
    if moved:
        raise RuntimeError(f"the trained model changed during the sanity checks: {len(moved)} tensors "
                           f"({', '.join(moved[:5])})")
    result.maps.pop(CONTROL_GRADIENT, None)
    result.table = randomization_table(scored, methods=labels, model_name=model_name, dataset=data.name,
                                       mode=mode_label, seed=run.seed, config_hash=config_hash, provenance=where)
    return result
