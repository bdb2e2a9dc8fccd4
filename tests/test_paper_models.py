"""The sanity-checks authors' MNIST networks as presets (bench.core.paper_models): their architecture, their
initialization (reproduced by the harness's seeded initialization), their recipe in the preset's config, and (slow)
training above the quality guard on the bundled digits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import bench.core.paper_models as pm
from bench.core.models import create_model
from bench.core.training import _seeded_init


def _layers(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def test_the_cnn_is_the_authors_lenet():
    model = create_model("adebayo_cnn", (1, 28, 28), 10)
    convs, dense = _layers(model, nn.Conv2d), _layers(model, nn.Linear)
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 32, (5, 5), (2, 2)), (32, 64, (5, 5), (2, 2))]  # 'SAME' padding of a 5x5 kernel
    assert [(d.in_features, d.out_features) for d in dense] == [(7 * 7 * 64, 1024), (1024, 10)]
    assert len(_layers(model, nn.MaxPool2d)) == 2 and len(_layers(model, nn.ReLU)) == 3
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_the_mlp_is_the_authors_three_hidden_layers():
    model = create_model("adebayo_mlp", (1, 28, 28), 10)
    assert [(d.in_features, d.out_features) for d in _layers(model, nn.Linear)] == [
        (784, 2500), (2500, 1500), (1500, 500), (500, 10)]
    assert len(_layers(model, nn.ReLU)) == 3


@pytest.mark.parametrize("name", ["adebayo_cnn", "adebayo_mlp"])
def test_the_seeded_initialization_draws_the_authors_truncated_normals(name):
    model = create_model(name, (1, 28, 28), 10)
    _seeded_init(model, 0)  # what training starts from
    for layer in _layers(model, nn.Linear) + _layers(model, nn.Conv2d):
        w = layer.weight.detach()
        std = 0.1 if name == "adebayo_cnn" else 2 / math.sqrt(layer.weight[0].numel())
        assert float(w.abs().max()) <= 2 * std + 1e-6  # truncated at two standard deviations
        # a normal truncated at +-2 sd keeps 0.880 of its standard deviation
        assert float(w.std()) == pytest.approx(0.880 * std, rel=0.1 if w.numel() > 5000 else 0.3)
        assert torch.all(layer.bias == (0.1 if name == "adebayo_cnn" else 0.0))
    again = create_model(name, (1, 28, 28), 10)
    _seeded_init(again, 0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize("name", ["adebayo_cnn", "adebayo_mlp"])
def test_the_preset_carries_the_authors_recipe(salbench, tmp_path, name):
    res = salbench("--cfg", "job", f"model={name}", cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    for line in (f"name: {name}", "optimizer: adam", "lr: 0.0001", "batch_size: 50", "epochs: 10"):
        assert line in res.stdout, (line, res.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adebayo_mlp", "adebayo_cnn"])
def test_the_presets_train_above_the_guard_with_the_authors_recipe(mnist, name):
    from bench.core.training import default_min_test_acc, load_or_train

    model, info = load_or_train(name, mnist, pm.adebayo_train(), progress=False)
    assert info["test_acc"] >= max(default_min_test_acc(mnist), 0.9), info
