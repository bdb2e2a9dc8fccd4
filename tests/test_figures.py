"""The figures (bench.reporting.figures): no text overlaps another or a drawn panel at the sizes produced, the
maps are drawn with the scores' post-processing, stages carry the model's layer names, the curves' intervals are
the project's bootstrap, the adversarial image's picture can be seen, tables get their feature names."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from bench.core.results import (
    CONTROL_GRADIENT,
    CONTROL_INPUT,
    CONTROL_OTHER,
    CONTROL_REPEAT,
    concat,
    score_rows,
)
from bench.reporting import figures as F
from bench.reporting.intervals import bootstrap_means, percentile_interval
from bench.reporting.sweep_files import _parse_figure_name

matplotlib.use("Agg")

LONG = "integrated_gradients_black"  # the longest built-in label: row labels must make room for it


def _names(n: int) -> list[str]:
    return [LONG if k == 1 else f"method_{k}" for k in range(n)]


def _inv_maps(n: int, shape: tuple[int, ...] = (1, 10, 10), b: int = 3) -> dict:
    g = torch.Generator().manual_seed(n)
    return {name: (torch.randn(b, *shape, generator=g), torch.randn(b, *shape, generator=g)) for name in _names(n)}


def _inputs(shape: tuple[int, ...] = (1, 10, 10), b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(b, *shape, generator=torch.Generator().manual_seed(1))
    return x, x - 1


# ------------------------------------------------------------------------------------------------ no overlaps


def _texts(fig) -> list[tuple[str, object]]:  # noqa: ANN001
    """Every visible, non-empty text of ``fig`` that sits outside the panels: the title, the figure's texts, each
    axes' titles, labels and tick labels, the legends."""
    out = []
    if fig._suptitle is not None and fig._suptitle.get_text():
        out.append(("suptitle", fig._suptitle))
    out += [(f"text {t.get_text()[:30]!r}", t) for t in fig.texts
            if t.get_text() and t.get_gid() != "inside" and t is not fig._suptitle]
    for k, ax in enumerate(fig.axes):
        for name in ("title", "_left_title", "_right_title"):
            t = getattr(ax, name)
            if t.get_text():
                out.append((f"axes {k} {name} {t.get_text()[:30]!r}", t))
        if not ax.axison:  # its axis labels and ticks are not drawn
            continue
        for t in (ax.xaxis.label, ax.yaxis.label, ax.xaxis.offsetText, ax.yaxis.offsetText):
            if t.get_visible() and t.get_text():
                out.append((f"axes {k} label {t.get_text()[:30]!r}", t))
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks():
                for t in (tick.label1, tick.label2):  # drawn: visible, not empty, inside the view
                    if t.get_visible() and t.get_text() and lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                        out.append((f"axes {k} tick {t.get_text()[:20]!r}", t))
    out += [(f"legend {k}", leg) for k, leg in enumerate(fig.legends)]
    return out


def _overlap(a, b) -> bool:  # noqa: ANN001
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w > 1 and h > 1  # more than a pixel each way


def _painted(fig, ax, box) -> bool:  # noqa: ANN001
    """Whether a mosaic axes has a painted (opaque) pixel under ``box`` (display coordinates)."""
    canvas = ax.images[0].get_array()
    rows, cols = canvas.shape[:2]
    p = ax.bbox
    c0, c1 = (np.array([box.x0, box.x1]) - p.x0) / p.width * cols
    r0, r1 = (p.y1 - np.array([box.y1, box.y0])) / p.height * rows
    c0, c1, r0, r1 = (int(np.clip(v, 0, lim)) for v, lim in ((c0, cols), (c1, cols), (r0, rows), (r1, rows)))
    return bool((canvas[r0:r1, c0:c1, 3] > 0).any())


def assert_no_overlap(fig) -> None:  # noqa: ANN001
    """No two texts overlap; no text lies on a panel (an axes, or a mosaic's painted pixels) or off the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [(name, t.get_window_extent(renderer)) for name, t in _texts(fig)]
    assert texts
    page = fig.bbox
    for name, box in texts:
        assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1, \
            f"{name} leaves the figure: {box} vs {page}"
    for (n1, b1), (n2, b2) in itertools.combinations(texts, 2):
        assert not _overlap(b1, b2), f"{n1} overlaps {n2}"
    for k, ax in enumerate(fig.axes):
        for name, box in texts:
            if ax.get_gid() == "mosaic":
                assert not _painted(fig, ax, box), f"{name} lies on a painted panel"
            elif name.startswith(f"axes {k} ") or not ax.axison and not ax.images and not ax.lines:
                continue  # its own labels; an empty (switched-off) box
            else:
                assert not _overlap(ax.bbox, box), f"{name} overlaps axes {k}"


@pytest.mark.parametrize("n", [1, 3, 16])
def test_invariance_grid_texts_never_overlap(n):
    samples = 1 if n == 16 else 3
    verdicts = {m: k % 2 == 0 for k, m in enumerate(_names(n))}
    fig = F._invariance_figure(_inv_maps(n), _inputs(), title="small_cnn: input invariance, mean_shift",
                               samples=samples, verdicts=verdicts)
    assert_no_overlap(fig)
    headers = [t.get_text() for t in fig.texts if t.get_text().startswith("sample")]
    assert headers == [f"sample {i}" for i in range(samples)]
    assert any(" ".join(t.get_text().split()).startswith(F.SIGNED_NOTE) for t in fig.texts)  # the convention
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize("n, stages", [(1, 3), (3, 3), (16, 3), (3, 30)])
def test_randomization_grid_texts_never_overlap(n, stages):
    names = [f"layer{k // 4}.{k % 4}.conv{k % 3}" for k in range(stages)]  # 30: vertical column titles
    g = torch.Generator().manual_seed(0)
    maps = {m: [torch.randn(3, 1, 8, 8, generator=g) for _ in range(stages + 1)] for m in _names(n)}
    fig = F._cascade_figure(maps, names, torch.rand(3, 1, 8, 8), title="resnet: cascading: maps", samples=3,
                            targets=torch.tensor([3, 1, 4]))
    assert_no_overlap(fig)
    texts = [t.get_text() for t in fig.texts]
    assert [t for t in texts if t.startswith("sample")] == ["sample 0 (explained class 3)",
                                                            "sample 1 (explained class 1)",
                                                            "sample 2 (explained class 4)"]
    assert any(" ".join(t.split()).startswith(F.ABSOLUTE_NOTE) for t in texts)
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    matplotlib.pyplot.close(fig)


def _curve_table(methods: list[str], stages: list[str], seeds: int = 2, n: int = 12, metrics=("ssim", "spearman"),
                 ) -> pd.DataFrame:
    """A randomization run's rows: every stage (and the reference's) per seed, falling with the stage; the
    repeat, input and other controls at about 1, 0.4 and 0.1."""
    rng = np.random.default_rng(0)
    frames = []
    for method, metric in itertools.product(methods, metrics):
        common = dict(experiment="model_randomization", model="m", dataset="d", method=method,
                      condition="cascading", mode="cascading")
        for seed in range(seeds):
            for k, stage in enumerate(stages):
                for layer in (stage, f"{CONTROL_GRADIENT}/{stage}"):
                    values = torch.tensor(rng.uniform(0, 1 - k / len(stages), n))
                    frames.append(score_rows({metric: values}, layer=layer, seed=seed, **common))
        for layer, value in ((CONTROL_REPEAT, 1.0), (CONTROL_INPUT, 0.4), (CONTROL_OTHER, 0.1)):
            frames.append(score_rows({metric: torch.tensor(value + rng.normal(0, 0.02, n))}, layer=layer, **common))
    return concat(frames)


@pytest.mark.parametrize("n", [1, 3, 16])
def test_similarity_curves_texts_never_overlap(n):
    stages = ["fc3", "fc2", "fc1"]
    table = _curve_table(_names(n), stages, metrics=("ssim",) if n == 16 else ("ssim", "spearman"))
    fig = F._curve_figure(table, title="small_cnn: cascading: similarity to the trained model's map",
                          labels=F.stage_labels(stages), stages=stages)
    assert_no_overlap(fig)
    matplotlib.pyplot.close(fig)


# ------------------------------------------------------------------------------------------------ the maps' scales


def test_the_maps_are_drawn_as_the_scores_see_them():
    from metrics import normalize

    a = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    a[1] = 0.0  # a zero map: the zero-scale limit
    for k in range(2):
        np.testing.assert_allclose(F.signed_map(a[k]), normalize(a[k:k + 1], "signed")[0].numpy(), atol=1e-12)
        np.testing.assert_allclose(F.absolute_map(a[k]), normalize(a[k:k + 1], "abs")[0].numpy(), atol=1e-12)
    sparse = torch.zeros(1, 1, 20, 20, dtype=torch.float64)
    sparse[0, 0, 3, 4] = 2.0  # fewer than 1% nonzero: kept as 1, as the scores keep it
    np.testing.assert_allclose(F.absolute_map(sparse[0]), normalize(sparse, "abs")[0].numpy())


# ------------------------------------------------------------------------------------------------ stage labels


def test_stages_are_named_after_the_models_layers():
    from bench.core.models import create_model
    from bench.randomization.units import units

    cnn = create_model("small_cnn", (1, 28, 28), 10)
    stages = [u.name for u in units(cnn, "module", example=torch.rand(1, 1, 28, 28))][::-1]  # as a cascade lists them
    assert stages == ["9", "7", "3", "0"]
    assert F.stage_labels(stages, cnn) == {"9": "fc2 (9)", "7": "fc1 (7)", "3": "conv2 (3)", "0": "conv1 (0)"}
    mlp = create_model("paper_mlp", (1, 28, 28), 10)
    assert F.stage_labels(["7", "1"], mlp, sep="\n") == {"7": "fc4\n(7)", "1": "fc1\n(1)"}
    assert F.stage_labels(["0+1"], torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))) == \
        {"0+1": "conv1+bn1 (0+1)"}
    maps = {"gradient": [torch.rand(1, 1, 28, 28) for _ in range(5)]}
    fig = F._cascade_figure(maps, stages, torch.rand(1, 1, 28, 28), labels=F.stage_labels(stages, cnn, sep="\n"))
    titles = [t.get_text() for t in fig.texts]
    assert {"input", "trained", "fc2\n(9)", "fc1\n(7)", "conv2\n(3)", "conv1\n(0)"} <= set(titles)
    assert not any("Linear" in t or "module" in t for t in titles)
    matplotlib.pyplot.close(fig)


# ------------------------------------------------------------------------------------------------ curves


def test_curve_bands_are_the_projects_bootstrap():
    stages = ["c", "b", "a"]
    table = _curve_table(["gradient"], stages, seeds=2, metrics=("ssim",))
    cells = F._cells(table[table.layer.isin(stages)], grouped=True)
    g = table[table.layer == "b"].sort_values(["seed", "sample"])
    lo, hi = percentile_interval(bootstrap_means(g.score.to_numpy()[:, None], g.seed.to_numpy()))
    assert cells.loc[("gradient", "b"), "mean"] == pytest.approx(g.score.mean())
    assert (cells.loc[("gradient", "b"), "lo"], cells.loc[("gradient", "b"), "hi"]) == pytest.approx((lo[0], hi[0]))


def test_curves_show_the_controls_the_reference_and_the_stage_order():
    stages = ["fc3", "fc2", "fc1"]
    table = _curve_table(["gradient", "guided_backprop"], stages[::-1], metrics=("ssim", "max_rel_diff"))
    fig = F._curve_figure(table, labels=F.stage_labels(stages), stages=stages)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["gradient", "guided_backprop"]
    for layer in (CONTROL_REPEAT, CONTROL_INPUT, CONTROL_OTHER):
        assert F.CONTROL_STYLE[layer][0] in legend
    assert F.REFERENCE_STYLE[0] in legend
    heads = [t.get_text() for t in fig.texts]
    assert "ssim" in heads and "max_rel_diff" not in heads  # a distance is not on a similarity axis
    # a method's panel: its repeat control as a horizontal line at its mean, the stages in the given order
    panel = next(ax for ax in fig.axes if ax.get_title(loc="left") == "guided_backprop")
    flat = [ln.get_ydata() for ln in panel.lines if len(set(np.atleast_1d(ln.get_ydata()))) == 1]
    repeat = table[(table.method == "guided_backprop") & (table.layer == CONTROL_REPEAT) & (table.metric == "ssim")]
    repeat = repeat.score.mean()
    assert any(np.isclose(y[0], repeat) for y in flat)
    bottom = min(fig.axes, key=lambda ax: ax.get_position().y0)
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["fc3", "fc2", "fc1"]
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="no similarity scores"):
        F._curve_figure(table[table.metric == "max_rel_diff"])


# ------------------------------------------------------------------------------------------------ adversarial image


def _adversarial(clip: float = 0.3):
    """A digit-like x_hat, a gradient, and the shift that draws a picture into Gradient x Input of the twin at
    x_hat, built like bench.twins.shifts.adversarial_image (picture at clip x the 5th percentile of |g|)."""
    rng = np.random.default_rng(0)
    g = rng.normal(size=(1, 16, 16))
    x_hat = np.zeros((1, 16, 16))
    x_hat[0, 3:13, 6:10] = 1.0
    picture = rng.uniform(0.2, 1.0, size=(1, 16, 16))
    s = picture / picture.max() * clip * np.quantile(np.abs(g), 0.05)
    m = np.clip(s / g - x_hat, -clip, clip)
    return g, x_hat, m, picture


def test_the_adversarial_picture_is_visible_where_the_shift_draws_it(monkeypatch):
    g, x_hat, m, picture = _adversarial()
    f2 = g * (x_hat + m)  # Gradient x Input of the twin at x_hat + m
    mask = F._drawn_mask(m, 0.3)
    np.testing.assert_array_equal(mask, np.abs(m[0]) < 0.3 * (1 - 1e-6))
    shown = F._stretched(f2, mask)
    assert spearmanr(shown[mask], picture[0][mask])[0] > 0.99  # the picture, as drawn
    assert shown[mask].std() > 0.2  # and with contrast
    assert F.signed_map(f2)[mask].std() < 0.05  # on the map's own scale it is invisible: why the view exists
    maps = {"gradient_x_input": (torch.tensor(g * x_hat)[None], torch.tensor(f2)[None])}
    inputs = (torch.tensor(x_hat)[None], torch.tensor(x_hat + m)[None])
    stretched, real = [], F._stretched

    def spy(a, where):  # noqa: ANN001, ANN202
        stretched.append(where)
        return real(a, where)

    monkeypatch.setattr(F, "_stretched", spy)
    fig = F._invariance_figure(maps, inputs, samples=1, drawn=(0, 0.3))
    assert len(stretched) == 2 and all(np.array_equal(w, mask) for w in stretched)  # f1's and f2's maps there
    assert_no_overlap(fig)
    assert any("where the shift draws its picture" in t.get_text() for t in fig.texts)
    plain = F._invariance_figure(maps, inputs, samples=1)
    assert not any("draws its picture" in t.get_text() for t in plain.texts)
    matplotlib.pyplot.close("all")


def test_invariance_figures_give_the_adversarial_shift_its_view(tmp_path, monkeypatch):
    from bench.twins.shifts import ShiftSpec

    g, x_hat, m, _ = _adversarial()
    maps = {"gradient_x_input": (torch.tensor(g * x_hat)[None], torch.tensor(g * (x_hat + m))[None])}
    inputs = (torch.tensor(x_hat)[None], torch.tensor(x_hat + m)[None])
    result = SimpleNamespace(maps={"adv": maps, "mean_shift": maps}, inputs={"adv": inputs, "mean_shift": inputs})
    verdicts = pd.DataFrame({"method": ["gradient_x_input"] * 2, "condition": ["adv", "mean_shift"],
                             "invariant": [False, False]})
    drawn = {}
    real = F.invariance_grid
    monkeypatch.setattr(F, "invariance_grid", lambda maps, inputs, path, **kw: drawn.setdefault(path.stem, kw) and
                        real(maps, inputs, path, **kw))
    paths = F.invariance_figures(result, verdicts, tmp_path, title="paper_mlp", samples=2,
                                 shifts={"adv": ShiftSpec(kind="adversarial_image", clip=0.3, sample=0),
                                         "mean_shift": ShiftSpec(kind="mean_shift")})
    assert [p.name for p in paths] == ["invariance_adv.png", "invariance_mean_shift.png"]
    assert drawn["invariance_adv"]["drawn"] == (0, 0.3) and drawn["invariance_mean_shift"]["drawn"] is None
    assert all(_parse_figure_name(p.stem)[0] == "invariance" for p in paths)


# ------------------------------------------------------------------------------------------------ tables, signals


FEATURES = [f"feature name {k}" for k in range(12)]


def test_tables_are_heat_strips_with_feature_names():
    maps = _inv_maps(3, shape=(12,))
    fig = F._invariance_figure(maps, _inputs((12,)), samples=2, feature_names=FEATURES,
                               verdicts={m: True for m in maps})
    assert_no_overlap(fig)
    bottom = min(fig.axes, key=lambda ax: ax.get_position().y0 if ax.get_label() != "<colorbar>" else 2)
    assert [t.get_text() for t in bottom.get_xticklabels()] == FEATURES
    matplotlib.pyplot.close(fig)
    cmaps = {m: [torch.rand(2, 12) for _ in range(4)] for m in _names(3)}
    fig = F._cascade_figure(cmaps, ["fc3", "fc2", "fc1"], torch.rand(2, 12), samples=2, feature_names=FEATURES)
    assert_no_overlap(fig)
    ticks = {t.get_text() for ax in fig.axes for t in ax.get_xticklabels()}
    assert set(FEATURES) <= ticks
    assert {"trained", "fc3", "fc1"} <= {t.get_text() for ax in fig.axes for t in ax.get_yticklabels()}
    matplotlib.pyplot.close(fig)


def test_wrong_feature_names_are_numbered(caplog):
    fig = F._invariance_figure(_inv_maps(1, shape=(12,)), _inputs((12,)), samples=1, feature_names=["a", "b"])
    assert "feature 11" in {t.get_text() for ax in fig.axes for t in ax.get_xticklabels()}
    assert "2 feature names for 12 features" in caplog.text
    matplotlib.pyplot.close(fig)


def test_signals_are_lines_over_a_labelled_position_axis():
    x = torch.rand(2, 1, 40, dtype=torch.float64)
    shifted = x - 1 + 1e-9 * torch.randn(2, 1, 40, dtype=torch.float64)  # a constant shift, up to rounding
    fig = F._invariance_figure(_inv_maps(3, shape=(1, 40)), (x, shifted), samples=2)
    assert_no_overlap(fig)
    assert "position" in {ax.get_xlabel() for ax in fig.axes}
    assert all(ax.lines for ax in fig.axes)
    matplotlib.pyplot.close(fig)
    cmaps = {m: [torch.rand(2, 1, 40) for _ in range(4)] for m in _names(3)}
    fig = F._cascade_figure(cmaps, ["c", "b", "a"], torch.rand(2, 1, 40), samples=2)
    assert_no_overlap(fig)
    assert "position" in {ax.get_xlabel() for ax in fig.axes}
    matplotlib.pyplot.close(fig)


# ------------------------------------------------------------------------------------------------ a job's files


def test_randomization_figures_write_the_parsed_names(tmp_path):
    stages = ["3", "1"]
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    result = SimpleNamespace(mode="cascading", stages=stages, maps={"gradient": [torch.rand(4, 1, 6, 6)] * 3},
                             inputs=torch.rand(4, 1, 6, 6), targets=torch.tensor([0, 1, 0, 1]),
                             table=_curve_table(["gradient"], stages, metrics=("ssim",)))
    paths = F.randomization_figures(result, tmp_path, label="cascading", model=mlp, samples=2)
    assert [_parse_figure_name(p.stem) for p in paths] == [("randomization", "cascading", "maps"),
                                                           ("randomization", "cascading", "similarity curves")]
    for p in paths:
        img = matplotlib.image.imread(p)
        assert img.shape[0] > 200 and img.shape[1] > 200 and float(img[..., :3].std()) > 0.05


def test_inputs_of_any_channel_count_are_drawn():
    assert F._input_rgba(torch.rand(3, 5, 4)).shape == (5, 4, 4)  # colours kept
    assert F._input_rgba(torch.rand(2, 5, 4)).shape == (5, 4, 4)  # the channels' mean, in grey
    assert F._input_rgba(torch.rand(1, 5, 4)).shape == (5, 4, 4)
