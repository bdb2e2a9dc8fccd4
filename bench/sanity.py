"""Model-randomization sanity checks (Adebayo et al., "Sanity Checks for Saliency Maps").

:func:`model_randomization` compares every method's map on the trained model with its map at each
stage of a randomization (:func:`bench.randomization.randomized`: ``cascading`` from the logits down,
``bottom_up``, ``independent``), or on the same architecture trained on permuted labels (``labels``;
:func:`train_on_permuted_labels`). All methods run on one stage before the next is made; the inputs and
maps stay on the device; methods that need data (PatternNet/PatternAttribution) are refit on each stage's
model on the same fit set (the first ``fit_samples`` training images), since their statistics depend on
the weights. A method that fails is recorded in ``errors`` and skipped from then on; the others go on.
The trained model is never changed: the stages are a copy (:func:`~bench.randomization.randomized`), and a
fingerprint of the trained model taken before the first map is compared with one taken at the end.

Rows of the long table (:mod:`bench.results`): ``experiment="model_randomization"``, ``condition`` = the
mode, ``layer`` = the stage (the unit randomized in it; cumulative for ``cascading``/``bottom_up``;
``"permuted_labels"`` for ``labels``), one score per sample and metric (:func:`bench.scoring.score_maps`,
the paper's post-processing). The explained class is the trained model's prediction, at every stage.

Label randomization (:func:`train_on_permuted_labels`) trains with the trained models' recipe (plain SGD,
lr 0.2, batch 32), the labels permuted, from another initialization (seed 1; with the trained model's seed 0
the first-layer weights of ``small_cnn`` trained on true and on permuted labels still correlate at 0.93: the
maps would share the initialization, not anything learned). Measured on the bundled MNIST (accuracy on the
permuted training labels, chance 0.1): on all 4,000 training digits ``small_cnn`` passes 0.5 after 24 epochs
and 0.9 after about 40, ``paper_mlp`` 0.5 after 16 and 0.9 after about 32 (3-8 s per epoch on 2 shared CPU
cores: minutes). On 1,000 digits ``small_cnn`` passes 0.5 after about 31 epochs and fits all of them after
about 48, ``paper_mlp`` 0.99 after 42 (lr 0.2 is at its stability edge there: one dip to 0.54 at epoch 47,
0.97 at 50). The defaults, :data:`LABEL_TRAIN` (50 epochs) on :data:`LABEL_TRAIN_SAMPLES` (the first 1,000
digits), fit 1.000 of the permuted labels with both models (test accuracy 0.07 / 0.10), in about 25 s
(``small_cnn``) and 35 s (``paper_mlp``) on one core, several times that on busy shared cores; checkpoints
are cached after the first run.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from bench.data import Dataset
from bench.explain import MethodSpec, explain_all, fit_loader, make_explainer, method_specs
from bench.models import TrainConfig
from bench.randomization import permuted_labels, randomized
from bench.results import score_table
from bench.scoring import SCORES, Reference, score_maps

__all__ = [
    "EXPERIMENT",
    "LABEL_STAGE",
    "LABEL_TRAIN",
    "LABEL_TRAIN_SAMPLES",
    "MODES",
    "RandomizationResult",
    "model_randomization",
    "save_figures",
    "summary",
    "train_on_permuted_labels",
]

MODES = ("cascading", "bottom_up", "independent", "labels")
EXPERIMENT = "model_randomization"
LABEL_STAGE = "permuted_labels"  # the ``layer`` of the rows of mode ``labels``

#: training of the data-randomization model (see the module docstring); init seed 1, not the trained models' 0
LABEL_TRAIN = TrainConfig(epochs=50, lr=0.2, batch_size=32, seed=1)
#: training images it memorizes (the first ones of the stratified, shuffled split); None = all
LABEL_TRAIN_SAMPLES: int | None = 1000


@dataclass
class RandomizationResult:
    """``table``: the long results table; ``stages``: stage names in order; ``maps``:
    ``{method: [trained map, stage 1 map, ...]}`` for the first ``keep_maps`` samples (CPU; shorter when the
    method failed at a stage); ``inputs``/``targets``: those samples and their explained classes;
    ``errors``: ``{method: message}`` of methods that failed (the rest went on)."""

    table: pd.DataFrame
    mode: str = ""
    stages: list[str] = field(default_factory=list)
    maps: dict[str, list[Tensor]] = field(default_factory=dict)
    inputs: Tensor | None = None
    targets: Tensor | None = None
    errors: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------ data randomization


def train_on_permuted_labels(
    model_name: str,
    data: Dataset,
    train_cfg: TrainConfig | None = None,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    train_samples: int | None = LABEL_TRAIN_SAMPLES,
    seed: int = 0,
    min_train_acc: float = 0.5,
    model_kw: dict | None = None,
    device: str | torch.device = "cpu",
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: bool = False,
) -> tuple[nn.Module, dict]:
    """The data-randomization model: ``model_name`` trained on permuted training labels.

    The labels of the first ``train_samples`` training images (at most; all when None) are permuted with ``seed``
    (:func:`bench.randomization.permuted_labels`), and the model is trained on them with ``train_cfg``
    (default :data:`LABEL_TRAIN`; ``epochs``/``lr`` override its fields). Checkpoints are cached like the
    trained models' (:func:`bench.models.load_or_train`). Returns ``(model in eval mode, info)``; ``info``
    holds ``train_acc`` (on the permuted labels), ``test_acc`` (true test labels: about chance),
    ``epochs``, ``lr``, ``train_samples``, ``label_seed``, ``cached``, ``path``.

    Raises ``RuntimeError`` when the model fits the permuted labels to less than ``min_train_acc`` (chance
    is ``1 / num_classes``): a model that did not memorize the random labels says nothing about the test.
    """
    from bench.models import load_or_train

    cfg = train_cfg or LABEL_TRAIN
    overrides = {k: v for k, v in (("epochs", epochs), ("lr", lr)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    n = len(data.x_train) if train_samples is None else min(int(train_samples), len(data.x_train))
    if n < 1:
        raise ValueError(f"train_samples must be >= 1, got {train_samples}")
    sub = data if n == len(data.x_train) else dataclasses.replace(data, x_train=data.x_train[:n],
                                                                   y_train=data.y_train[:n])
    labels = permuted_labels(sub.y_train, seed)
    model, info = load_or_train(model_name, sub, cfg, model_kw=model_kw, labels=labels, device=device,
                                cache=cache, use_cache=use_cache, progress=progress)
    info = {**info, "lr": cfg.lr, "train_samples": n, "label_seed": seed,
            "label_agreement": float((labels == sub.y_train).float().mean())}
    if info["train_acc"] < min_train_acc:
        raise RuntimeError(
            f"{model_name} fits only {info['train_acc']:.3f} of the {n} permuted training labels after "
            f"{cfg.epochs} epochs at lr {cfg.lr} (chance {1 / data.num_classes:.2f}, required {min_train_acc}); "
            "train longer (epochs=...) or on fewer samples (train_samples=...)"
        )
    return model, info


# ---------------------------------------------------------------------------------------- experiment


@torch.no_grad()
def _fingerprint(model: nn.Module) -> dict[str, tuple[float, float]]:
    """Per parameter and buffer: (sum, sum of squares), in float32 for float32 tensors (cheap: one pass; the
    same tensor gives the same numbers in one process), float64 otherwise."""
    names, stats = [], []
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        v = torch.view_as_real(t.detach()) if t.is_complex() else t.detach()
        v = v.reshape(-1)
        if v.dtype not in (torch.float32, torch.float64):
            v = v.to(torch.float64)
        names.append(name)
        stats.append(torch.stack([v.sum(), torch.dot(v, v)]).double())
    if not names:
        return {}
    return dict(zip(names, map(tuple, torch.stack(stats).cpu().tolist()), strict=True))


def _check_unchanged(model: nn.Module, before: dict[str, tuple[float, float]]) -> None:
    after = _fingerprint(model)
    changed = {n: (before.get(n), after.get(n)) for n in set(before) | set(after)
               if not np.array_equal(before.get(n), after.get(n), equal_nan=True)}
    if changed:
        detail = ", ".join(f"{n}: {b} -> {a}" for n, (b, a) in sorted(changed.items())[:5])
        raise RuntimeError(f"the trained model changed during the sanity checks ({len(changed)} tensors; "
                           f"(sum, sum of squares) before -> after): {detail}")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode; every module's ``training`` flag is restored after."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model.eval()
    finally:
        for m, mode in modes:
            m.training = mode


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself when all its tensors are on ``device``, else a copy moved there (never moves ``model``)."""
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.device == device for t in tensors):
        return model
    return copy.deepcopy(model).to(device)


def _check_label_model(trained: nn.Module, other: nn.Module) -> None:
    shapes = {n: tuple(p.shape) for n, p in trained.named_parameters()}
    other_shapes = {n: tuple(p.shape) for n, p in other.named_parameters()}
    if shapes != other_shapes:
        diff = sorted(set(shapes.items()) ^ set(other_shapes.items()))[:6]
        raise ValueError(f"random_label_model is not the trained model's architecture; differing parameters {diff}")
    with torch.no_grad():
        if all(torch.equal(p.cpu(), q.cpu()) for p, q in zip(trained.parameters(), other.parameters(), strict=True)):
            raise ValueError("random_label_model has the trained model's weights; train it on permuted labels")


def model_randomization(
    model: nn.Module,
    data: Dataset,
    methods: Sequence[str] | Mapping[str, dict] | Sequence[MethodSpec],
    mode: str = "cascading",
    *,
    metrics: Sequence[str] = SCORES,
    normalization: str = "abs",
    random_label_model: nn.Module | None = None,
    granularity: str = "module",
    init: str = "default",
    stages: int | Sequence[str] | None = None,
    n_samples: int = 64,
    batch_size: int = 64,
    fit_samples: int = 2000,
    device: str | torch.device = "cpu",
    model_name: str = "model",
    seed: int = 0,
    config_hash: str = "",
    keep_maps: int = 4,
    progress: bool = False,
) -> RandomizationResult:
    """Similarity of each method's map on the trained ``model`` to its map at each randomization stage.

    ``methods``: names, ``{label: {"name"|"_target_", "params"}}`` or :class:`~bench.explain.MethodSpec`\\ s.
    ``mode``: ``cascading`` | ``bottom_up`` | ``independent`` | ``labels`` (then ``random_label_model`` is the
    same architecture trained on permuted labels, :func:`train_on_permuted_labels`). ``granularity``,
    ``init``, ``stages`` and ``seed`` (of the re-initialization): see :func:`bench.randomization.randomized`.
    The first ``n_samples`` test images are explained; ``metrics``/``normalization``: see
    :func:`bench.scoring.score_maps`. Returns a :class:`RandomizationResult`.
    """
    from tqdm.auto import tqdm

    if mode not in MODES:
        raise ValueError(f"unknown randomization mode {mode!r}; accepted: {', '.join(MODES)}")
    if (mode == "labels") != (random_label_model is not None):
        raise ValueError("mode 'labels' needs random_label_model (see train_on_permuted_labels), "
                         f"and only that mode takes one (mode {mode!r})")
    specs = list(methods) if methods and isinstance(next(iter(methods)), MethodSpec) else method_specs(methods)
    device = torch.device(device)
    trained = _on_device(model, device)
    other = None
    if random_label_model is not None:
        other = _on_device(random_label_model, device)
        _check_label_model(trained, other)
    before = _fingerprint(trained)
    x = data.x_test[:n_samples].to(device)
    score_maps(x[:2], x[:2], metrics, normalization=normalization)  # fail fast on a metric that cannot run here
    fit = fit_loader(data.x_train[:fit_samples].to(device), data.y_train[:fit_samples].to(device))
    result = RandomizationResult(table=pd.DataFrame(), mode=mode, inputs=x[:keep_maps].cpu())
    scored: list[tuple[str, str, dict[str, Tensor]]] = []  # (method, stage, scores): one table at the end

    with _eval_mode(trained), torch.no_grad():
        target = torch.cat([trained(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    result.targets = target[:keep_maps].cpu()

    ref: dict[str, Reference] = {}  # the trained model's maps, normalized and ranked once for all stages
    for spec in specs:
        try:
            maps = explain_all(make_explainer(spec, trained, domain=data.domain, fit_data=fit), x, target,
                               batch_size)
            ref[spec.label] = Reference(maps)
        except Exception as err:  # noqa: BLE001  (recorded; the other methods go on)
            result.errors[spec.label] = f"trained model: {type(err).__name__}: {err}"
            continue
        result.maps[spec.label] = [maps[:keep_maps].cpu()]

    if other is not None:
        stage_iter: Iterator[tuple[str, nn.Module]] = iter([(LABEL_STAGE, other)])
    else:
        stage_iter = randomized(trained, mode, example=x[:2], granularity=granularity, seed=seed, init=init,
                                stages=stages)
    bar = tqdm(desc=f"randomization ({mode})", disable=not progress, leave=False)
    try:
        for stage, stage_model in stage_iter:
            result.stages.append(stage)
            with _eval_mode(stage_model):
                for spec in specs:
                    if spec.label in result.errors:
                        continue
                    bar.set_postfix(stage=stage, method=spec.label)
                    try:
                        explainer = make_explainer(spec, stage_model, domain=data.domain, fit_data=fit)
                        maps = explain_all(explainer, x, target, batch_size)
                        scores = score_maps(ref[spec.label], maps, metrics, normalization=normalization)
                    except Exception as err:  # noqa: BLE001
                        result.errors[spec.label] = f"stage {stage}: {type(err).__name__}: {err}"
                        continue
                    scored.append((spec.label, stage, scores))
                    result.maps[spec.label].append(maps[:keep_maps].cpu())
            bar.update()
    finally:
        bar.close()
        close = getattr(stage_iter, "close", None)
        if close is not None:
            close()  # randomized() checks the trained model when closed
    _check_unchanged(trained, before)
    result.table = score_table([({"method": m, "layer": stage}, scores) for m, stage, scores in scored],
                               experiment=EXPERIMENT, model=model_name, dataset=data.name, condition=mode, seed=seed,
                               config_hash=config_hash)
    return result


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, condition, method, metric): ``last`` = mean score at the condition's last stage
    (NaN when the method has no score there), ``auc`` = mean over stages of the per-stage mean (1 = the map
    never changed), ``n`` = scores at the last stage, ``nan`` = NaN scores over all stages."""
    t = table[table.experiment == EXPERIMENT]
    rows = []
    for (model, dataset, cond), grp in t.groupby(["model", "dataset", "condition"], sort=False):
        order = list(dict.fromkeys(grp.layer))
        for (method, metric), g in grp.groupby(["method", "metric"], sort=False):
            means = g.groupby("layer", sort=False)["score"].mean().reindex(order)
            rows.append(dict(model=model, dataset=dataset, condition=cond, method=method, metric=metric,
                             stage=order[-1], last=float(means.iloc[-1]), auc=float(np.nanmean(means.to_numpy())),
                             n=int(g.score[g.layer == order[-1]].notna().sum()), nan=int(g.score.isna().sum())))
    return pd.DataFrame(rows)


def save_figures(result: RandomizationResult, folder: str | os.PathLike, *, title: str = "",
                 sample: int = 0) -> list[Path]:
    """The cascade grid (``randomization_<mode>_grid.png``) and the similarity curves
    (``randomization_<mode>_curves.png``) of ``result`` in ``folder``; returns the written paths."""
    from bench.figures import cascade_grid, similarity_curves

    folder = Path(folder)
    title = title or f"model randomization: {result.mode}"
    paths = []
    if result.maps and result.inputs is not None:
        paths.append(cascade_grid(result.maps, result.stages, result.inputs,
                                  folder / f"randomization_{result.mode}_grid.png", title=title, sample=sample))
    if len(result.table):
        paths.append(similarity_curves(result.table, folder / f"randomization_{result.mode}_curves.png",
                                       title=title))
    return paths
