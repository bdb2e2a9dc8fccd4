"""Randomization figures label their stages by the model's own layer names (``fc2 (3)`` for an ``nn.Sequential``'s
layer, a named module's name and class), not bare module indices."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.core.results import CONTROL_REPEAT, concat, score_rows
from bench.reporting import figures


def test_stage_labels_name_the_unit_and_its_class():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert figures.stage_labels(["3", "1"], mlp) == {"3": "fc2 (3)", "1": "fc1 (1)"}
    assert figures.stage_labels(["3"], mlp, sep="\n") == {"3": "fc2\n(3)"}
    assert figures.stage_labels(["3", "1", "permuted_labels"]) == {"3": "module 3", "1": "module 1",
                                                                 "permuted_labels": "permuted labels"}

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
            self.conv_head_with_a_long_name, self.bn2, self.classifier = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), \
                nn.Linear(2, 2)

    net = Net()
    merged = "conv_head_with_a_long_name+bn2+classifier"
    labels = figures.stage_labels(["features.0", "features.0+features.1", merged, "fc3"], net)
    assert labels["features.0"] == "features.0 Conv2d"
    assert labels["features.0+features.1"] == "features.0+… Conv2d+BatchNorm2d"
    assert labels[merged] == "conv_he…ong_name+… Conv2d+…"  # three classes: the first one and "…"
    assert labels["fc3"] == "fc3"  # not a module of this model: the name alone
    shorten = figures._shorten
    assert shorten("conv_head+bn2+classifier", 24) == "conv_head+bn2+classifier"
    assert shorten("conv_head+bn2+bn3+classifier", 24) == "conv_head+…+classifier"
    assert shorten("blocks.11.attn.qkv.weight_norm", 18) == "…qkv.weight_norm"
    assert all(len(shorten(n, 18)) <= 18 for n in ("a" * 40, "a.b" * 20, "x+" * 20 + "y", "blocks.11"))


def _result() -> SimpleNamespace:
    stages = {CONTROL_REPEAT: [1.0, 1.0], "3": [0.5, 0.4], "1": [0.2, 0.1]}
    table = concat(score_rows({"ssim": torch.tensor(v)}, experiment="model_randomization", model="m", dataset="d",
                              method="gradient", condition="cascading", layer=layer) for layer, v in stages.items())
    maps = [torch.rand(2, 1, 6, 6) for _ in range(3)]
    return SimpleNamespace(mode="cascading", stages=["3", "1"], maps={"gradient": maps}, inputs=torch.rand(2, 1, 6, 6),
                           table=table)


@pytest.mark.parametrize("with_model, grid, ticks", [
    (True, ["input", "trained", "fc2\n(3)", "fc1\n(1)"], ["fc2 (3)", "fc1 (1)"]),
    (False, ["input", "trained", "module 3", "module 1"], ["module 3", "module 1"]),
])
def test_randomization_figures_show_the_labels(tmp_path, monkeypatch, with_model, grid, ticks):
    drawn = []

    def keep(fig, path):  # noqa: ANN001
        drawn.append(fig)
        return tmp_path / path

    monkeypatch.setattr(figures, "_save", keep)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(36, 3), nn.ReLU(), nn.Linear(3, 2))
    figures.randomization_figures(_result(), tmp_path, model=mlp if with_model else None)
    grid_fig, curves_fig = drawn
    titles = [t.get_text() for t in grid_fig.texts if t is not grid_fig._suptitle]  # column titles first
    assert titles[:4] == grid
    bottom = min(curves_fig.axes, key=lambda ax: ax.get_position().y0)  # the stage names under the last row
    assert [t.get_text() for t in bottom.get_xticklabels()] == ticks
