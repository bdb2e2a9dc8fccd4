"""Twins of models that standardize their own input (issue 17): the shift or contrast change, given in pixel space,
reaches the first convolution through the Normalize module as another affine map, and the twin absorbs it exactly."""

from __future__ import annotations

import pytest
import torch

from bench.core.models import create_model
from bench.twins.build import Affine, affine_twin, check_twin

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as timm's pretrained models use


@pytest.mark.parametrize("name", ["timm:resnet18", "small_cnn"])
@pytest.mark.parametrize("transform", ["mean_shift", "checkerboard", "contrast"])
def test_the_twin_of_a_normalized_model_is_exact(name, transform):
    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = create_model(name, shape, 5, normalize=(MEAN, STD)).double().eval()
    x = torch.rand(4, *shape, dtype=torch.float64)
    if transform == "mean_shift":
        t = Affine.of(torch.tensor(-1.0, dtype=torch.float64), shape, dtype=torch.float64)
    elif transform == "checkerboard":
        board = ((torch.arange(32)[:, None] // 4 + torch.arange(32)[None] // 4) % 2).to(torch.float64)
        t = Affine.of(board.expand(shape).contiguous(), shape, dtype=torch.float64)
    else:
        t = Affine(torch.full(shape, 0.5, dtype=torch.float64), torch.full(shape, 0.25, dtype=torch.float64))
    twin = affine_twin(model, t, example=x[:2])
    assert check_twin(model, twin, x, t, rtol=1e-10) <= 1e-10
    with torch.no_grad():
        assert not torch.allclose(model(t.apply(x)), model(x))  # the transform does change the plain model's output


def test_the_normalized_model_is_the_plain_net_on_standardized_pixels():
    torch.manual_seed(0)
    model = create_model("small_cnn", (3, 16, 16), 4, normalize=(MEAN, STD)).eval()
    x = torch.rand(2, 3, 16, 16)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    plain = torch.nn.Sequential(*[m for n, m in model.named_children() if n != "input_normalize"])
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain((x - mean) / std))
