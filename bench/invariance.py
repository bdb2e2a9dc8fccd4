"""The input-invariance experiment (Kindermans et al., "The (Un)reliability of saliency methods").

For every shift ``m`` a twin ``f2`` with ``f2(x + m) == f1(x)`` is built (:mod:`bench.twins`); after the
premise is proven on the evaluated batch, every method's map on ``(f1, x)`` is compared with its map on
``(f2, x + m)``. Methods whose reference depends on the data take the domain of the data they explain:
the twin's domain is ``(low + min m, high + max m)`` (IG's black baseline, the zB bounds), and the methods
that need data are fit on the training images (``x + m`` for the twin). SmoothGrad's noise scale is a
setting of the method, not a property of the data: both networks get the same ``sigma``
(``noise_level`` times the width of the unshifted domain), so that a non-constant shift does not change
the noise.

Scores per sample (rows of the long table, ``condition`` = the shift's label): the similarity metrics of
:func:`bench.scoring.score_maps` and ``max_rel_diff`` = ``max|A1 - A2| / max|A1|``. Two verdicts per
(method, shift):

* ``invariant``: the mean SSIM is at least ``ssim_threshold`` (default 0.99): the maps look the same.
* ``exact``: the 95th percentile of ``max_rel_diff`` is at most ``tolerance`` (default 1e-3).

They differ for honest reasons, which is why both are reported. A max-pool whose inputs tie exactly (the
flat background of a digit) routes the gradient to one of equal candidates; the twin computes the same
values through other floating-point operations, so a tie can break the other way and move a few gradient
entries. ``tie_break`` (default on) gives both networks a max-pool that breaks such ties the same way
(:mod:`bench.ties`); without it, Gradient on ``small_cnn`` under the adversarial shift scores SSIM 0.990
instead of 1.0 (float32 makes near-ties common too: run in float64, the default). PatternAttribution
on a zero-padded convolution is not exactly invariant either: the padded positions of the unfolded
patches are not shifted, so the patch statistics of the twin differ at the borders (about 1% of the
map on ``small_cnn``; 1e-13 on the MLP).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn

from bench.data import Dataset
from bench.explain import MethodSpec, explain_all, fit_loader, make_explainer, method_specs
from bench.results import concat, score_rows
from bench.scoring import SCORES, relative_difference, score_maps
from bench.ties import stable_ties
from bench.twins import check_twin, shifted_twin

__all__ = ["input_invariance", "InvarianceResult", "verdicts", "DEFAULT_TOLERANCE", "DEFAULT_SSIM_THRESHOLD"]

DEFAULT_TOLERANCE = 1e-3
DEFAULT_SSIM_THRESHOLD = 0.99
VERDICT_QUANTILE = 0.95


@dataclass
class InvarianceResult:
    """``table``: the long results table; ``verdicts``: one row per (method, shift); ``maps``:
    ``{shift: {method: (A1, A2)}}`` for the first ``keep_maps`` samples (CPU); ``premise``: the relative twin
    error per shift; ``errors``: ``{(method, shift): message}`` of methods that failed (the rest went on)."""

    table: pd.DataFrame
    verdicts: pd.DataFrame
    maps: dict[str, dict[str, tuple[Tensor, Tensor]]] = field(default_factory=dict)
    inputs: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    premise: dict[str, float] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)


def verdicts(
    table: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE, ssim_threshold: float = DEFAULT_SSIM_THRESHOLD
) -> pd.DataFrame:
    """Per (model, method, condition): mean SSIM, the 95th percentile of ``max_rel_diff``, ``invariant``
    (mean SSIM >= ``ssim_threshold``) and ``exact`` (that percentile <= ``tolerance``)."""
    t = table[table.experiment == "input_invariance"]
    keys = ["model", "method", "condition"]
    rel = t[t.metric == "max_rel_diff"].groupby(keys)["score"].quantile(VERDICT_QUANTILE).rename("max_rel_diff_q95")
    ssim = t[t.metric == "ssim"].groupby(keys)["score"].mean().rename("ssim")
    out = pd.concat([ssim, rel], axis=1).reset_index()
    out["invariant"] = out["ssim"] >= ssim_threshold
    out["exact"] = out["max_rel_diff_q95"] <= tolerance
    return out


def _noise(spec: MethodSpec, sigma: float) -> dict:
    """SmoothGrad's shared noise std, unless the spec chose its own noise scale."""
    return {} if {"noise_scale", "sigma"} & set(spec.params) else {"sigma": sigma}


def input_invariance(
    model: nn.Module,
    data: Dataset,
    methods: Sequence[str] | Mapping[str, dict] | Sequence[MethodSpec],
    shifts: Mapping[str, Tensor],
    *,
    metrics: Sequence[str] = SCORES,
    normalization: str = "abs",
    n_samples: int = 64,
    batch_size: int = 64,
    fit_samples: int = 2000,
    tolerance: float = DEFAULT_TOLERANCE,
    ssim_threshold: float = DEFAULT_SSIM_THRESHOLD,
    premise_rtol: float | None = None,
    float64: bool = True,
    tie_break: bool = True,
    device: str | torch.device = "cpu",
    noise_level: float = 0.15,
    model_name: str = "model",
    seed: int = 0,
    config_hash: str = "",
    keep_maps: int = 4,
    progress: bool = False,
) -> InvarianceResult:
    """Run the input-invariance test of ``methods`` under each shift (``{label: Tensor[C, H, W]}``).

    The first ``n_samples`` test images are explained for their predicted class (the same class for both
    networks: the premise check proves the logits agree). ``float64`` (default) runs copies of the model
    and the data in double precision; ``premise_rtol`` defaults to 1e-10 then, 1e-4 in float32.
    ``tie_break`` (default) swaps the max-pool layers of both networks for :class:`bench.ties.TieStableMaxPool2d`
    (same forward; gradients at ties broken by rounding noise go where they go in the original).
    Returns an :class:`InvarianceResult`.
    Raises :class:`bench.twins.TwinPremiseError` when a twin fails its premise; a method that fails is
    recorded in ``errors`` and the others go on.
    """
    from tqdm.auto import tqdm

    specs = methods if methods and isinstance(next(iter(methods)), MethodSpec) else method_specs(methods)
    dtype = torch.float64 if float64 else torch.float32
    if premise_rtol is None:
        premise_rtol = 1e-10 if float64 else 1e-4
    f1 = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    if tie_break:
        stable_ties(f1)
    x = data.x_test[:n_samples].to(device=device, dtype=dtype)
    with torch.no_grad():
        target = torch.cat([f1(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    x_fit = data.x_train[:fit_samples].to(device=device, dtype=dtype)
    y_fit = data.y_train[:fit_samples].to(device)
    low, high = data.domain
    sigma = noise_level * (high - low)

    frames: list[pd.DataFrame] = []
    result = InvarianceResult(table=pd.DataFrame(), verdicts=pd.DataFrame())
    maps1: dict[str, Tensor] = {}
    total = len(shifts) * len(specs)
    bar = tqdm(total=total, desc="input invariance", disable=not progress, leave=False)
    for shift_label, m in shifts.items():
        m = torch.as_tensor(m).to(device=device, dtype=dtype).expand(x.shape[1:])
        f2 = shifted_twin(f1, m, example=x[:2])
        result.premise[shift_label] = check_twin(f1, f2, x, m, rtol=premise_rtol)
        domain2 = (low + float(m.min()), high + float(m.max()))
        x2 = x + m
        result.inputs[shift_label] = (x[:keep_maps].cpu(), x2[:keep_maps].cpu())
        result.maps[shift_label] = {}
        for spec in specs:
            bar.set_postfix(shift=shift_label, method=spec.label)
            try:
                if spec.label not in maps1:
                    e1 = make_explainer(spec, f1, domain=(low, high), fit_data=fit_loader(x_fit, y_fit),
                                        extra=_noise(spec, sigma))
                    maps1[spec.label] = explain_all(e1, x, target, batch_size)
                e2 = make_explainer(spec, f2, domain=domain2, fit_data=fit_loader(x_fit + m, y_fit),
                                    extra=_noise(spec, sigma))
                a1, a2 = maps1[spec.label], explain_all(e2, x2, target, batch_size)
                scores = score_maps(a1, a2, metrics, normalization=normalization)
                scores["max_rel_diff"] = relative_difference(a1, a2)
            except Exception as err:  # noqa: BLE001  (recorded; the other methods go on)
                result.errors[(spec.label, shift_label)] = f"{type(err).__name__}: {err}"
                bar.update()
                continue
            frames.append(score_rows(scores, experiment="input_invariance", model=model_name, dataset=data.name,
                                     method=spec.label, condition=shift_label, seed=seed, config_hash=config_hash))
            result.maps[shift_label][spec.label] = (a1[:keep_maps].cpu(), a2[:keep_maps].cpu())
            bar.update()
    bar.close()
    result.table = concat(frames)
    result.verdicts = verdicts(result.table, tolerance, ssim_threshold) if len(result.table) else pd.DataFrame()
    return result
