"""Figures as PNG, after the papers' figures: the invariance grids, the randomization grids and the similarity curves.

* :func:`invariance_grid` (Kindermans et al., Figures 2-6): one figure per shift. Rows: the inputs, then one per
  method; a column group per sample: ``x``, ``x + m`` and the shift ``m`` in the input row, the map of f1 on ``x``,
  the map of f2 on ``x + m`` and their difference in the method rows.
* :func:`cascade_grid` (Adebayo et al., the cascading-randomization figure): a block of rows per sample, one row per
  method; columns: the input, the trained model's map, then one per randomization stage, labelled by the model's own
  layer names (:func:`stage_labels`).
* :func:`similarity_curves` (the papers' curves): per metric, the mean similarity of each method's map to the trained
  model's map at every stage, with its 95% bootstrap interval (:mod:`bench.reporting.intervals`); one row of panels
  per method adds the run's controls as horizontal bands (the repeat ceiling, the input-only nulls, the floor of
  another sample's map) and the model's own input gradient at each stage (the verdicts' reference).

How maps are shown (the same functions as the scores' post-processing, :mod:`metrics.normalize`; the figure says
which one it uses): **signed** (the invariance grid) is the channel sum divided by the 99th percentile of its
``|values|`` and clipped to ``[-1, 1]``, each map by its own percentile (red positive, blue negative); the difference
``f2 - f1`` is on f1's scale, and an f2 map whose scale differs from f1's by more than 1% is marked ``x<ratio>``.
**Absolute** (the randomization grid) is ``sum_c |a|`` min-to-99th-percentile scaled and clipped to ``[0, 1]``
(black 0, white 1): what the ``ssim`` score compares. Images are drawn as images, 1-D signals as lines over a
labelled position axis, and vectors (tables) as heat strips with the features' names on the axis.

The adversarial image (Kindermans et al., Figure 6) draws its picture into Gradient x Input of f2 at the sample it was
built at, only where the shift is not clipped, and there about a hundred times weaker than the clipped pixels (the
digit): on any map's own scale it cannot be seen. Given the shift's spec, its figure adds a first column group for that
sample with the maps stretched (1st to 99th percentile, grey) on the unclipped pixels, the clipped ones in orange.

Layout: by hand, in inches, from the texts' measured sizes (:class:`_Sheet`), so that no text overlaps another or a
panel (the tests check it on the rendered figure); the image panels of a grid are painted into one image
(:class:`_Mosaic`): a ResNet's 41 stages x 16 methods x 3 samples draw in seconds.

File names (read back by :func:`bench.reporting.sweep_files.describe_figures`): ``invariance_<shift>.png``,
``randomization_<label>_grid.png``, ``randomization_<label>_curves.png``. This module imports no torch: the maps
are tensors, read through ``.detach().cpu().numpy()``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.core.results import (
    CONTROL_EDGES,
    CONTROL_GRADIENT,
    CONTROL_INPUT,
    CONTROL_OTHER,
    CONTROL_REPEAT,
    CONTROL_RETRAINED,
    is_control,
)
from bench.reporting.intervals import bootstrap_means, percentile_interval

if TYPE_CHECKING:  # the maps are tensors; this module does not import torch itself
    from matplotlib.figure import Figure
    from torch import Tensor

__all__ = ["invariance_grid", "cascade_grid", "similarity_curves", "invariance_figures", "randomization_figures",
           "stage_labels", "signed_map", "absolute_map", "SIGNED_NOTE", "ABSOLUTE_NOTE", "CONTROL_STYLE"]

log = logging.getLogger(__name__)

DPI = 110
#: the percentile that scales a map (the scores' post-processing, :mod:`metrics.normalize`)
PERCENTILE = 99.0
SIGNED_CMAP, ABSOLUTE_CMAP, INPUT_CMAP = "bwr", "gray", "gray"
#: the conventions as the figures name them (images add their colours: :data:`SIGNED_COLOURS`, :data:`ABSOLUTE_COLOURS`)
SIGNED_NOTE = ("signed maps: channel sum / 99th percentile of its |values|, clipped to [-1, 1], each map on its own "
               "scale (the spearman score's post-processing)")
ABSOLUTE_NOTE = ("absolute maps: sum over channels of |a|, scaled from its minimum to its 99th percentile and clipped "
                 "to [0, 1], each map on its own scale (the ssim and spearman_abs scores' post-processing)")
SIGNED_COLOURS, ABSOLUTE_COLOURS = "; red positive, blue negative", "; black 0, white 1"
#: ``layer`` value -> (label, colour, line style) of the controls drawn as horizontal bands, in this order
#: (greys and line styles: the methods' colours stay theirs)
CONTROL_STYLE: dict[str, tuple[str, str, Any]] = {
    CONTROL_REPEAT: ("repeat: a copy of the model (ceiling)", "black", "-"),
    CONTROL_RETRAINED: ("retrained on the true labels (ceiling)", "black", "-."),
    CONTROL_INPUT: ("the input as the map (null)", "0.35", "--"),
    CONTROL_EDGES: ("the input's edges as the map (null)", "0.35", (0, (4, 1, 1, 1, 1, 1))),
    CONTROL_OTHER: ("another sample's map (floor)", "0.35", ":"),
}
#: the model's own input gradient at each stage (``control:gradient/<stage>``), drawn as a curve
REFERENCE_STYLE = ("the model's input gradient (reference)", "0.55", "-")
#: drawn metrics: a distance has no place on a similarity axis shared with the others
_SKIP_METRICS = ("max_rel_diff",)


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI` (parent folders created), close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)
    log.debug("wrote %s", path)
    return path


# ------------------------------------------------------------------------------------------------ maps as arrays


def _np(t: Any) -> np.ndarray:
    """A tensor (any device) or array as float64 NumPy."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _kind(t: Any) -> str:
    """``"image"`` for one ``C x H x W`` sample with ``H, W > 1``, ``"vector"`` for ``F``, else ``"signal"``
    (``C x L``, or an image with a single row or column: drawn as a line)."""
    shape = tuple(t.shape)
    if len(shape) == 3 and shape[-2] > 1 and shape[-1] > 1:
        return "image"
    return "vector" if len(shape) == 1 else "signal"


def _channel_sum(a: np.ndarray, absolute: bool) -> np.ndarray:
    """One sample's map -> ``H x W`` (image) or a flat line (signal, vector): the sum over the channels (of ``|a|``
    when ``absolute``)."""
    a = np.abs(a) if absolute else a
    if a.ndim == 3 and a.shape[-2] > 1 and a.shape[-1] > 1:
        return a.sum(0)
    return (a.sum(0) if a.ndim >= 2 else a).reshape(-1)


def signed_map(a: Any, scale_of: Any = None, percentile: float = PERCENTILE,  # noqa: ANN401
               where: np.ndarray | None = None) -> np.ndarray:
    """``s = sum_c a`` divided by the ``percentile`` of ``|s_ref|`` (``s_ref`` the channel sum of ``scale_of``,
    default ``a`` itself; only its elements where ``where`` holds, when given and not empty) and clipped to
    ``[-1, 1]``: :func:`metrics.normalize` ``"signed"`` for one sample (a zero scale gives ``sign(s)``). ``a``: one
    sample's map (``C x H x W``, ``C x L`` or ``F``)."""
    s = _channel_sum(_np(a), absolute=False)
    ref = s if scale_of is None else _channel_sum(_np(scale_of), absolute=False)
    if where is not None and where.any():
        ref = ref[where]
    den = float(np.percentile(np.abs(ref), percentile)) if ref.size else 0.0
    return np.clip(s / den, -1.0, 1.0) if den > 0 else np.sign(s)


def absolute_map(a: Any, percentile: float = PERCENTILE) -> np.ndarray:
    """``s = sum_c |a|`` scaled from its minimum to its ``percentile`` and clipped to ``[0, 1]``:
    :func:`metrics.normalize` ``"abs"`` for one sample (a zero span gives 1 above the minimum, 0 elsewhere)."""
    s = _channel_sum(_np(a), absolute=True)
    if not s.size:
        return s
    lo = float(s.min())
    den = float(np.percentile(s, percentile)) - lo
    return np.clip((s - lo) / den, 0.0, 1.0) if den > 0 else (s > lo).astype(np.float64)


def _scale(a: Any, percentile: float = PERCENTILE) -> float:
    """The ``percentile`` of ``|sum_c a|``: the scale :func:`signed_map` divides by."""
    s = np.abs(_channel_sum(_np(a), absolute=False))
    return float(np.percentile(s, percentile)) if s.size else 0.0


def _input_image(x: Any) -> np.ndarray:
    """An input sample ``C x H x W`` for ``imshow``, min-max scaled on its own: ``H x W x 3`` for three channels
    (their colours), else ``H x W`` (the channels' mean)."""
    x = _np(x)
    x = (x - x.min()) / (x.max() - x.min() + 1e-12)
    return np.moveaxis(x, 0, -1) if x.shape[0] == 3 else x.mean(0)


def _line(x: Any) -> np.ndarray:
    """An input sample as one line (the channel sum)."""
    return _channel_sum(_np(x), absolute=False)


def _pick(samples: int | Sequence[int], available: int, first: int = 0) -> list[int]:
    """The sample indices to draw: ``samples`` of them from ``first`` on (an int), or the listed ones, each within
    the ``available`` kept samples; at least one (the first kept) when any is kept."""
    if isinstance(samples, int | np.integer):
        idx = list(range(first, min(first + max(int(samples), 1), available)))
    else:
        idx = [int(i) for i in samples if 0 <= int(i) < available]
    return idx or ([0] if available else [])


def _features(names: Sequence[str] | None, n: int) -> list[str]:
    """The ``n`` feature names (``names`` when it has ``n`` of them, else ``feature 0`` ...)."""
    if names is not None and len(names) == n:
        return [str(s) for s in names]
    if names is not None:
        log.warning("%d feature names for %d features: the features are numbered instead", len(names), n)
    return [f"feature {i}" for i in range(n)]


class _Sheet:
    """A figure laid out by hand in inches from its top-left corner: no layout engine (fast with hundreds of
    panels), and every text's place is decided from its measured size, so that no two texts overlap.

    Measure texts first (:meth:`measure`, :meth:`fit`), then :meth:`size` the figure, then place axes and texts
    (:meth:`axes`, :meth:`text`) in inches."""

    def __init__(self) -> None:
        self.fig = _plt().figure(figsize=(8.0, 8.0), dpi=DPI)
        self._renderer = self.fig.canvas.get_renderer()
        self.width = self.height = 8.0

    def measure(self, text: str, fontsize: float, rotation: float = 0.0, weight: str = "normal"
                ) -> tuple[float, float]:
        """``(width, height)`` of ``text`` in inches."""
        if not text:
            return 0.0, 0.0
        t = self.fig.text(0, 0, text, fontsize=fontsize, rotation=rotation, fontweight=weight)
        box = t.get_window_extent(self._renderer)
        t.remove()
        return box.width / self.fig.dpi, box.height / self.fig.dpi

    def fit(self, text: str, width: float, fontsize: float) -> str:
        """``text`` wrapped at its spaces so that each line is at most ``width`` inches wide (a word longer than
        that keeps a line of its own)."""
        lines: list[str] = []
        for paragraph in str(text).split("\n"):
            line = ""
            for word in paragraph.split(" "):
                trial = f"{line} {word}" if line else word
                if line and self.measure(trial, fontsize)[0] > width:
                    lines.append(line)
                    line = word
                else:
                    line = trial
            lines.append(line)
        return "\n".join(lines)

    def size(self, width: float, height: float) -> None:
        self.width, self.height = width, height
        self.fig.set_size_inches(width, height)

    def axes(self, x: float, y: float, w: float, h: float, **kw: Any):  # noqa: ANN201
        """Axes whose top-left corner is ``x`` inches from the left and ``y`` from the top."""
        return self.fig.add_axes((x / self.width, 1 - (y + h) / self.height, w / self.width, h / self.height), **kw)

    def text(self, x: float, y: float, s: str, **kw: Any):  # noqa: ANN201
        """A figure text anchored at ``x`` inches from the left, ``y`` from the top."""
        return self.fig.text(x / self.width, 1 - y / self.height, s, **kw)

    def title(self, s: str, y: float = 0.1, fontsize: float = 11) -> None:
        """The figure's title, centred, its top ``y`` inches below the figure's top."""
        self.fig.suptitle(s, x=0.5, y=1 - y / self.height, va="top", ha="center", fontsize=fontsize)

    def colorbar(self, mappable: Any, y: float, note: str, width: float = 3.6) -> None:  # noqa: ANN401
        """A horizontal colour bar centred ``y`` inches from the top, its convention ``note`` below it."""
        cax = self.axes((self.width - width) / 2, y, width, 0.13)
        cax.set_label("<colorbar>")
        bar = self.fig.colorbar(mappable, cax=cax, orientation="horizontal")
        bar.ax.tick_params(labelsize=7, length=2, pad=1)
        self.text(self.width / 2, y + 0.36, note, ha="center", va="top", fontsize=7)

    def note_height(self, note: str, fontsize: float = 7) -> tuple[str, float]:
        """``note`` wrapped to the sheet's width and the height of a colour bar with it under it."""
        wrapped = self.fit(note, self.width - 0.5, fontsize)
        return wrapped, 0.36 + self.measure(wrapped, fontsize)[1] + 0.12


_TITLE, _GROUP, _COL, _ROW, _NOTE = 11, 9, 7, 8, 7  # font sizes: figure title, group header, column, row, note


class _Mosaic:
    """Image panels painted into one RGBA canvas that a single axes shows: a grid of hundreds of maps draws as
    fast as one image. Panels are placed in the sheet's inches (:class:`_Sheet`), keep their aspect (centred in
    their box), are resampled by nearest neighbour at :data:`DPI` and framed by a one-pixel line."""

    def __init__(self, sheet: _Sheet, x0: float, y0: float, x1: float, y1: float) -> None:
        pad = 2 / DPI  # room for the frames of the panels at the edges
        self.sheet, self.x0, self.y0, self.x1, self.y1 = sheet, x0 - pad, y0 - pad, x1 + pad, y1 + pad
        self.canvas = np.zeros((max(1, round((self.y1 - self.y0) * DPI)), max(1, round((self.x1 - self.x0) * DPI)), 4),
                               dtype=np.uint8)

    def put(self, x: float, y: float, w: float, h: float, rgba: np.ndarray | None) -> None:
        """Paint ``rgba`` (``H x W x 4``, floats in [0, 1]) into the box at ``x, y`` (inches from the sheet's
        top-left) of size ``w x h``; ``None``: leave the box empty (no frame)."""
        if rgba is None:
            return
        rows, cols = rgba.shape[:2]
        bw, bh = round(w * DPI), round(h * DPI)
        s = min(bw / cols, bh / rows)
        dw, dh = max(1, round(cols * s)), max(1, round(rows * s))
        img = (np.clip(rgba, 0, 1) * 255).round().astype(np.uint8)
        img = img[np.minimum(np.arange(dh) * rows // dh, rows - 1)][:, np.minimum(np.arange(dw) * cols // dw,
                                                                                   cols - 1)]
        px = round((x - self.x0) * DPI) + (bw - dw) // 2
        py = round((y - self.y0) * DPI) + (bh - dh) // 2
        height, width = self.canvas.shape[:2]
        px, py = min(max(px, 1), width - dw - 1), min(max(py, 1), height - dh - 1)
        self.canvas[py - 1: py + dh + 1, px - 1: px + dw + 1] = (0, 0, 0, 255)  # the frame
        self.canvas[py: py + dh, px: px + dw] = img

    def show(self) -> None:
        ax = self.sheet.axes(self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0)
        ax.imshow(self.canvas, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        ax.set_gid("mosaic")


def _rgba(values: np.ndarray, cmap: Any, vmin: float, vmax: float) -> np.ndarray:  # noqa: ANN401
    """``values`` (a masked array's masked entries in the colour map's "bad" colour) as RGBA."""
    cmap = _plt().get_cmap(cmap) if isinstance(cmap, str) else cmap
    return cmap((np.ma.asarray(values) - vmin) / (vmax - vmin))


def _input_rgba(x: Any) -> np.ndarray:  # noqa: ANN401
    """An input sample as RGBA, min-max scaled on its own (grey, or its own colours for 3 channels)."""
    img = _input_image(x)
    if img.ndim == 2:
        return _rgba(img, INPUT_CMAP, 0, 1)
    return np.concatenate([img, np.ones(img.shape[:2] + (1,))], axis=-1)


def _mappable(cmap: str, vmin: float, vmax: float):  # noqa: ANN202
    """What a colour bar reads for panels painted into a :class:`_Mosaic`."""
    import matplotlib as mpl

    return mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(vmin, vmax), cmap=cmap)


def _column_title(sheet: _Sheet, x: float, y: float, s: str, rotation: float = 0.0) -> None:
    """A panel's title: centred on ``x``, its bottom just above ``y`` (the panel's top)."""
    sheet.text(x, y - 0.03, s, ha="center", va="bottom", fontsize=_COL, rotation=rotation)


def _scale_mark(sheet: _Sheet, x: float, y: float, a1: Any, a2: Any) -> None:  # noqa: ANN401
    """:func:`_mark_scale` for a mosaic panel whose bottom-right corner is at ``x, y``."""
    s1, s2 = _scale(a1), _scale(a2)
    if s1 > 0 and not 0.99 <= s2 / s1 <= 1.01:
        t = sheet.text(x - 0.03, y - 0.03, f"×{s2 / s1:.2g}", ha="right", va="bottom", fontsize=6,
                       bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "0.6", "lw": 0.4})
        t.set_gid("inside")  # inside its panel, on purpose


def _top(sheet: _Sheet, title: str) -> float:
    """The height the figure's title takes (with its margins)."""
    return 0.1 + sheet.measure(title, _TITLE)[1] + 0.12 if title else 0.1


def _row_label(sheet: _Sheet, x_right: float, y_center: float, s: str) -> None:
    sheet.text(x_right, y_center, s, ha="right", va="center", fontsize=_ROW)


def _bare(ax) -> None:  # noqa: ANN001
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------------------------------------------ stage labels

#: module class -> the short kind a generated layer name starts with (``fc3``, ``conv2``)
_KINDS = {"Linear": "fc", "LazyLinear": "fc", "Bilinear": "fc", "Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv",
          "ConvTranspose1d": "deconv", "ConvTranspose2d": "deconv", "ConvTranspose3d": "deconv",
          "BatchNorm1d": "bn", "BatchNorm2d": "bn", "BatchNorm3d": "bn", "LayerNorm": "ln", "GroupNorm": "gn",
          "InstanceNorm1d": "in", "InstanceNorm2d": "in", "Embedding": "emb", "MultiheadAttention": "attn"}


def _indexed(name: str) -> bool:
    """Whether a module path is made of indices only (``"7"``, ``"1.3"``: an ``nn.Sequential``'s layers)."""
    return bool(name) and all(part.isdigit() for part in name.split("."))


def _layer_names(model: Any) -> dict[str, str]:
    """``{qualified name: layer name}`` for the modules of ``model`` that hold parameters of their own and whose
    path is indices only: the kind of layer and its count among those of its kind, in the model's order
    (``nn.Sequential(Conv2d, ReLU, Conv2d, Flatten, Linear)``: ``0 -> conv1``, ``2 -> conv2``, ``4 -> fc1``)."""
    counts: dict[str, int] = {}
    out: dict[str, str] = {}
    for qual, module in model.named_modules():
        if not _indexed(qual) or not any(True for _ in module.parameters(recurse=False)):
            continue
        cls = type(module).__name__
        kind = _KINDS.get(cls, cls.lower())
        counts[kind] = counts.get(kind, 0) + 1
        out[qual] = f"{kind}{counts[kind]}"
    return out


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
    """``{stage: label}``: short, readable labels of randomization stages, named after the model's own layers.

    A stage is a unit name (:mod:`bench.randomization.units`: the module's qualified name, ``fc3``, ``features.3``,
    ``layer1.0``, names joined by ``+`` for a merged unit) or ``permuted_labels``. With ``model`` (the model the
    stages were cut from: anything with ``named_modules()``):

    * a layer of an ``nn.Sequential``, whose qualified name is a bare index, is named by its kind and its count
      among the layers of that kind, its index after ``sep`` in parentheses: ``"fc4 (7)"`` for the fourth
      ``Linear`` of ``paper_mlp`` (module 7), ``"conv2 (3)"``; merged units join the names (``"conv1+bn1 (0+1)"``);
    * a named module keeps its name (shortened in the middle to ``width`` characters), then ``sep`` and the class of
      its module(s): ``"features.3 Conv2d"``, ``"layer1.0+… Conv2d+BatchNorm2d"`` (at most two classes, then ``…``).

    Without a model, a bare index reads ``"module 7"`` and other names stay as they are (shortened);
    ``permuted_labels`` reads ``"permuted labels"``; a name the model does not have stays as it is."""
    modules: dict[str, Any] = {}
    generated: dict[str, str] = {}
    if model is not None and hasattr(model, "named_modules"):
        modules = dict(model.named_modules())
        generated = _layer_names(model)
    out = {}
    for stage in stages:
        stage = str(stage)
        parts = stage.split("+")
        if generated and all(p in generated for p in parts):
            out[stage] = f"{_shorten('+'.join(generated[p] for p in parts), width)}{sep}({_shorten(stage, width)})"
            continue
        kinds = list(dict.fromkeys(type(modules[p]).__name__ for p in parts if p in modules))
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


# ------------------------------------------------------------------------------------------------ invariance


def _verdict_label(name: str, verdicts: Mapping[str, bool] | None) -> str:
    if verdicts is None or name not in verdicts:
        return name
    return f"{name}\n{'✓ invariant' if verdicts[name] else '✗ not invariant'}"


def _shift_range(m: np.ndarray) -> str:
    lo, hi = float(m.min()), float(m.max())
    return f"in [{lo:.2g}, {hi:.2g}]" if not math.isclose(lo, hi, rel_tol=1e-6, abs_tol=1e-9) else f"= {lo:.2g}"


def _mark_scale(ax, a1: Any, a2: Any, beside: bool = False) -> None:  # noqa: ANN001, ANN401
    """Write f2's scale relative to f1's when they differ by more than 1%: in the corner of f2's panel, or
    ``beside`` a heat strip's middle row (f2's), right of the panel."""
    s1, s2 = _scale(a1), _scale(a2)
    if s1 > 0 and not 0.99 <= s2 / s1 <= 1.01:
        where = {"x": 1.01, "y": 0.5, "ha": "left", "va": "center"} if beside else \
            {"x": 0.97, "y": 0.04, "ha": "right", "va": "bottom"}
        ax.text(s=f"×{s2 / s1:.2g}", transform=ax.transAxes, fontsize=6, clip_on=False, **where,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "0.6", "lw": 0.4})


_INPUT_TITLES = ("x (f1's input)", "x + m (f2's input)")
_MAP_TITLES = ("map of f1 on x", "map of f2 on x + m", "f2 − f1 (f1's scale)")
_INV_NOTE = "; f2 − f1 on f1's scale; ×k: f2's scale / f1's; the inputs min-max scaled, m on its own scale"


def _drawn_mask(m: np.ndarray, clip: float) -> np.ndarray | None:
    """Where an adversarial shift ``m`` (one sample's, channels summed for the mask) stays strictly inside its clip
    range ``[-clip, clip]``: where it draws its picture. ``None`` when it is clipped nowhere or everywhere."""
    inside = np.abs(m) < clip * (1 - 1e-6)
    mask = inside.all(0) if inside.ndim == 3 else inside
    return mask if 0 < mask.sum() < mask.size else None


#: the colour of the pixels where an adversarial shift is clipped, in the view of the picture it draws
CLIPPED_COLOUR = "#f4a460"


def _stretched(a: Any, where: np.ndarray) -> np.ma.MaskedArray:  # noqa: ANN401
    """``s = sum_c a`` where ``where`` holds, scaled from its 1st to its 99th percentile there and clipped to
    [0, 1] (a zero span: 0.5); masked elsewhere."""
    s = _channel_sum(_np(a), absolute=False)
    lo, hi = (float(np.percentile(s[where], q)) for q in (1.0, 99.0))
    out = np.clip((s - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.full(s.shape, 0.5)
    return np.ma.masked_array(out, mask=~where)


def _invariance_images(maps: Mapping[str, tuple[Tensor, Tensor]], x1: Tensor, x2: Tensor, idx: list[int],
                       title: str, verdicts: Mapping[str, bool] | None, kind: str,
                       drawn: tuple[int, float] | None = None) -> Figure:
    """Images (``kind="image"``, painted into one :class:`_Mosaic`) or lines (``"signal"``, an axes each): rows
    inputs + methods, a column group per sample; with ``drawn = (sample, clip)`` (an adversarial image built at
    that sample), a first group shows that sample with the maps stretched on the pixels where the shift is not
    clipped (:func:`_drawn_mask`, :func:`_stretched`)."""
    names = list(maps)
    sheet = _Sheet()
    image = kind == "image"
    pw, ph = (1.1, 1.1) if image else (1.55, 0.85)
    gap, group_gap = (0.08, 0.3) if image else (0.14, 0.35)
    ytick = 0.0 if image else 0.3  # room for the y tick labels left of each line panel
    groups: list[tuple[int, np.ndarray | None]] = [(i, None) for i in idx]
    if drawn is not None and image and 0 <= drawn[0] < min([len(x1), *(len(t[0]) for t in maps.values())]):
        mask = _drawn_mask(_np(x2[drawn[0]]) - _np(x1[drawn[0]]), drawn[1])
        if mask is not None:
            groups.insert(0, (drawn[0], mask))
    shifts = {i: _np(x2[i]) - _np(x1[i]) for i, _ in groups}
    in_titles = {i: [sheet.fit(t, pw + gap - 0.05, _COL) for t in (*_INPUT_TITLES, f"m {_shift_range(shifts[i])}")]
                 for i in shifts}
    map_titles = [sheet.fit(t, pw + gap - 0.05, _COL) for t in _MAP_TITLES]
    in_h = max(sheet.measure(t, _COL)[1] for ts in in_titles.values() for t in ts) + 0.08
    map_h = max(sheet.measure(t, _COL)[1] for t in map_titles) + 0.08
    labels = [_verdict_label(n, verdicts) for n in names]
    label_w = max(sheet.measure(s, _ROW)[0] for s in labels) + 0.2
    col_w = ytick + pw
    group_w = 3 * col_w + 2 * gap
    x0 = 0.15 + label_w
    width = max(x0 + len(groups) * group_w + (len(groups) - 1) * group_gap + (0.2 if image else 0.35), 5.0)
    sheet.size(width, 1.0)
    note = (SIGNED_NOTE + SIGNED_COLOURS + _INV_NOTE if image else
            "lines: " + SIGNED_NOTE + _INV_NOTE.replace("the inputs min-max scaled, m on its own scale",
                                                        "the inputs and m on their own axes"))
    note, note_h = sheet.note_height(note)
    headers = [sheet.fit(f"sample {i}" if mask is None else
                         f"sample {i}, where the shift draws its picture: the maps in grey, each from its 1st to "
                         f"its 99th percentile on the {mask.mean():.0%} of pixels where |m| < {drawn[1]:g} (orange: "
                         "clipped, no picture there)", group_w, _GROUP)
               for i, mask in groups]
    y = _top(sheet, title)
    header_y = y
    y += max(sheet.measure(h, _GROUP)[1] for h in headers) + 0.08 + in_h
    tops = [y]
    y += ph + 0.1 + map_h
    for _ in names:
        tops.append(y)
        y += ph + (0.1 if image else 0.14)
    y += (0.42 if not image else 0.0) + 0.15
    sheet.size(width, y + note_h)
    sheet.title(title)
    mosaic = _Mosaic(sheet, x0, tops[0], width - 0.1, tops[-1] + ph) if image else None
    grey = _plt().get_cmap("gray").with_extremes(bad=CLIPPED_COLOUR)

    def line(x: float, top: float, values: np.ndarray, color: str, bottom: bool, signed: bool):  # noqa: ANN202
        ax = sheet.axes(x, top, pw, ph)
        ax.plot(values, lw=0.8, color=color)
        if signed:
            ax.axhline(0, color="k", lw=0.4)
            ax.set_ylim(-1.08, 1.08)
        else:  # an input or a shift: its own range, a constant one drawn flat (no offset, no magnified rounding)
            lo, hi = float(np.min(values)), float(np.max(values))
            pad = max(0.08 * (hi - lo), 0.05 * max(abs(lo), abs(hi), 1e-12))
            ax.set_ylim(lo - pad, hi + pad)
            ax.ticklabel_format(axis="y", useOffset=False)
        ax.tick_params(labelsize=6, length=2, pad=1, labelbottom=bottom)
        if bottom:
            ax.set_xlabel("position", fontsize=_COL, labelpad=1)
        return ax

    for j, (i, mask) in enumerate(groups):
        gx = x0 + j * (group_w + group_gap)
        sheet.text(gx + group_w / 2, header_y, headers[j], ha="center", va="top", fontsize=_GROUP)
        xs = [gx + c * (col_w + gap) + ytick for c in range(3)]
        a, b, m = x1[i], x2[i], shifts[i]
        for c in range(3):
            if image:
                mosaic.put(xs[c], tops[0], pw, ph, _input_rgba(a if c == 0 else b) if c < 2 else
                           _rgba(signed_map(m, percentile=100.0), SIGNED_CMAP, -1, 1))
            else:
                line(xs[c], tops[0], _line(a if c == 0 else b if c == 1 else m), "k", False, False)
            _column_title(sheet, xs[c] + pw / 2, tops[0], in_titles[i][c])
        for row, name in enumerate(names, start=1):
            t1, t2 = (t[i] for t in maps[name])
            diff = signed_map(_np(t2) - _np(t1), scale_of=t1)
            for c in range(3):
                if not image:
                    line(xs[c], tops[row], (signed_map(t1), signed_map(t2), diff)[c], ("C0", "C1", "C3")[c],
                         row == len(names), True)
                elif mask is not None and c < 2:  # the adversarial image's own view: its picture is weak
                    mosaic.put(xs[c], tops[row], pw, ph, _rgba(_stretched((t1, t2)[c], mask), grey, 0, 1))
                else:
                    mosaic.put(xs[c], tops[row], pw, ph,
                               _rgba((signed_map(t1), signed_map(t2), diff)[c], SIGNED_CMAP, -1, 1))
                if row == 1:
                    _column_title(sheet, xs[c] + pw / 2, tops[row], map_titles[c])
            if mask is None:
                _scale_mark(sheet, xs[1] + pw, tops[row] + ph, t1, t2)
            if j == 0:
                _row_label(sheet, x0 - 0.1, tops[row] + ph / 2, labels[row - 1])
    if mosaic is not None:
        mosaic.show()
        sheet.colorbar(_mappable(SIGNED_CMAP, -1, 1), y, note)
    else:
        sheet.text(width / 2, y, note, ha="center", va="top", fontsize=_NOTE)
    return sheet.fig


def _strip(ax, rows: Sequence[tuple[np.ndarray, str]], ylabels: Sequence[str] | None):  # noqa: ANN001, ANN202
    """A heat strip: one row per ``(values, cmap)`` (values in [-1, 1] for the signed colour map, [0, 1]
    otherwise; NaN blank); returns the last signed (else last) image drawn."""
    shown = None
    for r, (values, cmap) in enumerate(rows):
        lim = (-1, 1) if cmap == SIGNED_CMAP else (0, 1)
        im = ax.imshow(values[None], cmap=cmap, vmin=lim[0], vmax=lim[1], aspect="auto", interpolation="nearest",
                       extent=(-0.5, len(values) - 0.5, r + 0.5, r - 0.5))
        shown = im if cmap == SIGNED_CMAP or shown is None else shown
    ax.set_xlim(-0.5, len(rows[0][0]) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(ylabels or [], fontsize=6)
    ax.tick_params(length=1.5, pad=1)
    if not ylabels:
        ax.tick_params(left=False)
    return shown


def _unit(x: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] (an input row of a heat strip)."""
    return (x - x.min()) / (x.max() - x.min() + 1e-12)


def _strip_sheet(sheet: _Sheet, n_features: int, n_cols: int, tick_labels: Sequence[str], row_labels: Sequence[str],
                 feats: Sequence[str]) -> tuple[float, float, float, float, float]:
    """Horizontal geometry of a heat-strip grid: ``(x0, panel width, gap, feature-label height, tick-label
    width)``; sizes the sheet's width (a row label ends ``tick-label width + 0.05`` left of ``x0``)."""
    pw = max(2.4, 0.12 * n_features)
    gap = 0.4  # room for the scale marks right of a strip (:func:`_mark_scale`)
    tick_w = max((sheet.measure(t, 6)[0] for t in tick_labels), default=0.0) + 0.06
    label_w = max(sheet.measure(s, _ROW)[0] for s in row_labels) + 0.15
    x0 = 0.15 + label_w + tick_w
    sheet.size(max(x0 + n_cols * pw + (n_cols - 1) * gap + 0.45, 5.0), 1.0)
    feat_h = max(sheet.measure(f, 6, rotation=90)[1] for f in feats) + 0.08
    return x0, pw, gap, feat_h, tick_w


def _feature_axis(ax, feats: Sequence[str]) -> None:  # noqa: ANN001
    ax.set_xticks(range(len(feats)))
    ax.set_xticklabels(feats, rotation=90, fontsize=6)
    ax.tick_params(axis="x", length=1.5, pad=1)


def _invariance_vectors(maps: Mapping[str, tuple[Tensor, Tensor]], x1: Tensor, x2: Tensor, idx: list[int],
                        title: str, verdicts: Mapping[str, bool] | None, feature_names: Sequence[str] | None
                        ) -> Figure:
    """Vectors (tables): rows inputs + methods, a column per sample, each panel a heat strip over the features."""
    names = list(maps)
    n = len(_np(x1[idx[0]]).reshape(-1))
    feats = _features(feature_names, n)
    sheet = _Sheet()
    labels = [_verdict_label(nm, verdicts) for nm in names]
    x0, pw, gap, feat_h, tick_w = _strip_sheet(sheet, n, len(idx), ["x + m", "f2 − f1"], labels, feats)
    strip = 0.17
    head_h = max(sheet.measure(f"sample {i}: m {_shift_range(_np(x2[i]) - _np(x1[i]))}", _COL)[1] for i in idx)
    note, note_h = sheet.note_height(SIGNED_NOTE + SIGNED_COLOURS + _INV_NOTE)
    y = _top(sheet, title) + head_h + 0.06
    tops = []
    for k in range(len(names) + 1):
        tops.append(y)
        y += 3 * strip + (0.2 if k == 0 else 0.12)
    y += feat_h + 0.2
    sheet.size(sheet.width, y + note_h)
    sheet.title(title)
    shown = None
    for j, i in enumerate(idx):
        x = x0 + j * (pw + gap)
        a, b = _np(x1[i]).reshape(-1), _np(x2[i]).reshape(-1)
        ax = sheet.axes(x, tops[0], pw, 3 * strip)
        _strip(ax, [(_unit(a), INPUT_CMAP), (_unit(b), INPUT_CMAP), (signed_map(b - a, percentile=100.0),
                                                                    SIGNED_CMAP)],
               ["x", "x + m", "m"] if j == 0 else None)
        ax.set_title(f"sample {i}: m {_shift_range(b - a)}", fontsize=_COL, pad=2)
        ax.set_xticks([])
        for row, name in enumerate(names, start=1):
            t1, t2 = (t[i] for t in maps[name])
            ax = sheet.axes(x, tops[row], pw, 3 * strip)
            shown = _strip(ax, [(signed_map(t1), SIGNED_CMAP), (signed_map(t2), SIGNED_CMAP),
                                (signed_map(_np(t2) - _np(t1), scale_of=t1), SIGNED_CMAP)],
                           ["f1", "f2", "f2 − f1"] if j == 0 else None)
            _mark_scale(ax, t1, t2, beside=True)
            if row < len(names):
                ax.set_xticks([])
            else:
                _feature_axis(ax, feats)
            if j == 0:
                _row_label(sheet, x0 - tick_w - 0.05, tops[row] + 1.5 * strip, labels[row - 1])
    sheet.colorbar(shown, y, note)
    return sheet.fig


def _invariance_figure(maps: Mapping[str, tuple[Tensor, Tensor]], inputs: tuple[Tensor, Tensor], *,
                       title: str = "", samples: int | Sequence[int] = 3, verdicts: Mapping[str, bool] | None = None,
                       feature_names: Sequence[str] | None = None, drawn: tuple[int, float] | None = None) -> Figure:
    """The figure of :func:`invariance_grid`, not saved."""
    if not maps:
        raise ValueError("invariance_grid: no maps to draw")
    x1, x2 = inputs
    idx = _pick(samples, min([len(x1), *(len(t[0]) for t in maps.values())]))
    if not idx:
        raise ValueError("invariance_grid: no samples kept (run.keep_maps = 0)")
    kind = _kind(x1[idx[0]])
    if kind == "vector":
        return _invariance_vectors(maps, x1, x2, idx, title, verdicts, feature_names)
    return _invariance_images(maps, x1, x2, idx, title, verdicts, kind, drawn)


def invariance_grid(
    maps: Mapping[str, tuple[Tensor, Tensor]],
    inputs: tuple[Tensor, Tensor],
    path: str | os.PathLike,
    *,
    title: str = "",
    samples: int | Sequence[int] = 3,
    verdicts: Mapping[str, bool] | None = None,
    feature_names: Sequence[str] | None = None,
    drawn: tuple[int, float] | None = None,
) -> Path:
    """The input-invariance grid of one shift (the layout of Kindermans et al.'s Figures 2-6), written to ``path``.

    ``maps``: ``{method: (maps of f1 on x, maps of f2 on x + m)}``, each ``B x ...``; ``inputs``: ``(x, x + m)``.
    Rows: the inputs (``x``, ``x + m``, and the shift ``m`` on its own colour scale, so that a drawn picture such as
    the adversarial image's reads), then one per method, labelled with its verdict when ``verdicts``
    (``{method: invariant}``) names it. A column group per sample (``samples``: how many from the first, or which;
    at most the kept ones): the map of f1 on ``x``, the map of f2 on ``x + m`` and ``f2 - f1``. Maps are signed
    (:data:`SIGNED_NOTE`; the note under the colour bar says so); images are drawn as images, signals as lines over
    a labelled position axis, vectors (tables) as heat strips with the ``feature_names`` on the axis (numbered when
    not given). The layout is made by hand from the texts' measured sizes: no title overlaps another text.

    ``drawn = (sample, clip)``: the shift is an adversarial image built at that kept sample and clipped to
    ``[-clip, clip]`` (:func:`bench.twins.shifts.adversarial_image`). Its picture appears in the maps of f2 there
    only where the shift is not clipped, far weaker than where it is (the digit, about 100 times on the bundled
    MLP), so a first column group shows that sample with every map scaled on the unclipped pixels: the picture
    reads in Gradient x Input and its kin, not in an invariant method's map. Raises ``ValueError`` with no maps or
    no kept sample."""
    fig = _invariance_figure(maps, inputs, title=title, samples=samples, verdicts=verdicts,
                             feature_names=feature_names, drawn=drawn)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------ randomization


def _map_values(a: Any, signed: bool) -> np.ndarray:  # noqa: ANN401
    return signed_map(a) if signed else absolute_map(a)


def _sample_header(i: int, targets: Any) -> str:  # noqa: ANN401
    return f"sample {i}" + ("" if targets is None else f" (explained class {int(targets[i])})")


def _cascade_images(maps: Mapping[str, Sequence[Tensor]], titles: list[str], inputs: Tensor, idx: list[int],
                    title: str, targets: Any, kind: str, signed: bool) -> Figure:  # noqa: ANN401
    """Images (painted into one :class:`_Mosaic`) or lines (an axes each): a block of rows per sample (one row per
    method); columns input, trained, stages."""
    names = list(maps)
    sheet = _Sheet()
    image = kind == "image"
    cols = len(titles)
    if image:
        pw = ph = float(np.clip(20.0 / cols, 0.55, 1.1))
        gap, ytick = 0.06, 0.0
    else:
        pw, ph = float(np.clip(26.0 / cols, 0.8, 1.5)), 0.8
        gap, ytick = 0.1, 0.3  # y tick labels left of the trained column only
    # column titles: as given (two lines) when they fit a panel's width, else one vertical line
    upright = all(sheet.measure(t, _COL)[0] <= pw + gap - 0.04 for t in titles)
    titles = titles if upright else [t.replace("\n", " ") for t in titles]
    rotation = 0.0 if upright else 90.0
    title_h = max(sheet.measure(t, _COL, rotation=rotation)[1] for t in titles) + 0.08
    label_w = max(sheet.measure(n, _ROW)[0] for n in names) + 0.2
    x0 = 0.15 + label_w
    xs = [x0 + c * (pw + gap) + (ytick if c >= 1 else 0.0) for c in range(cols)]
    width = max(xs[-1] + pw + (0.2 if image else 0.35), 5.0)
    sheet.size(width, 1.0)
    note = (SIGNED_NOTE + SIGNED_COLOURS * image if signed else ABSOLUTE_NOTE + ABSOLUTE_COLOURS * image)
    note, note_h = sheet.note_height(note + "; the input min-max scaled")
    head_h = sheet.measure(_sample_header(idx[0], targets), _GROUP)[1] + 0.08
    y = _top(sheet, title)
    blocks = []
    for k in range(len(idx)):
        header = y
        y += head_h + (title_h if k == 0 else 0.0)
        tops = []
        for _ in names:
            tops.append(y)
            y += ph + (0.06 if image else 0.1)
        blocks.append((header, tops))
        y += 0.14
    y += 0.0 if image else 0.4
    sheet.size(width, y + note_h)
    sheet.title(title)
    mosaic = _Mosaic(sheet, x0, blocks[0][1][0], xs[-1] + pw + 0.05, blocks[-1][1][-1] + ph) if image else None
    cmap, lo = (SIGNED_CMAP, -1.0) if signed else (ABSOLUTE_CMAP, 0.0)
    for c, label in enumerate(titles):
        _column_title(sheet, xs[c] + pw / 2, blocks[0][1][0], label, rotation)
    for k, (i, (header, tops)) in enumerate(zip(idx, blocks, strict=True)):
        sheet.text((x0 + xs[-1] + pw) / 2, header, _sample_header(i, targets), ha="center", va="top",
                   fontsize=_GROUP)
        for row, name in enumerate(names):
            panels = maps[name]
            last = k == len(idx) - 1 and row == len(names) - 1
            for c in range(cols):
                values = None if c == 0 or c - 1 >= len(panels) else _map_values(panels[c - 1][i], signed)
                if image:  # a method that failed at a stage: the later boxes stay empty
                    mosaic.put(xs[c], tops[row], pw, ph, _input_rgba(inputs[i]) if c == 0 else
                               None if values is None else _rgba(values, cmap, lo, 1.0))
                    continue
                ax = sheet.axes(xs[c], tops[row], pw, ph)
                if c == 0:
                    ax.plot(_line(inputs[i]), lw=0.8, color="k")
                    _bare(ax)
                elif values is None:
                    ax.set_axis_off()
                else:
                    ax.plot(values, lw=0.8, color="C0")
                    ax.set_ylim(lo - 0.08 if signed else -0.04, 1.08)
                    ax.tick_params(labelsize=5, length=1.5, pad=1, labelleft=c == 1, labelbottom=last)
                    if last and c == 1:
                        ax.set_xlabel("position", fontsize=_COL, labelpad=1)
            _row_label(sheet, x0 - 0.1, tops[row] + ph / 2, name)
    if mosaic is not None:
        mosaic.show()
        sheet.colorbar(_mappable(cmap, lo, 1.0), y, note)
    else:
        sheet.text(width / 2, y, "lines: " + note, ha="center", va="top", fontsize=_NOTE)
    return sheet.fig


def _cascade_vectors(maps: Mapping[str, Sequence[Tensor]], titles: list[str], inputs: Tensor, idx: list[int],
                     title: str, targets: Any, signed: bool, feature_names: Sequence[str] | None  # noqa: ANN401
                     ) -> Figure:
    """Vectors (tables): rows input + methods, a column per sample; each method's panel a heat strip with one row
    per model (the trained one, then each stage) over the features."""
    names = list(maps)
    n = len(_np(inputs[idx[0]]).reshape(-1))
    feats = _features(feature_names, n)
    sheet = _Sheet()
    ylabels = [t.replace("\n", " ") for t in titles[1:]]
    x0, pw, gap, feat_h, tick_w = _strip_sheet(sheet, n, len(idx), ["input", *ylabels], names, feats)
    strip = 0.16
    note, note_h = sheet.note_height((SIGNED_NOTE + SIGNED_COLOURS if signed else ABSOLUTE_NOTE + ABSOLUTE_COLOURS) +
                                     "; a row per model: the trained one, then each stage; the input min-max scaled")
    head_h = max(sheet.measure(_sample_header(i, targets), _COL)[1] for i in idx) + 0.06
    y = _top(sheet, title) + head_h
    tops = [y]
    y += strip + 0.15
    for _ in names:
        tops.append(y)
        y += len(ylabels) * strip + 0.12
    y += feat_h + 0.2
    sheet.size(sheet.width, y + note_h)
    sheet.title(title)
    cmap = SIGNED_CMAP if signed else ABSOLUTE_CMAP
    shown = None
    for j, i in enumerate(idx):
        x = x0 + j * (pw + gap)
        ax = sheet.axes(x, tops[0], pw, strip)
        _strip(ax, [(_unit(_np(inputs[i]).reshape(-1)), INPUT_CMAP)], ["input"] if j == 0 else None)
        ax.set_title(_sample_header(i, targets), fontsize=_COL, pad=2)
        ax.set_xticks([])
        for row, name in enumerate(names, start=1):
            panels = maps[name]
            rows = [(_map_values(p[i], signed), cmap) for p in panels]
            rows += [(np.full(n, np.nan), cmap)] * (len(ylabels) - len(rows))  # failed at a stage: blank rows
            ax = sheet.axes(x, tops[row], pw, len(ylabels) * strip)
            _strip(ax, rows, ylabels if j == 0 else None)
            shown = ax.images[0]
            if row < len(names):
                ax.set_xticks([])
            else:
                _feature_axis(ax, feats)
            if j == 0:
                _row_label(sheet, x0 - tick_w - 0.05, tops[row] + len(ylabels) * strip / 2, name)
    sheet.colorbar(shown, y, note)
    return sheet.fig


def _cascade_figure(maps: Mapping[str, Sequence[Tensor]], stages: Sequence[str], inputs: Tensor, *, title: str = "",
                    samples: int | Sequence[int] = 1, labels: Mapping[str, str] | None = None, targets: Any = None,
                    signed: bool = False, feature_names: Sequence[str] | None = None, first: int = 0) -> Figure:
    """The figure of :func:`cascade_grid`, not saved."""
    maps = {k: v for k, v in maps.items() if len(v)}
    if not maps:
        raise ValueError("cascade_grid: no maps to draw")
    stages = list(stages[1:]) if list(stages[:1]) == ["trained"] else list(stages)
    shown = {**stage_labels(stages, sep="\n"), **(labels or {})}
    titles = ["input", "trained", *(shown.get(s, s) for s in stages)]
    idx = _pick(samples, min([len(inputs), *(len(p[0]) for p in maps.values())]), first)
    if not idx:
        raise ValueError("cascade_grid: no samples kept (run.keep_maps = 0)")
    kind = _kind(inputs[idx[0]])
    if kind == "vector":
        return _cascade_vectors(maps, titles, inputs, idx, title, targets, signed, feature_names)
    return _cascade_images(maps, titles, inputs, idx, title, targets, kind, signed)


def cascade_grid(
    maps: Mapping[str, Sequence[Tensor]],
    stages: Sequence[str],
    inputs: Tensor,
    path: str | os.PathLike,
    *,
    title: str = "",
    sample: int = 0,
    samples: int | Sequence[int] = 1,
    labels: Mapping[str, str] | None = None,
    targets: Any = None,  # noqa: ANN401
    signed: bool = False,
    feature_names: Sequence[str] | None = None,
) -> Path:
    """The randomization grid (the sanity-checks paper's cascade figure), written to ``path``.

    ``maps``: ``{method: [trained model's maps, stage 1's maps, ...]}`` (each ``B x ...``; a method that failed at a
    stage has fewer, and its later panels stay empty); ``stages``: the stage names
    (``RandomizationResult.stages``; a leading ``"trained"`` is accepted and not repeated); ``inputs``: the
    samples. A block of rows per sample (``samples`` of them from ``sample`` on, or the listed indices; at most the
    kept ones), headed by the sample and, with ``targets``, its explained class; one row per method; columns: the
    input, the trained model's map, then each stage, titled ``labels[stage]`` (default :func:`stage_labels`
    without a model; one vertical line when a title is wider than a panel). Maps are absolute
    (:data:`ABSOLUTE_NOTE`: what SSIM compares), or signed with ``signed``; the note under the colour bar names the
    convention. Signals are lines over a labelled position axis; vectors (tables) a heat strip per method (a row
    per model, the ``feature_names`` on the axis)."""
    fig = _cascade_figure(maps, stages, inputs, title=title, samples=samples, labels=labels, targets=targets,
                          signed=signed, feature_names=feature_names, first=sample)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------ curves


def _cells(table: pd.DataFrame, grouped: bool) -> pd.DataFrame:
    """``mean``, ``lo``, ``hi``: the mean and the 95% bootstrap interval of the mean of every ``(method, layer)``
    cell of ``table`` (one metric, one condition), indexed by ``(method, layer)``: the samples resampled alike for
    every cell (:func:`bench.reporting.intervals.bootstrap_means`), hierarchically over the re-initialization
    seeds when ``grouped``. NaN scores do not count."""
    if not len(table):
        return pd.DataFrame({"mean": [], "lo": [], "hi": []},
                            index=pd.MultiIndex.from_tuples([], names=["method", "layer"]))
    index = ["seed", "sample"] if grouped else ["sample"]
    wide = table.pivot_table(index=index, columns=["method", "layer"], values="score", aggfunc="mean", dropna=False)
    values = wide.to_numpy(dtype=np.float64)
    lo, hi = percentile_interval(bootstrap_means(values, wide.index.get_level_values("seed") if grouped else None))
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, values, 0.0).sum(0) / ok.sum(0)
    return pd.DataFrame({"mean": mean, "lo": lo, "hi": hi}, index=wide.columns)


def _per_stage(layer: str) -> bool:
    """Rows drawn as a curve over the stages: the stages and the reference's stages (``control:gradient/<stage>``),
    which carry the re-initialization seeds; the controls proper are drawn as bands."""
    prefix = CONTROL_GRADIENT + "/"
    return not is_control(layer) or (layer.startswith(prefix) and not is_control(layer[len(prefix):]))


def _higher_is_similar(metric: str) -> bool | None:
    from bench.core.scores import get_score

    try:
        return get_score(metric).higher_is_similar
    except ValueError:  # a score registered in another process (a plugin): no direction known here
        return None


def _method_style(i: int) -> dict[str, Any]:
    """The ``i``-th method's colour, line style and marker, the same in every panel: the 9 dark hues of ``tab20``
    that are not grey (grey is the reference's and the controls'), then their light shades, then again with
    dashed lines and other markers."""
    palette = _plt().get_cmap("tab20")
    hues = [2 * h for h in range(10) if h != 7] + [2 * h + 1 for h in range(10) if h != 7]
    return {"color": palette(hues[i % len(hues)]), "ls": "-" if i < len(hues) else "--",
            "marker": "os^Dv"[i // len(hues) % 5]}


#: at most this many stage names under a curve; more are thinned to every k-th
MAX_TICK_LABELS = 24


def _stage_ticks(stages: Sequence[str], shown: Mapping[str, str]) -> list[str]:
    step = max(1, math.ceil(len(stages) / MAX_TICK_LABELS))
    return [shown.get(s, s) if k % step == 0 else "" for k, s in enumerate(stages)]


def _curve_figure(table: pd.DataFrame, *, title: str = "", labels: Mapping[str, str] | None = None,
                  stages: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                  controls: Sequence[str] | None = None) -> Figure:
    """The figure of :func:`similarity_curves`, not saved."""
    controls = list(CONTROL_STYLE) if controls is None else list(controls)
    staged = table.layer.map(_per_stage)
    rows_c, rows_r = table[~staged], table[staged & table.layer.map(is_control)]
    rows_s = table[~table.layer.map(is_control)]
    present = [m for m in dict.fromkeys(rows_s.metric) if m not in _SKIP_METRICS]
    metrics = [m for m in (metrics or present) if m in present]
    if not metrics:
        raise ValueError("similarity_curves: the table holds no similarity scores")
    conditions = list(dict.fromkeys(rows_s.condition))
    methods = list(dict.fromkeys(rows_s.method))
    style = {m: _method_style(i) for i, m in enumerate(methods)}
    orders = {}
    for cond in conditions:
        listed = list(dict.fromkeys(rows_s.loc[rows_s.condition == cond, "layer"]))
        orders[cond] = [s for s in (stages or []) if s in set(listed)] + [s for s in listed if s not in (stages or [])]
    shown = {**stage_labels([s for o in orders.values() for s in o]), **(labels or {})}

    sheet = _Sheet()
    pw, ph, ytick, gap = 2.3, 1.3, 0.38, 0.12
    head = {m: sheet.measure(m, _GROUP)[1] for m in metrics}
    row_title_h = sheet.measure("gradient", _ROW, weight="bold")[1] + 0.05
    tick_h = {c: max(sheet.measure(t, 6, rotation=90)[1] for t in _stage_ticks(o, shown) + ["x"])
              for c, o in orders.items()}
    legend_entries = [*methods, REFERENCE_STYLE[0], *(CONTROL_STYLE.get(c, (c,))[0] for c in controls)]
    legend_w = max(sheet.measure(e, 7)[0] for e in legend_entries) + 0.6
    x0 = 0.45 + ytick
    xs = [x0 + k * (pw + gap + ytick) for k in range(len(metrics))]
    width = xs[-1] + pw + 0.25 + legend_w
    sheet.size(width, 1.0)
    y = _top(sheet, title)
    layout = []  # (condition, header y, [(row label, top)], bottom tick y)
    for cond in conditions:
        cond_y = y
        if len(conditions) > 1:
            y += sheet.measure(cond, _GROUP, weight="bold")[1] + 0.1
        head_y = y
        y += max(head.values()) + 0.08
        tops = []
        for r in range(1 + len(methods)):
            y += row_title_h
            tops.append(y)
            y += ph + (0.12 if r < len(methods) else 0.04)
        y += tick_h[cond] + 0.15
        layout.append((cond, cond_y, head_y, tops))
    xlabel_y = y
    y += sheet.measure("stage", 8)[1] + 0.15
    sheet.size(width, y)
    sheet.title(title)
    sheet.text((x0 + xs[-1] + pw) / 2, xlabel_y, "randomization stage, in the order randomized", ha="center",
               va="top", fontsize=8)
    handles: dict[str, Any] = {}
    for cond, cond_y, head_y, tops in layout:
        order = orders[cond]
        xs_stage = np.arange(len(order))
        if len(conditions) > 1:
            sheet.text(0.15, cond_y, cond, ha="left", va="top", fontsize=_GROUP, fontweight="bold")
        s_c, k_c, r_c = (t[t.condition == cond] for t in (rows_s, rows_c, rows_r))
        ylabel = sheet.fit("mean similarity to the trained model's map (95% bootstrap interval)",
                           tops[-1] + ph - tops[0], 8)
        sheet.text(0.12, (tops[0] + tops[-1] + ph) / 2, ylabel, rotation=90, ha="left", va="center", fontsize=8)
        for col, metric in enumerate(metrics):
            sheet.text(xs[col] + pw / 2, head_y, metric, ha="center", va="top", fontsize=_GROUP)
            stats = _cells(pd.concat([s_c[s_c.metric == metric], r_c[r_c.metric == metric]]), grouped=True)
            ctrl = _cells(k_c[k_c.metric == metric], grouped=False)
            axes = [sheet.axes(xs[col], top, pw, ph) for top in tops]
            for r, method in enumerate(methods, start=1):
                ax = axes[r]
                cell = stats.reindex([(method, s) for s in order])
                if cell["mean"].isna().all():
                    ax.text(0.5, 0.5, "no scores", transform=ax.transAxes, ha="center", va="center", fontsize=7)
                for target, alpha in ((axes[0], 0.08), (ax, 0.22)):
                    (line,) = target.plot(xs_stage, cell["mean"].to_numpy(), ms=2.5, lw=1.1, **style[method])
                    target.fill_between(xs_stage, cell["lo"].to_numpy(), cell["hi"].to_numpy(), alpha=alpha, lw=0,
                                        color=style[method]["color"])
                handles.setdefault(method, line)
                ref = stats.reindex([(method, f"{CONTROL_GRADIENT}/{s}") for s in order])
                if ref["mean"].notna().any():
                    name, color, ls = REFERENCE_STYLE
                    (h,) = ax.plot(xs_stage, ref["mean"].to_numpy(), color=color, ls=ls, lw=0.9, marker="x", ms=3)
                    ax.fill_between(xs_stage, ref["lo"].to_numpy(), ref["hi"].to_numpy(), color=color, alpha=0.12,
                                    lw=0)
                    handles.setdefault(name, h)
                for layer in controls:
                    if (method, layer) not in ctrl.index or np.isnan(ctrl.loc[(method, layer), "mean"]):
                        continue
                    name, color, ls = CONTROL_STYLE.get(layer, (layer, "0.5", "--"))
                    mean, lo, hi = ctrl.loc[(method, layer), ["mean", "lo", "hi"]]
                    ax.axhspan(lo, hi, color=color, alpha=0.13, lw=0)
                    handles.setdefault(name, ax.axhline(mean, color=color, ls=ls, lw=0.9))
            direction = _higher_is_similar(metric)
            lows, highs = [a.get_ylim()[0] for a in axes], [a.get_ylim()[1] for a in axes]
            lim = (min(-0.05, *lows), 1.05) if direction else (min(lows), max(highs))
            for r, ax in enumerate(axes):
                ax.set_ylim(*lim)
                ax.set_xlim(-0.4, len(order) - 0.6)
                ax.axhline(0, color="k", lw=0.4)
                ax.grid(axis="y", lw=0.3, alpha=0.5)
                ax.tick_params(labelsize=6, length=2, pad=1)
                ax.set_xticks(xs_stage)
                if r == len(axes) - 1:
                    ax.set_xticklabels(_stage_ticks(order, shown), rotation=90, fontsize=6)
                else:
                    ax.tick_params(labelbottom=False)
                if col == 0:
                    ax.set_title("all methods" if r == 0 else methods[r - 1], loc="left", fontsize=_ROW,
                                 fontweight="bold", pad=2)
    keys = [m for m in methods if m in handles] + [k for k in handles if k not in methods]  # methods first
    legend = sheet.fig.legend([handles[k] for k in keys], keys,
                              loc="upper left", bbox_to_anchor=((xs[-1] + pw + 0.2) / width, 1 - layout[0][2] / y),
                              fontsize=7, frameon=False, title="methods; controls (band: 95% interval)",
                              title_fontsize=7, alignment="left")
    legend.set_in_layout(False)
    return sheet.fig


def similarity_curves(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "",
                      labels: Mapping[str, str] | None = None, stages: Sequence[str] | None = None,
                      metrics: Sequence[str] | None = None, controls: Sequence[str] | None = None) -> Path:
    """The randomization curves (the papers' similarity-per-stage plots), written to ``path``.

    ``table``: a randomization run's rows (the results table's contract; one model). A column per metric (every
    similarity score present, or ``metrics``; ``max_rel_diff`` is left out). Per condition, a first row with every
    method (the mean at each stage and its 95% bootstrap interval over samples, hierarchical over the
    re-initialization seeds: :mod:`bench.reporting.intervals`, as the leaderboard's), then a row per method with
    its curve and interval, the model's own input gradient at each stage (the ``control:gradient/<stage>`` rows:
    the verdicts' reference) and the run's controls (``controls``, default those of :data:`CONTROL_STYLE` that have
    rows: repeat, retrained, input, edges, other) as horizontal bands (the 95% interval of the mean, a line at the
    mean). Stages in the order of ``stages`` (default: as the rows list them), ticked ``labels[stage]`` (default
    :func:`stage_labels` without a model; at most :data:`MAX_TICK_LABELS` names, every k-th beyond). Raises
    ``ValueError`` when there is no similarity score to draw."""
    fig = _curve_figure(table, title=title, labels=labels, stages=stages, metrics=metrics, controls=controls)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------ a job's figures


def invariance_figures(result: Any, verdicts: pd.DataFrame, folder: str | os.PathLike, *, title: str = "",  # noqa: ANN401
                       samples: int = 3, feature_names: Sequence[str] | None = None,
                       shifts: Mapping[str, Any] | None = None) -> list[Path]:
    """One :func:`invariance_grid` per shift of an :class:`~bench.experiments.invariance.InvarianceResult`
    (``invariance_<shift>.png`` in ``folder``), the methods marked by ``verdicts``
    (:func:`bench.reporting.aggregate.invariance_verdicts`), ``samples`` samples each (at most the kept maps),
    ``feature_names`` on the axis of a table's figures. ``shifts``: the shifts' specs by name
    (:class:`~bench.twins.shifts.ShiftSpec`, the job's ``transform`` config): an ``adversarial_image`` shift gets the
    view of the sample it was built at (``invariance_grid(drawn=(spec.sample, spec.clip))``; the sample index is the
    test split's, the same as the kept maps' when the result is the first chunk's). Returns the written paths."""
    ok = {(r.method, r.condition): bool(r.invariant) for r in verdicts.itertuples()}
    paths = []
    for shift, maps in result.maps.items():
        spec = (shifts or {}).get(shift)
        kind = str(getattr(spec, "kind", ""))
        drawn = (int(spec.sample), float(spec.clip)) if kind == "adversarial_image" else None
        if maps:
            paths.append(invariance_grid(
                maps, result.inputs[shift], Path(folder) / f"invariance_{shift}.png",
                title=f"{title}: input invariance, {shift}" if title else f"input invariance, {shift}",
                samples=samples, verdicts={m: ok[(m, shift)] for m in maps if (m, shift) in ok},
                feature_names=feature_names, drawn=drawn))
    return paths


def randomization_figures(result: Any, folder: str | os.PathLike, *, label: str | None = None, title: str = "",  # noqa: ANN401
                          sample: int = 0, model: Any = None, samples: int = 3,  # noqa: ANN401
                          feature_names: Sequence[str] | None = None, signed: bool = False) -> list[Path]:
    """The randomization grid (``randomization_<label>_grid.png``) and the similarity curves
    (``randomization_<label>_curves.png``) of a :class:`~bench.experiments.model_randomization.RandomizationResult`
    in ``folder``; ``label`` defaults to the mode. The grid shows ``samples`` samples from ``sample`` on (at most
    the kept maps) with their explained classes, absolute maps (``signed`` for signed ones). Stages are labelled by
    the model's own layer names when ``model`` (the trained model the stages were cut from) is given
    (:func:`stage_labels`: ``"fc2 (9)"``, ``"features.3 Conv2d"``). ``feature_names``: a table's features.
    Returns the written paths."""
    label = label or result.mode
    title = title or f"model randomization: {label}"
    folder = Path(folder)
    table = result.table
    stages = [s for s in dict.fromkeys([*result.stages, *(table["layer"] if len(table) else [])]) if not is_control(s)]
    paths = []
    if result.inputs is not None and any(len(p) for p in result.maps.values()):
        paths.append(cascade_grid(result.maps, result.stages, result.inputs, folder / f"randomization_{label}_grid.png",
                                  title=f"{title}: maps", sample=sample, samples=samples,
                                  labels=stage_labels(stages, model, sep="\n"),
                                  targets=getattr(result, "targets", None), signed=signed,
                                  feature_names=feature_names))
    if len(table):
        paths.append(similarity_curves(table, folder / f"randomization_{label}_curves.png",
                                       title=f"{title}: similarity to the trained model's map",
                                       labels=stage_labels(stages, model), stages=result.stages))
    return paths
