"""Figures as PNG: the invariance grids (the paper's Figures 2-6), the cascade grid and the similarity curves.

Maps are shown as their sum over channels with a diverging colormap, each panel scaled by the largest
``|value|`` of the trained / original map of its row, so that a change of scale stays visible.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.core.results import CONTROL_REPEAT, is_control

if TYPE_CHECKING:  # the maps are tensors; this module does not import torch itself
    from torch import Tensor

__all__ = ["invariance_grid", "cascade_grid", "similarity_curves", "invariance_figures", "randomization_figures",
           "stage_labels"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, title: str, fontsize: int, **savefig) -> Path:  # noqa: ANN001
    """Title, tight layout, PNG at 110 dpi (parent folders created), figure closed; returns the path."""
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, **savefig)
    _plt().close(fig)
    return path


def _heat(a: Tensor) -> np.ndarray:
    """``C x H x W`` map -> ``H x W`` channel sum."""
    return a.detach().double().sum(0).cpu().numpy()


def _is_image(t: Tensor) -> bool:
    """One sample ``C x H x W`` with ``H, W > 1``; signals ``C x L`` and vectors ``F`` are drawn as lines."""
    return t.dim() == 3 and t.shape[-2] > 1 and t.shape[-1] > 1


def _line(a: Tensor) -> np.ndarray:
    """A signal ``C x L`` or vector ``F`` as one line (channel sum)."""
    a = a.detach().double().cpu()
    return (a.sum(0) if a.dim() >= 2 else a).reshape(-1).numpy()


def _panel(ax, a: Tensor, *, cmap: str, scale: float | None = None, image: bool = True) -> None:  # noqa: ANN001
    """Draw one map or input: an image, or a line for signals and vectors."""
    if image:
        kw = {"vmin": -scale, "vmax": scale} if scale is not None else {}
        ax.imshow(_heat(a) if a.dim() == 3 and cmap != "gray" else _img(a), cmap=cmap, **kw)
    else:
        ax.plot(_line(a), lw=0.8)
        ax.axhline(0, color="k", lw=0.4)


def _img(x: Tensor) -> np.ndarray:
    x = x.detach().double().cpu()
    x = (x - x.min()) / (x.max() - x.min() + 1e-12)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def _shorten(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: as it is when it fits; a merged unit (``a+b+c``) as its first and
    last names (``conv_head+…+classifier``) or its first name (``features.0+…``); a module path by its last
    components (``…blocks.11.attn.qkv``); else cut in the middle."""
    if len(name) <= width:
        return name
    if "+" in name:
        parts = name.split("+")
        for short in (f"{parts[0]}+…+{parts[-1]}", f"{parts[0]}+…"):
            if len(short) <= width:
                return short
        return _shorten(parts[0], width - 2) + "+…"
    if "." in name:
        tail = name.split(".")
        while len(tail) > 1 and len("…" + ".".join(tail)) > width:
            tail = tail[1:]
        short = "…" + ".".join(tail)
        if len(short) <= width:
            return short
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def stage_labels(stages: Sequence[str], model: Any = None, *, sep: str = " ", width: int = 18) -> dict[str, str]:
    """``{stage: label}``: short, readable labels of randomization stages. A stage is a unit name
    (:mod:`bench.randomization.units`: the module's qualified name, ``fc3``, ``features.3``, ``layer1.0``, or names
    joined by ``+`` for merged units) or ``permuted_labels``. The label is the name, shortened in the middle to
    ``width`` characters, then ``sep`` and the class of its module(s) (``Linear``, ``Conv2d+BatchNorm2d``) when
    ``model`` (the model the stages were cut from: anything with ``named_modules()``) is given; ``"7 Linear"`` for
    the last layer of an ``nn.Sequential`` MLP. Without a model, a bare ``nn.Sequential`` index reads
    ``"module 7"``; other names stay as they are; ``permuted_labels`` reads ``"permuted labels"``."""
    modules: dict[str, Any] = {}
    if model is not None and hasattr(model, "named_modules"):
        modules = dict(model.named_modules())
    out = {}
    for stage in stages:
        stage = str(stage)
        kinds = list(dict.fromkeys(type(modules[p]).__name__ for p in stage.split("+") if p in modules))
        if len(kinds) > 2:
            kinds = [kinds[0], "…"]
        name = _shorten(stage, width)
        if kinds:
            out[stage] = f"{name}{sep}{'+'.join(kinds)}"
        elif stage.isdigit():
            out[stage] = f"module {stage}"
        else:
            out[stage] = stage.replace("_", " ") if stage == "permuted_labels" else name
    return out


def invariance_grid(
    maps: Mapping[str, tuple[Tensor, Tensor]],
    inputs: tuple[Tensor, Tensor],
    path: str | os.PathLike,
    *,
    title: str = "",
    sample: int = 0,
    verdicts: Mapping[str, bool] | None = None,
) -> Path:
    """Rows = methods; columns = map on (f1, x), map on (f2, x + m), difference. The first row shows x, x + m."""
    plt = _plt()
    names = list(maps)
    fig, axes = plt.subplots(len(names) + 1, 3, figsize=(6.3, 2.1 * (len(names) + 1)), squeeze=False)
    x1, x2 = inputs
    image = _is_image(x1[sample])
    if image:
        axes[0, 0].imshow(_img(x1[sample]), cmap="gray")
        axes[0, 1].imshow(_img(x2[sample]), cmap="gray")
        axes[0, 2].imshow(_heat(x2[sample] - x1[sample]), cmap="coolwarm")
    else:  # signals and vectors: lines
        for col, t in enumerate((x1[sample], x2[sample], x2[sample] - x1[sample])):
            _panel(axes[0, col], t, cmap="", image=False)
    for col, label in enumerate(("x (f1)", "x' (f2)", "x' - x")):
        axes[0, col].set_title(label, fontsize=8)
    for row, name in enumerate(names, start=1):
        t1, t2 = (t[sample] for t in maps[name])
        for col, (panel, label) in enumerate([(t1, "f1"), (t2, "f2"), (t2 - t1, "f2 - f1")]):
            if image:
                a1 = _heat(t1)
                scale = max(np.abs(a1).max(), 1e-12)
                axes[row, col].imshow(_heat(panel), cmap="seismic", vmin=-scale, vmax=scale)
            else:
                _panel(axes[row, col], panel, cmap="", image=False)
                if col == 2:  # the difference on the scale of the map itself
                    axes[row, col].set_ylim(axes[row, 0].get_ylim())
            axes[row, col].set_title(label, fontsize=8)
        verdict = "" if verdicts is None or name not in verdicts else (" ✓" if verdicts[name] else " ✗")
        axes[row, 0].set_ylabel(name + verdict, fontsize=8, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path, title, fontsize=10)


def cascade_grid(
    maps: Mapping[str, Sequence[Tensor]],
    stages: Sequence[str],
    inputs: Tensor,
    path: str | os.PathLike,
    *,
    title: str = "",
    sample: int = 0,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Rows = methods; columns = the input, the trained model's map (``maps[name][0]``), then each stage
    (``maps[name][k]`` for ``stages[k - 1]``), ``|map|`` scaled per panel as the paper shows them. ``stages``:
    the stage names (``RandomizationResult.stages``); a leading ``"trained"`` label is accepted and not
    repeated. Column titles: ``labels[stage]`` (default :func:`stage_labels` without a model, two lines).
    A method with fewer maps (it failed at a stage) leaves the later panels empty."""
    plt = _plt()
    names = list(maps)
    if not names:
        raise ValueError("cascade_grid: no maps to draw")
    stages = list(stages[1:]) if list(stages[:1]) == ["trained"] else list(stages)
    shown = {**stage_labels(stages, sep="\n"), **(labels or {})}
    titles = ["input", "trained", *(shown[s] for s in stages)]
    cols = len(titles)
    fig, axes = plt.subplots(len(names), cols, figsize=(1.3 * cols + 1, 1.4 * len(names) + 0.6), squeeze=False)
    for row, name in enumerate(names):
        panels = maps[name]
        for col in range(cols):
            ax = axes[row, col]
            image = _is_image(inputs[sample])
            if col == 0:
                _panel(ax, inputs[sample], cmap="gray", image=image) if image else _panel(ax, inputs[sample], cmap="",
                                                                                         image=False)
            elif col - 1 < len(panels) and image:
                a = _heat(panels[col - 1][sample])
                ax.imshow(np.abs(a) / max(np.abs(a).max(), 1e-12), cmap="gray", vmin=0, vmax=1)
            elif col - 1 < len(panels):
                a = np.abs(_line(panels[col - 1][sample]))
                ax.plot(a / max(a.max(), 1e-12), lw=0.8)
            else:
                ax.set_axis_off()
            if row == 0:
                ax.set_title(titles[col], fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    return _save(fig, path, title, fontsize=9)


def similarity_curves(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "",
                      labels: Mapping[str, str] | None = None) -> Path:
    """Mean similarity to the trained map per stage, per method, with a 95% band (normal approximation over
    samples); the method's repeatability control (``control:repeat``) as a dotted line in its colour: one panel per
    metric, one row per condition (each condition has its own stage order). One model per table. Stage tick labels:
    ``labels[stage]`` (default :func:`stage_labels` without a model)."""
    plt = _plt()
    controls = table[table.layer.map(is_control)]
    table = table[~table.layer.map(is_control)]
    metrics = [m for m in table.metric.unique() if m != "max_rel_diff"]
    if not metrics:
        raise ValueError("similarity_curves: the table holds no similarity scores")
    conditions = list(dict.fromkeys(table.condition))
    palette = plt.get_cmap("tab20")  # one colour (and line style past 20) per method, the same in every panel:
    # the 10 dark hues first, then their light pairs (tab20 lists each hue's dark and light shade side by side)
    style = {m: dict(color=palette((2 * i) % 20 + (i % 20) // 10), ls="-" if i < 20 else "--",
                     marker="os^Dv"[i // 20 % 5])
             for i, m in enumerate(dict.fromkeys(table.method))}
    fig, axes = plt.subplots(len(conditions), len(metrics), figsize=(3.2 * len(metrics), 3.2 * len(conditions)),
                             squeeze=False)
    for r, cond in enumerate(conditions):
        sub_c = table[table.condition == cond]
        stages = list(dict.fromkeys(sub_c.layer))
        xs = np.arange(len(stages))
        for ax, metric in zip(axes[r], metrics, strict=True):
            sub = sub_c[sub_c.metric == metric]
            for method, grp in sub.groupby("method", sort=False):
                stats = grp.groupby("layer")["score"].agg(["mean", "std", "count"]).reindex(stages)
                half = 1.96 * stats["std"].fillna(0) / np.sqrt(stats["count"].clip(lower=1))
                ax.plot(xs, stats["mean"], ms=3, label=method, **style[method])
                ax.fill_between(xs, stats["mean"] - half, stats["mean"] + half, alpha=0.15,
                                color=style[method]["color"])
                rep = controls[(controls.condition == cond) & (controls.metric == metric) &
                               (controls.method == method) & (controls.layer == CONTROL_REPEAT)].score.mean()
                if not np.isnan(rep):
                    ax.axhline(rep, color=style[method]["color"], ls=":", lw=0.8)
            shown = {**stage_labels(stages), **(labels or {})}
            ax.set_xticks(xs)
            ax.set_xticklabels([shown[s] for s in stages], rotation=45, ha="right", fontsize=7)
            ax.set_title(metric if len(conditions) == 1 else f"{metric} ({cond})", fontsize=9)
            ax.set_ylim(min(-0.2, ax.get_ylim()[0]), 1.05)
            ax.axhline(0, color="k", lw=0.5)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))  # outside the panels
    return _save(fig, path, title, fontsize=9, bbox_inches="tight")


def invariance_figures(result: Any, verdicts: pd.DataFrame, folder: str | os.PathLike, *,
                       title: str = "") -> list[Path]:
    """One :func:`invariance_grid` per shift of an :class:`~bench.experiments.invariance.InvarianceResult`
    (``invariance_<shift>.png`` in ``folder``), the methods marked by ``verdicts``
    (:func:`bench.reporting.aggregate.invariance_verdicts`); returns the written paths."""
    ok = {(r.method, r.condition): bool(r.invariant) for r in verdicts.itertuples()}
    paths = []
    for shift, maps in result.maps.items():
        if maps:
            paths.append(invariance_grid(maps, result.inputs[shift], Path(folder) / f"invariance_{shift}.png",
                                         title=f"{title}: {shift}" if title else shift,
                                         verdicts={m: ok[(m, shift)] for m in maps if (m, shift) in ok}))
    return paths


def randomization_figures(result: Any, folder: str | os.PathLike, *, label: str | None = None, title: str = "",
                          sample: int = 0, model: Any = None) -> list[Path]:
    """The cascade grid (``randomization_<label>_grid.png``; a method that failed at a stage leaves the later
    panels empty) and the similarity curves (``randomization_<label>_curves.png``) of a
    :class:`~bench.experiments.model_randomization.RandomizationResult` in ``folder``; ``label`` defaults to the
    mode. Stages are labelled by their unit names and, when ``model`` (the trained model the stages were cut
    from) is given, their modules' classes (:func:`stage_labels`: ``"fc3 Linear"``, ``"features.3 Conv2d"``).
    Returns the written paths."""
    label = label or result.mode
    title = title or f"model randomization: {label}"
    folder = Path(folder)
    stages = list(dict.fromkeys([*result.stages, *(result.table["layer"] if len(result.table) else [])]))
    paths = []
    if result.maps and result.inputs is not None:
        paths.append(cascade_grid(result.maps, result.stages, result.inputs, folder / f"randomization_{label}_grid.png",
                                  title=title, sample=sample, labels=stage_labels(stages, model, sep="\n")))
    if len(result.table):
        paths.append(similarity_curves(result.table, folder / f"randomization_{label}_curves.png", title=title,
                                       labels=stage_labels(stages, model)))
    return paths
